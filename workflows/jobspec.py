"""The job model: one typed definition of a job that every front door is derived from.

A job is a task of the task table (the six, or `story`), its inputs and its options, as a flat
pydantic v2 model (the shape of a `mora batch` line):

    {"task": "text-to-video", "prompt": "a fox", "preset": "tiny", "seed": 1, "num_frames": 7}

`OPTIONS` below is the only place the options are written: name, type, default, bounds, one line
of help, and who may set them. Everything else is derived from it and from the task table
(`mora.workflows.tasks`): `mora.run`'s keyword checks, the command's flags and help, the web
page's fields, batch lines, `mora story`'s options, the chat director's schema, the candidates of
`mora train`, the service's request bodies and the MCP tools' parameters. Adding an option means
adding it here and to the tool that uses it (the tool table names which tools take it).

Who sets an option (`Option.scope`):
- `job`: any caller, per job (seed, sizes, steps, ...).
- `host`: whoever runs the command, page or service (device, output path, LLM config, ...); a
  service or MCP request cannot set these.
- `person`: needs a person at hand (`review`): the command line and the web page only.

Example:
    >>> spec = parse_job({"task": "text-to-video", "prompt": "a fox", "preset": "tiny", "seed": 1})
    >>> spec.inputs(), spec.options()["seed"]
    ({'prompt': 'a fox'}, 1)
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    create_model,
    field_validator,
)

from mora import validation
from mora.config import ATTENTION_BACKENDS, CACHES, DEFAULT_PRESET, PROFILES
from mora.errors import InputError
from mora.limits import BOUNDS, MAX_BEST_OF, MAX_PROMPT_CHARS
from mora.workflows.storyboard import MAX_SHOTS, Transition
from mora.workflows.tasks import FILMS, TASK_TABLE, TASKS, TaskInput

DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
DTYPES = ("auto", "float16", "bfloat16", "float32")


@dataclass(frozen=True)
class Option:
    """One option of a job.

    Args:
        name: the keyword (`num_frames`); the flag is `--num-frames`.
        type: its Python type (None allowed when the default is None).
        default: the value when not given (None: the preset's, or random for seed).
        help: one line for `--help`, the web page, the service's schema and the MCP tool.
        scope: `job`, `host` or `person` (see the module docstring).
        tasks: the tasks that take it (None: every task).
        bounds: pydantic constraints (`ge`, `le`, `pattern`, ...); a number the tools take too holds its
            range from `mora.limits.BOUNDS`, the very dict the tools', the preset's and the LLM's checks read.
        tool: passed to the tools that take it (the tool table), overriding the preset's value.
        metavar: how `--help` shows its value.
        fix: what an error about it tells the user to do (default: derived from the bounds).
        elsewhere: why the other tasks refuse it (`{task}` is filled in); the command line then accepts
            the flag on every task and says this, rather than "unrecognized arguments".
    """

    name: str
    type: Any
    default: Any
    help: str
    scope: str = "job"
    tasks: tuple[str, ...] | None = None
    bounds: dict = field(default_factory=dict)
    tool: bool = False
    metavar: str | None = None
    fix: str | None = None
    elsewhere: str | None = None

    @property
    def kind(self) -> Any:
        """The type without its None: `int | None` -> int; `Literal[...] | None` -> the Literal."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        union = typing.get_origin(self.type) in (typing.Union, types.UnionType)
        return args[0] if union and len(args) == 1 else self.type

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def applies_to(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks


_CRITIC = tuple(t.name for t in TASK_TABLE.values() if t.critic)
_REVIEW = tuple(t.name for t in TASK_TABLE.values() if t.review)

# Every option of a job, once. Order is the order of `--help` and of the web page's fields.
OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("preset", str, DEFAULT_PRESET, "models to use: mora (the paper's; default), ltx, mora-wan, modern, or "
           "tiny, tiny-ltx, tiny-wan, tiny-modern (toy random models: offline, seconds on a CPU, noise output); "
           "`mora presets` lists them with user presets", metavar="NAME"),
    Option("preset_file", str | None, None, "a preset file (TOML, e.g. extends = \"mora\" and the fields to "
           "change); alone it selects that file's preset", scope="host", metavar="PATH.toml"),
    Option("seed", int | None, None, "random seed (default: random, recorded in the manifest)",
           bounds=BOUNDS["seed"], metavar="N"),
    Option("num_frames", int | None, None, "frames per generated segment (SVD), clip (LTX, Wan) or frames to add "
           "(extend); default: the preset's", bounds=BOUNDS["num_frames"], tool=True, metavar="N"),
    Option("width", int | None, None, "width in pixels (default: the preset's)", bounds=BOUNDS["width"], tool=True,
           metavar="W"),
    Option("height", int | None, None, "height in pixels (default: the preset's)", bounds=BOUNDS["height"], tool=True,
           metavar="H"),
    Option("steps", int | None, None, "denoising steps of every model (default: each model's preset value)",
           bounds=BOUNDS["steps"], tool=True, metavar="N"),
    Option("fps", int | None, None, "frame rate of generated videos (extend and connect keep the input's)",
           bounds=BOUNDS["fps"], tool=True, metavar="N"),
    Option("best_of", int, 1, "make N candidates (seeds seed..seed+N-1); critic_agent keeps the best by the score "
           "card (and a vision LLM judge when a config entry is tagged \"vision\")", tasks=_CRITIC,
           bounds=dict(ge=1, le=MAX_BEST_OF), metavar="N"),
    Option("metrics", bool, True, "compute the score card into the manifest"),
    Option("review", bool, False, "approve, regenerate, edit or abort the route's image (the first frame, or the "
           "edited image) before it is animated", scope="person", tasks=_REVIEW,
           elsewhere="{task} animates no image of its own (it continues or joins the given videos), so there is "
           "nothing to review; drop --review"),
    Option("out", str | None, None, "output video (default outputs/<task>-<timestamp>.mp4); the manifest goes to "
           "<stem>.json and intermediate files to <stem>_artifacts/", scope="host", metavar="PATH.mp4"),
    Option("overwrite", bool, False, "replace the earlier job at --out (its video, manifest and artifacts)",
           scope="host"),
    Option("device", str, "auto", "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps", scope="host",
           bounds=dict(pattern=f"^({DEVICE_PATTERN})$"), fix="use auto, cpu, cuda, cuda:N or mps"),
    Option("dtype", Literal[DTYPES], "auto", "auto (fp16/bf16 on a GPU, fp32 on a CPU), float16, bfloat16, float32",
           scope="host"),
    Option("profile", Literal[PROFILES], "balanced", "balanced (default): resident; fast: resident, compiled, step cache; "
           "low-vram: CPU offload; auto: by free GPU memory; paper: the original code's choices (the benchmarks' "
           "baseline; SVD offloaded, its own decode chunks)", scope="host"),
    Option("cache", Literal[CACHES] | None, None, "step cache of the transformer models (LTX, Wan, Qwen-Image; "
           "diffusers' hooks): none, first-block (skips the other blocks while the first one's output barely "
           "changes), taylor (TaylorSeer: predicts attention between full steps), mag (needs ratios calibrated per "
           "model: none ship for these); UNet models (SDXL, SVD, InstructPix2Pix) take none; default: the "
           "profile's (fast: first-block)"),
    Option("cache_threshold", float | None, None, "first-block's threshold: the relative change of the first "
           "block's output under which a step reuses the cache (higher: faster, less exact; default 0.05)",
           bounds=dict(gt=0, le=10), metavar="T"),
    Option("attention", Literal[ATTENTION_BACKENDS], "auto", "attention backend of the transformer models: auto "
           "(default: flash where installed on a CUDA GPU, else sdpa), sdpa (torch's), flash (flash-attn, CUDA), "
           "sage (SageAttention, CUDA, approximate)"),
    Option("gpus", int, 1, "split each clip across N processes, one CUDA GPU each (diffusers' context parallelism, "
           "Ulysses); the command launches them. Routes of LTX, Wan and Qwen-Image models only; not on a CPU "
           "(docs/parallel.md)", scope="host", tasks=TASKS, bounds=dict(ge=1), metavar="N"),
    Option("llm_config", str | list[dict] | None, None, "OAI_CONFIG_LIST file (default: $OAI_CONFIG_LIST or "
           "./OAI_CONFIG_LIST if present; without one, prompts are enhanced deterministically)", scope="host",
           metavar="PATH"),
    Option("adapter", str | None, None, "a trained adapter (mora train's RUN_DIR/adapter): LoRA and modulation "
           "tokens for the agents it trained", scope="host", metavar="DIR"),
    # a film's own options (story)
    Option("shots", int, 3, "number of shots (ignored with --storyboard)", tasks=FILMS,
           bounds=dict(ge=1, le=MAX_SHOTS), metavar="N"),
    Option("shot_seconds", float | None, None, "seconds per shot (default: the preset's video length; within the "
           "preset's range)", tasks=FILMS, bounds=dict(gt=0), metavar="S"),
    Option("storyboard_only", bool, False, "write the storyboard and stop", tasks=FILMS),
    Option("transition", Transition | None, None, "every boundary: a generated transition (connect) "
           "or a hard cut (default: the storyboard's)", tasks=FILMS),
    Option("continuity", Literal["keyframe", "prompt"], "keyframe", "keyframe (default): each shot starts from an "
           "edit of the previous shot's last frame; prompt: style sheet and characters in every prompt, related "
           "seeds", tasks=FILMS),
    Option("resume", bool, False, "reuse the finished shots of an earlier run at --out", tasks=FILMS,
           scope="host"),
)}

JOB_TASKS = tuple(TASK_TABLE)  # every task a job may name: the six and story


def task_inputs(task: str) -> tuple[TaskInput, ...]:
    """The inputs of `task` (the task table's `TaskInput`s)."""
    return TASK_TABLE[task].inputs


def task_options(task: str, scopes: tuple[str, ...] = ("job", "host", "person")) -> list[Option]:
    """The options `task` takes, in `OPTIONS` order, limited to `scopes`."""
    return [o for o in OPTIONS.values() if o.applies_to(task) and o.scope in scopes]


def tool_options() -> tuple[str, ...]:
    """The options passed on to the tools (the tool table says which tool takes which)."""
    return tuple(o.name for o in OPTIONS.values() if o.tool)


class JobSpec(BaseModel):
    """Fields and helpers every task's model shares."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, arbitrary_types_allowed=True)

    if TYPE_CHECKING:  # the fields come from the option table (create_model): type checkers see them as Any
        def __getattr__(self, name: str) -> Any: ...

    def inputs(self) -> dict:
        """The task's inputs that were given."""
        names = {i.name for i in task_inputs(self.task)}
        return {k: v for k, v in self.model_dump().items() if k in names and v is not None}

    def options(self) -> dict:
        """Every option of the task (defaults filled in)."""
        names = {o.name for o in task_options(self.task)}
        return {k: v for k, v in self.model_dump().items() if k in names}


def _input_field(item: Any) -> tuple[Any, Any]:
    extra = {"kind": item.kind}
    if item.kind == "text":
        annotation = str if item.required else str | None
        return annotation, Field(... if item.required else None, min_length=1, max_length=MAX_PROMPT_CHARS,
                                 description=item.help, json_schema_extra=extra)
    if item.kind == "storyboard":  # a file path, or the storyboard itself (a dict) from Python
        return str | dict | None, Field(None, description=item.help, json_schema_extra=extra)
    annotation = str if item.required else str | None
    return annotation, Field(... if item.required else None, min_length=1, description=item.help,
                             json_schema_extra=extra)


# Numbers and switches are taken as they are typed, never converted: "7", 7.0 and true are not the
# seed 7 (pydantic's lax mode would take them), "yes" is not true. A form's text is parsed before.
_STRICT = {bool: StrictBool, int: StrictInt, float: StrictFloat}


def _strict(annotation: Any) -> Any:
    """`annotation` with int, float and bool strict (`int | None` -> `StrictInt | None`)."""
    if annotation in _STRICT:
        return _STRICT[annotation]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and any(a in _STRICT for a in args):
        return functools.reduce(lambda a, b: a | b, (_STRICT.get(a, a) for a in args))
    return annotation


def _option_field(option: Option) -> tuple[Any, Any]:
    kind = _strict(option.type)
    extra = {"scope": option.scope, **({"fix": option.fix} if option.fix else {})}
    return kind, Field(option.default, description=option.help, **option.bounds, json_schema_extra=extra)


def _no_blank(cls, value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty; pass a non-empty value")
    return value


def _no_nul(cls, value: Any) -> Any:
    if isinstance(value, str) and "\0" in value:  # no file system takes it (os calls raise ValueError)
        raise ValueError("holds a NUL character, which no file name has; pass the file's name without it")
    return value


def _no_blank_text(cls, value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty or not text; pass a non-empty description")
    return value


@functools.cache
def job_model(task: str) -> type[JobSpec]:
    """The pydantic model of one task's job (cached; `job_model.cache_clear()` after changing OPTIONS).

    Example:
        >>> job_model("connect").model_json_schema()["required"]
        ['task', 'video_a', 'video_b']
    """
    if task not in JOB_TASKS:
        raise InputError(f"{validation.quote(task)} is not a task; choose one of {', '.join(JOB_TASKS)}", param="task")
    fields: dict[str, Any] = {"task": (Literal[task], Field(task, description="the task"))}
    fields |= {i.name: _input_field(i) for i in task_inputs(task)}
    fields |= {o.name: _option_field(o) for o in task_options(task)}
    name = "".join(part.capitalize() for part in task.split("-")) + "Job"
    texts = [i.name for i in task_inputs(task) if i.kind == "text"]
    strings = [n for n, (annotation, _) in fields.items() if annotation in (str, str | None) and n not in texts]
    files = [i.name for i in task_inputs(task) if i.kind != "text"]
    checks = {"_no_blank_text": (texts, _no_blank_text), "_no_blank": (strings, _no_blank), "_no_nul": (files, _no_nul)}
    validators = {name: field_validator(*names, mode="before")(check)
                  for name, (names, check) in checks.items() if names}
    return create_model(name, __base__=JobSpec, __validators__=validators, **fields)


def spell_flag(name: str) -> str:
    """How the command line names a field: `num_frames` -> `--num-frames` (inputs keep their names).

    The command line's speller of an InputError's field: `e.spelled(spell_flag)`.
    """
    return OPTIONS[name].flag if name in OPTIONS else name


ALL_SCOPES = ("job", "host", "person")


def parse_job(data: dict, *, where: str | None = None, scopes: tuple[str, ...] = ALL_SCOPES,
              door: str = "this job") -> JobSpec:
    """Validate one job (a batch line, `mora.run`'s keywords, a service request) into its task's model.

    Args:
        data: `{"task": ..., inputs..., options...}`; None values mean "not given".
        where: a prefix for the error (`jobs.jsonl:3`).
        scopes: the option scopes this front door accepts (a batch line: job and host, not person).
        door: the front door, for the error when an option is out of its scopes (`a batch line`).

    Raises:
        InputError: the first problem, as `FIELD: VALUE problem; fix` (see `problems` for all), its field
            as `param` (the command line spells it `--num-frames`: `spell_flag`).

    Example:
        >>> parse_job({"task": "extend", "video": "a.mp4", "steps": 0})
        InputError: steps: 0 is out of range; pass a number >= 1
    """
    try:
        return _validate(data, scopes, door)
    except ValidationError as e:
        raise validation.input_error(e, where=where, model=job_model(data["task"])) from None
    except InputError as e:
        raise e.at(where) from None


def job_problems(data: dict, *, where: str | None = None, scopes: tuple[str, ...] = ALL_SCOPES,
                 door: str = "this job") -> list[str]:
    """Every problem of one job, one line each (empty when it is valid)."""
    try:
        _validate(data, scopes, door)
    except ValidationError as e:
        return validation.problems(e, where=where, model=job_model(data["task"]))
    except InputError as e:
        return [str(e.at(where))]
    return []


def _validate(data: Any, scopes: tuple[str, ...], door: str) -> JobSpec:
    if not isinstance(data, dict):
        raise InputError(f"a JSON {type(data).__name__} is not a job; write an object like "
                         '{"task": "text-to-video", "prompt": "a fox"}', param="job")
    task = data.get("task")
    if not isinstance(task, str) or task not in JOB_TASKS:
        raise InputError(f"{validation.quote(task)} is not a task; choose one of {', '.join(JOB_TASKS)}",
                         param="task")
    model = job_model(task)
    given = {k: v for k, v in data.items() if v is not None}
    required = [i.name for i in task_inputs(task) if i.required]
    missing = [name for name in required if name not in given]
    if missing:
        raise InputError(f"missing; {task} needs {' and '.join(required)}", param=missing[0])
    unknown = sorted(set(given) - set(model.model_fields))
    for name in unknown:
        option = OPTIONS.get(name)
        if option is not None and option.elsewhere and task in TASKS:
            raise InputError(option.elsewhere.format(task=task), param=name)
    outside = [n for n in given if n in OPTIONS and OPTIONS[n].scope not in scopes]
    if outside:
        raise InputError(f"{door} cannot set it ({OPTIONS[outside[0]].scope} option: "
                         f"{_SCOPE_WHY[OPTIONS[outside[0]].scope]}); drop it", param=outside[0])
    if unknown:  # name what the task does take (pydantic's extra_forbidden would not)
        takes = [i.name for i in task_inputs(task)]
        elsewhere = [t for t in JOB_TASKS if unknown[0] in job_model(t).model_fields]
        hint = f"it is for {', '.join(elsewhere)}" if elsewhere else f"{task} takes {', '.join(takes)} and the options"
        raise InputError(f"{validation.quote(given[unknown[0]])} is not an input or option of {task}; {hint}",
                         param=unknown[0])
    return model.model_validate(given)


_SCOPE_WHY = {"host": "the command, page or service that runs the job decides it",
              "person": "it needs a person at the terminal or the web page"}


def job_schema(task: str, scopes: tuple[str, ...] = ("job",)) -> dict:
    """The JSON schema of `task`'s job, limited to the options of `scopes` (for the service and MCP).

    Example:
        >>> sorted(job_schema("text-to-video")["properties"])[:3]
        ['best_of', 'height', 'metrics']
    """
    schema = job_model(task).model_json_schema()
    keep = {"task", *(i.name for i in task_inputs(task)), *(o.name for o in task_options(task, scopes))}
    schema["properties"] = {k: v for k, v in schema["properties"].items() if k in keep}
    schema["required"] = [k for k in schema.get("required", []) if k in keep]
    return schema


__all__ = ["JOB_TASKS", "OPTIONS", "JobSpec", "Option", "job_model", "job_problems", "job_schema",
           "parse_job", "spell_flag", "task_inputs", "task_options", "tool_options"]

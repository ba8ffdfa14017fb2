"""`prepare`: every check of a job, once, before anything loads or is written.

Every front door calls it: `mora.run`, `mora story`, `mora batch` (when it reads the jobs file,
with `files=False`, and again as each job starts), the web page, `mora chat`, the candidates of
`mora train`, the service and MCP. It takes a job of the job model (`mora.workflows.jobspec`)
and returns a `Prepared` job: the preset resolved (with its file), the options checked against
the preset's models, the route, the output paths, the LLM config, the adapter. A typo costs no
model load, and a refused job writes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mora import media
from mora.config import Preset, get_preset
from mora.errors import Cancelled, InputError
from mora.limits import BOUNDS, check_options, check_seed, default_added_frames
from mora.tooltable import TOOL_TABLE, video_tool
from mora.workflows.jobspec import JobSpec, job_model, parse_job, task_inputs, tool_options
from mora.workflows.tasks import CRITIC, GATE, MEDIA_KINDS, STORY, TASK_TABLE, Film, Step, route_for

logger = logging.getLogger(__name__)


@dataclass
class Hooks:
    """What a caller gives a job besides data: callbacks and objects made in Python.

    Args:
        review: `(image_path, info) -> decision` at review gates (the job's `review` option turns it on).
        on_step: called with (agent, what it does) as each step starts.
        progress: diffusion step bars.
        preset: a `mora.config.Preset` object to use instead of the job's preset name.
        adapter: an adapter already loaded (`mora.adapters.load_adapter`), instead of the job's folder.
        cancelled: `() -> bool`, asked before each agent step and after each denoising step; True stops
            the job with `mora.errors.Cancelled` (a cancel, a deleted job, Ctrl-C). Keep it cheap.
        launcher: the caller starts the job's `--gpus` processes itself after these checks (the command
            line); otherwise `--gpus N` needs this process to be one of N already (`mora.tools.parallel`).
    """

    review: Callable[[str, dict], Any] | None = None
    on_step: Callable[[str, str], None] | None = None
    progress: bool = True
    preset: Preset | None = None
    adapter: Any = None
    cancelled: Callable[[], bool] | None = None
    launcher: bool = False

    def checked(self) -> Hooks:
        """These hooks with `on_step` asking `cancelled` first: a cancelled job stops before its next agent step."""
        cancelled, on_step = self.cancelled, self.on_step
        if cancelled is None:
            return self

        def checked_step(agent: str, doing: str) -> None:
            if cancelled():
                raise Cancelled(f"cancelled before {agent}")
            if on_step is not None:
                on_step(agent, doing)

        return dataclasses.replace(self, on_step=checked_step)


def throttled(check: Callable[[], bool], interval_s: float) -> Callable[[], bool]:
    """`check`, asked at most once per `interval_s` (its last answer in between); once True, always True.

    For a `Hooks.cancelled` that costs a round trip (a Ray actor): denoising steps can be milliseconds.

    Example:
        >>> cancelled = throttled(lambda: board_says_so(job_id), 0.2)
    """
    last: list[Any] = [float("-inf"), False]  # [time of the last check, its answer]

    def ask() -> bool:
        now = time.monotonic()
        if not last[1] and now - last[0] >= interval_s:
            last[0], last[1] = now, bool(check())
        return last[1]

    return ask


@dataclass
class Prepared:
    """A job checked and ready to run: nothing loaded, nothing written.

    Attributes:
        spec: the job as validated by its model (`spec.device`, `spec.metrics`, ...).
        hooks: the caller's callbacks.
        pinned: the tool options the job pins (None = the preset's), checked against its models.
        route: the steps the route takes, in the order they run (a story's: `film_route`); its agent
            steps are the job's progress lines.
    """

    spec: JobSpec
    hooks: Hooks
    task: str
    inputs: dict
    preset: Preset
    pinned: dict
    seed: int | None
    best_of: int
    route: tuple[Step, ...]
    out: Path
    manifest_path: Path
    artifacts_dir: Path
    config_list: list[dict] | None
    adapter: Any = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def reviewer(self) -> Callable[[str, dict], Any] | None:
        return self.hooks.review if getattr(self.spec, "review", False) else None


@dataclass
class StoryPrepared(Prepared):
    """A story checked and ready to run (`mora story`): the story's own settings on top."""

    story: str | None = None
    shots: int = 3
    shot_seconds: float = 0.0
    storyboard: dict | None = None  # a user's storyboard, validated (None: storyboard_agent writes one)
    storyboard_source: str | None = None
    storyboard_only: bool = False
    transition: str | None = None
    continuity: str = "keyframe"
    resume: bool = False

    @property
    def storyboard_path(self) -> Path:
        return self.out.with_name(f"{self.out.stem}_storyboard.json")

    @property
    def contact_path(self) -> Path:
        return self.out.with_name(f"{self.out.stem}_contact.png")


@dataclass
class RunResult:
    """What `mora.run` made.

    Attributes:
        video_path: the final video (None for a storyboard-only story).
        manifest: the manifest as written beside it.
        manifest_path: `<out stem>.json`.
        artifacts_dir: `<out stem>_artifacts/`, the intermediate images and videos.
    """

    video_path: Path | None
    manifest: dict
    manifest_path: Path
    artifacts_dir: Path



# --- output paths ----------------------------------------------------------------------------------

def default_out(task: str) -> Path:
    """`outputs/<task>-<timestamp>.mp4`, the timestamp to the microsecond, never an existing file."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = Path("outputs") / f"{task}-{stamp}.mp4"
    n = 1
    while path.exists() or path.with_name(f"{path.stem}_artifacts").exists():
        path = Path("outputs") / f"{task}-{stamp}-{n}.mp4"
        n += 1
    return path


def earlier_outputs(path: Path) -> list[Path]:
    """What an earlier job left at `path`: its video, its manifest, a non-empty artifacts folder."""
    artifacts = path.with_name(f"{path.stem}_artifacts")
    found = [p for p in (path, path.with_suffix(".json")) if p.is_file()]
    return found + ([artifacts] if artifacts.is_dir() and any(artifacts.iterdir()) else [])


def output_paths(out: str | Path | None, task: str, overwrite: bool = False) -> tuple[Path, Path, Path]:
    """(video, manifest, artifacts dir) for `--out`; checks it is a usable .mp4 path the job may own.

    One rule for every command: writing over an earlier job's outputs needs `overwrite`.
    """
    path = Path(out).expanduser() if out else default_out(task)
    if path.suffix.lower() != ".mp4":
        raise InputError(f"{str(out)!r} does not end in .mp4; pass a path like outputs/{task}.mp4", param="out")
    if path.is_dir():
        raise InputError(f"{str(out)!r} is a directory; pass a file path ending in .mp4", param="out")
    artifacts = path.with_name(f"{path.stem}_artifacts")
    if artifacts.exists() and not artifacts.is_dir():
        raise InputError(f"{str(artifacts)!r} (the artifacts folder of {str(out)!r}) is a file; move it or "
                         "choose another --out", param="out")
    earlier = earlier_outputs(path)
    if earlier and not overwrite:
        raise InputError(f"{str(path)!r} already has an earlier job's outputs ({str(earlier[-1])!r}); pass "
                         "--overwrite (overwrite=True) to replace that job, or choose another --out", param="out")
    return path, path.with_suffix(".json"), artifacts


# --- inputs ------------------------------------------------------------------------------------------

def check_input_files(task: str, inputs: dict) -> dict:
    """The job's file inputs exist and are readable media of their kind (before any model loads)."""
    kinds = {i.name: i.kind for i in task_inputs(task)}
    clean = dict(inputs)
    for key, value in inputs.items():
        if kinds.get(key) in MEDIA_KINDS:
            media.check_file(value, argument=key, kinds=(kinds[key],))
            clean[key] = str(value)
    return clean


# --- prepare -----------------------------------------------------------------------------------------

def prepare(job: JobSpec | dict, hooks: Hooks | None = None, *, files: bool = True) -> Prepared:
    """Check a job against its task, its preset and the disk; raises InputError, loads and writes nothing.

    Args:
        job: a job of the job model, or its dict (`{"task": ..., inputs..., options...}`).
        hooks: callbacks and Python objects (review, on_step, progress, a Preset, a loaded adapter).
        files: also check the input files, the models' availability, the device and the adapter
            (False: only what can be checked from the text of the job, as `mora batch` does when it
            reads the jobs file; each job is prepared again with files=True when it starts).

    Example:
        >>> p = prepare({"task": "text-to-video", "prompt": "a fox", "preset": "tiny", "seed": 1})
        >>> [s.agent for s in p.route]
        ['prompt_agent', 'text_to_image_agent', 'review', 'image_to_video_agent']
    """
    spec = job if isinstance(job, JobSpec) else parse_job(job)
    hooks = hooks or Hooks()
    preset = hooks.preset or get_preset(spec.preset, spec.preset_file)
    film = TASK_TABLE[spec.task].film
    if film is not None:
        return _prepare_story(spec, hooks, preset, film, files)
    inputs = check_input_files(spec.task, spec.inputs()) if files else spec.inputs()
    best_of = spec.best_of if hasattr(spec, "best_of") else 1
    route = route_for(spec.task, inputs, best_of, preset.capabilities)
    pinned = _pin(spec, preset, tuple(s.tool for s in route if s.tool))
    if getattr(spec, "review", False) and GATE not in route and CRITIC not in route:  # never ignored silently
        raise InputError(f"{spec.task} has no image to review with preset {preset.name} (its route has "
                         "no review gate); drop --review", param="review")
    out, manifest_path, artifacts_dir = output_paths(spec.out, spec.task, spec.overwrite)
    roles = {TOOL_TABLE[s.tool].role for s in route if s.tool}
    config_list, adapter = _host_checks(spec, hooks, preset, roles, files)
    return Prepared(spec=spec, hooks=hooks, task=spec.task, inputs=inputs, preset=preset, pinned=pinned,
                    seed=check_seed(spec.seed) if files else spec.seed, best_of=best_of, route=route, out=out,
                    manifest_path=manifest_path, artifacts_dir=artifacts_dir, config_list=config_list,
                    adapter=adapter)


def _pin(spec: JobSpec, preset: Preset, tools: tuple[str, ...]) -> dict:
    """The tool options the job pins, checked against the models of its video tool (the route's last)."""
    pinned = check_options(preset, {k: getattr(spec, k) for k in tool_options()}, video_tool=video_tool(tools))
    used = {option for tool in tools for option in TOOL_TABLE[tool].options}
    for name in [k for k, v in pinned.items() if v is not None and k not in used]:  # said, never silently dropped
        logger.warning("--%s is ignored by %s: none of its tools takes it (%s)", name.replace("_", "-"), spec.task,
                       ", ".join(dict.fromkeys(tools)))
        pinned[name] = None
    return pinned


def _host_checks(spec: JobSpec, hooks: Hooks, preset: Preset, roles: set, files: bool) -> tuple[Any, Any]:
    """(LLM config list, adapter): the config read, and with `files` the device, models and adapter checked."""
    from mora.agents.llm import load_llm_config
    from mora.tools import parallel, speed  # no torch: cache, backend and --gpus against the route's models

    speed.check_choices(spec.cache, spec.cache_threshold, spec.profile)
    families = {r: preset.spec(r).family for r in sorted(roles)}
    speed.check_route(spec.cache, spec.attention, families, preset.name)
    gpus = getattr(spec, "gpus", 1)  # a film has no --gpus
    parallel.check_route(gpus, families, preset.name)  # diffusers' classes say which have a context-parallel plan
    if gpus > 1 and not hooks.launcher:
        parallel.check_world(gpus)

    config_list = load_llm_config(spec.llm_config)
    adapter = hooks.adapter
    if not files:
        return config_list, adapter
    from mora.tools.runtime import resolve_device
    from mora.tools.weights import check_models

    if spec.device not in ("auto", "cpu") or spec.attention != "auto":  # needs torch, not diffusers: before any model
        speed.check_attention(spec.attention, resolve_device(spec.device))
    if gpus > 1:
        parallel.check_host(gpus, resolve_device(spec.device), llm=bool(config_list), review=getattr(spec, "review", False))
    check_models([m for role in sorted(roles) for m in preset.spec(role).model_ids()], preset.name,
                 loras={r: f for role in sorted(roles) for r, f in preset.spec(role).lora_files().items()})
    if adapter is None and spec.adapter is not None:  # files, sha256 and base models checked before any step
        from mora.adapters.adapter import load_adapter

        adapter = load_adapter(spec.adapter, preset)
    return config_list, adapter


# --- story -------------------------------------------------------------------------------------------

def _frame_rules(preset: Preset, pinned: dict) -> tuple[int, int, int]:
    """(frames of the first segment, frames one extend adds, fps) of a shot on this preset."""
    i2v, ext = preset.spec("image_to_video"), preset.spec("extend")
    n = pinned.get("num_frames") or i2v.settings.num_frames
    add = pinned.get("num_frames") or default_added_frames(ext.settings)  # extend_video's own default
    return n, max(1, add), pinned.get("fps") or i2v.settings.fps


def seconds_range(preset: Preset, pinned: dict) -> tuple[float, float]:
    """(low, high) seconds of a shot: one segment, up to the most chained segments a tool takes."""
    n, add, fps = _frame_rules(preset, pinned)
    most = BOUNDS["segments"]["le"]
    return math.floor(n / fps * 100) / 100, math.floor((n + (most - 1) * add) / fps * 100) / 100


def default_seconds(preset: Preset, pinned: dict) -> float:
    """The preset's own video length (its chained segments), the default seconds per shot."""
    n, add, fps = _frame_rules(preset, pinned)
    return round((n + (preset.spec("image_to_video").settings.segments - 1) * add) / fps, 1)


def shot_seconds(spec: JobSpec, preset: Preset, pinned: dict) -> float:
    """A film job's seconds per shot: its own, else the preset's video length."""
    return spec.shot_seconds if spec.shot_seconds is not None else default_seconds(preset, pinned)


def shot_extends(seconds: float, preset: Preset, pinned: dict) -> int:
    """How many extends make a shot last `seconds` after its first segment."""
    n, add, fps = _frame_rules(preset, pinned)
    return math.ceil((max(n, round(seconds * fps)) - n) / add)


def shot_route(film: Film, k: int, seconds: float, continuity: str, preset: Preset, pinned: dict) -> tuple[Step, ...]:
    """The steps of shot k: its first frame, then the video and extends until it lasts `seconds`."""
    return film.shot(k, shot_extends(seconds, preset, pinned), continuity == "keyframe")


def film_route(film: Film, spec: JobSpec, preset: Preset, pinned: dict, board: dict | None = None,
               written: bool = False) -> tuple[Step, ...]:
    """A film's steps in the order they run: its progress lines, and its shots for the service's work budget.

    Exact when the storyboard is known (`board`; `written`: an earlier run's file is resumed); else
    estimated from `shots` and `shot_seconds`, every boundary a generated transition unless `transition` is cut.

    Example:
        >>> spec = parse_job({"task": "story", "story": "A fox wakes.", "shots": 2, "preset": "tiny"})
        >>> len(film_route(TASK_TABLE["story"].film, spec, get_preset("tiny"), {}))
        6
    """
    writes = spec.storyboard is None and not written  # storyboard_agent writes it (a step of its own)
    if spec.storyboard_only:
        return film.route((), (), False, storyboard=writes)
    estimate = {"seconds": shot_seconds(spec, preset, pinned), "transition": "connect"}
    shots: list[dict] = board["shots"] if board else [estimate] * spec.shots
    joins = [(spec.transition or shot["transition"]) == "connect" for shot in shots[:-1]]
    extends = [shot_extends(shot["seconds"], preset, pinned) for shot in shots]
    return film.route(extends, joins, spec.continuity == "keyframe", storyboard=writes)


def default_route(p: Prepared) -> tuple[Step, ...]:
    """The route of the preset's own job of `p.task` (the work budget's measure): its inputs with every
    option at its default; a film's is its default shots of the preset's own length, storyboard written."""
    film = TASK_TABLE[p.task].film
    if film is None:
        return route_for(p.task, p.inputs, 1, p.preset.capabilities)
    return film_route(film, job_model(p.task).model_construct(), p.preset, {})


def _read_storyboard(path: str | Path, rng: tuple[float, float]) -> dict:
    from mora.workflows.storyboard import validate_storyboard

    p = Path(path).expanduser()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{str(path)!r} does not exist; pass the path of a storyboard JSON file",
                         param="storyboard") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{str(path)!r} is not readable JSON ({e}); fix the file or write a new one "
                         "with --storyboard-only", param="storyboard") from None
    return validate_storyboard(data, seconds_range=rng, source=f"--storyboard {path}")


def _check_resume(spec: JobSpec, out: Path, artifacts: Path) -> None:
    """`--resume` needs an earlier run of this story at `--out` (one rule for every command)."""
    earlier = out.with_name(f"{out.stem}_storyboard.json").is_file() or any(artifacts.glob("shot-*/shot.json"))
    if spec.resume and not earlier:
        raise InputError(f"{str(artifacts)!r} holds no earlier run of this story (no storyboard, no "
                         "finished shot); drop --resume to start it, or pass the --out of the earlier run",
                         param="resume")


def _story_seed(spec: JobSpec, artifacts: Path, files: bool) -> int | None:
    """The story's seed, fixed here as every task's is (a queued or recovered job must not draw a new one):
    the given one, else a resumed run's recorded one (shot 1 runs with the story's seed), else a fresh one."""
    first = artifacts / "shot-01" / "shot.json"
    if spec.seed is None and spec.resume and first.is_file():
        try:
            recorded = json.loads(first.read_text(encoding="utf-8"))["seed"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{str(first)!r} has no readable seed ({e}); pass the earlier run's --seed, "
                             "or drop --resume and pass --overwrite", param="resume") from None
        return check_seed(recorded, f"--resume: {str(first)!r}'s seed")
    return check_seed(spec.seed) if files else spec.seed


def _prepare_story(spec: JobSpec, hooks: Hooks, preset: Preset, film: Film, files: bool) -> StoryPrepared:
    from mora.workflows.storyboard import validate_storyboard

    tools = film.tools(keyframe=spec.continuity == "keyframe")
    pinned = _pin(spec, preset, tools)
    rng = seconds_range(preset, pinned)
    if spec.shot_seconds is not None and not rng[0] <= spec.shot_seconds <= rng[1]:
        raise InputError(f"{spec.shot_seconds!r} is outside preset {preset.name}'s range; pass "
                         f"{rng[0]:g} to {rng[1]:g}", param="shot_seconds")
    seconds = shot_seconds(spec, preset, pinned)
    board, source = None, None
    if isinstance(spec.storyboard, dict):
        board, source = validate_storyboard(spec.storyboard, seconds_range=rng), "dict"
    elif spec.storyboard is not None and files:
        board, source = _read_storyboard(spec.storyboard, rng), spec.storyboard
    if spec.story is None and spec.storyboard is None:
        raise InputError("missing; pass the story text, or --storyboard FILE.json", param="story")
    out, manifest_path, artifacts_dir = output_paths(spec.out, spec.task, spec.overwrite or spec.resume)
    _check_resume(spec, out, artifacts_dir)
    roles = {TOOL_TABLE[t].role for t in tools}
    config_list, adapter = _host_checks(spec, hooks, preset, roles, files and not spec.storyboard_only)
    written = board is None and spec.resume and out.with_name(f"{out.stem}_storyboard.json").is_file()
    route = film_route(film, spec, preset, pinned, board, written)
    return StoryPrepared(spec=spec, hooks=hooks, task=spec.task, inputs=spec.inputs(), preset=preset, pinned=pinned,
                         seed=_story_seed(spec, artifacts_dir, files), best_of=1, route=route, out=out, manifest_path=manifest_path,
                         artifacts_dir=artifacts_dir, config_list=config_list, adapter=adapter, story=spec.story,
                         shots=spec.shots, shot_seconds=float(seconds), storyboard=board, storyboard_source=source,
                         storyboard_only=spec.storyboard_only, transition=spec.transition,
                         continuity=spec.continuity, resume=spec.resume)


def job_from_call(task: str, inputs: dict, options: dict) -> tuple[JobSpec, Hooks]:
    """`mora.run`/`mora.story`'s keywords as (job, hooks): callbacks and Python objects go to the hooks.

    Example:
        >>> spec, hooks = job_from_call("text-to-video", {"prompt": "a fox"}, {"preset": "tiny", "review": print})
        >>> spec.review, hooks.review is print
        (True, True)
    """
    options = dict(options)
    hook_names = ("on_step", "progress", "cancelled")
    hooks = Hooks(**{k: options.pop(k) for k in hook_names if k in options})
    review = options.get("review")
    if callable(review):  # Python gives the reviewer itself; the job only says "review"
        hooks.review, options["review"] = review, True
    if isinstance(options.get("preset"), Preset):
        hooks.preset = options["preset"]
        options["preset"] = hooks.preset.name
    adapter = options.get("adapter")
    if adapter is not None and not isinstance(adapter, (str, Path)):  # a loaded adapter
        hooks.adapter, options["adapter"] = adapter, str(getattr(adapter, "path", "adapter"))
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in {**inputs, **options}.items()}
    return parse_job({"task": task, **data}), hooks


def check_shared_options(shared: dict, what: str = "the shared options") -> None:
    """Options a command gives every job it runs (`mora ui`, `mora mcp`: the preset and host options) are valid.

    Checked once, before serving: the job model's types and bounds, the preset (and its file), the device.

    Raises:
        InputError: the first problem, naming the flag.

    Example:
        >>> check_shared_options({"preset": "tiny", "device": "cpu"})
    """
    from mora.workflows.jobspec import OPTIONS

    spec = parse_job({"task": STORY, "story": f"a check of {what}",
                      **{k: v for k, v in shared.items() if k in OPTIONS}})
    get_preset(spec.preset, spec.preset_file)
    if spec.device not in ("auto", "cpu"):
        from mora.tools.runtime import resolve_device

        resolve_device(spec.device)

"""`mora.chat()`: conversational prompting. A director LLM talks with the user and starts a task
through a `start_task` tool call, validated like any LLM output (`mora.agents.asking.ask`: retried
with the reason, `LLM_ATTEMPTS` requests per turn at most); then the task's route runs.

The director's task list and the `start_task` schema are generated from the task table.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from mora.errors import InputError, LLMError
from mora.workflows.jobspec import OPTIONS, parse_job
from mora.workflows.tasks import INPUT_NAMES, TASK_TABLE, TASKS, director_task_list, input_help

logger = logging.getLogger(__name__)

_PATH_KEYS = tuple(n for n in INPUT_NAMES if any(i.name == n and i.kind != "text"
                                                 for t in TASK_TABLE.values() for i in t.inputs))
DIRECTOR = "director"


def director_options() -> list:
    """The job options the director may choose (per-job ones of the six tasks; the preset is the user's)."""
    return [o for o in OPTIONS.values() if o.scope == "job" and o.name != "preset"
            and (o.tasks is None or set(o.tasks) & set(TASKS))]


@dataclass
class ChatResult:
    """The outcome of `mora.chat`: the task started (if any), its result, and the conversation."""

    task: str | None = None
    inputs: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # the options the director chose (the user's own win)
    result: Any = None  # a RunResult when a task ran
    reply: str | None = None  # the director's last words when no task started
    messages: list[dict] = field(default_factory=list)
    llm: dict = field(default_factory=dict)  # the director's steps, in the manifest's `llm` shape (`llm_record`)


def start_task_function() -> Callable[..., str]:
    """`start_task(task, prompt=None, image=None, ...)` with the typed signature AutoGen turns into the schema."""

    def start_task(**kwargs: Any) -> str:
        return kwargs["task"]  # never executed: the chat loop validates the call and runs the task itself

    params = [inspect.Parameter("task", inspect.Parameter.KEYWORD_ONLY,
                                annotation=Annotated[str, f"One of: {', '.join(TASKS)}"])]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[str | None, input_help(name)]) for name in INPUT_NAMES]
    params += [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[o.kind | None, o.help]) for o in director_options()]
    start_task.__signature__ = inspect.Signature(params, return_annotation=str)
    start_task.__annotations__ = {p.name: p.annotation for p in params} | {"return": str}
    start_task.__doc__ = "Start one Mora task with the user's inputs."
    return start_task


def validate_start_task(args: dict, user_text: str) -> tuple[str, dict, dict]:
    """Check a `start_task` call through the job model: a known task, its inputs and options only,
    and paths the user actually typed. Returns (task, inputs, options chosen)."""
    from mora.workflows.prepare import check_input_files

    task = args.get("task")
    if task not in TASKS:
        raise InputError(f"task: {task!r} is not a task; choose one of {', '.join(TASKS)}")
    allowed = {o.name for o in director_options()}
    given = {k: v for k, v in args.items() if k != "task" and v not in (None, "")}
    if set(given) - allowed - set(INPUT_NAMES):
        extra = sorted(set(given) - allowed - set(INPUT_NAMES))[0]
        raise InputError(f"{extra}: not a start_task argument; use the task's inputs and {', '.join(sorted(allowed))}")
    for key in _PATH_KEYS:
        if key in given and not _typed(str(given[key]), user_text):
            raise InputError(f"{key}: {given[key]!r} was not given by the user; use only paths the user typed")
    spec = parse_job({"task": task, **given})
    inputs = check_input_files(task, spec.inputs())
    return task, inputs, {k: v for k, v in given.items() if k in allowed}


def _typed(path: str, text: str) -> bool:
    """Whether `path` appears in `text` as a whole path, not as a piece of a longer one (the user
    typing `/videos/clip.mp4` does not make `clip.mp4` or `/videos` acceptable)."""
    if not path.strip():
        return False
    pattern = rf"(?<![^\s'\"`(<\[=]){re.escape(path)}(?=$|[\s'\"`)>\],;:!?]|\.(?:$|\s))"
    return re.search(pattern, text) is not None


def _parse_call(call: dict, user_text: str) -> tuple[str, dict, dict]:
    """The task and inputs of the director's tool call; InputError when it is unusable."""
    name = (call.get("function") or {}).get("name")
    if name != "start_task":
        raise InputError(f"tool: {name!r} is unknown; call start_task")
    try:
        args = json.loads(call["function"].get("arguments") or "{}")
    except json.JSONDecodeError as e:
        raise InputError(f"start_task: arguments are not valid JSON ({e.msg})") from None
    if not isinstance(args, dict):
        raise InputError("start_task: arguments must be a JSON object")
    return validate_start_task(args, user_text)


def _director_turn(director: Any, messages: list[dict], user_text: str, config_list: list[dict]) -> Any:
    """One director answer through `mora.agents.asking.ask`: the task it starts (task, inputs, options
    chosen) or its words to the user; an invalid start_task call is retried with its reason."""
    from mora.agents import asking
    from mora.agents.director import ask_director

    def ask_once(retry: asking.Retry | None) -> Any:
        again = [] if retry is None else [{"role": "user", "content": f"That call was invalid: {retry.reason}. "
                                                                      "Try again."}]
        return ask_director(director, [*messages, *again])

    def valid(answer: Any) -> tuple[str, dict, dict] | str:
        calls = answer.get("tool_calls") if isinstance(answer, dict) else None
        if calls:
            return _parse_call(calls[0], user_text)
        return ((answer.get("content") if isinstance(answer, dict) else answer) or "").strip()

    return asking.ask(ask_once, valid, agent=DIRECTOR, config_list=config_list, fallback="the chat ends")


def chat(message: str, *, llm_config: Any = None, ask: Callable[[str], str | None] | None = None, max_turns: int = 8,
         **run_options: Any) -> ChatResult:
    """Talk with the director LLM until it starts a task, then run it.

    Args:
        message: the user's first message.
        llm_config: an OAI_CONFIG_LIST path or list (default: $OAI_CONFIG_LIST, then ./OAI_CONFIG_LIST).
        ask: called with each question of the director; returns the user's answer (None ends the chat).
            Without it the chat ends at the first question, returned in `ChatResult.reply`.
        max_turns: most director answers before giving up.
        **run_options: passed to `mora.run` (preset, out, seed, device, ...); they win over the options
            the director chooses (seed, num_frames, ...: `director_options()`).

    Raises:
        InputError: no LLM is configured (chat needs one), or the config is malformed.
        LLMError: no usable director answer in `LLM_ATTEMPTS` requests (the endpoint failed, or its
            start_task calls were invalid), within one turn (`mora.agents.asking.ask`).

    Example:
        >>> mora.chat("a fox running in snow, as a video", llm_config="OAI_CONFIG_LIST", preset="tiny")
    """
    from mora.agents.director import make_director
    from mora.agents.llm import load_llm_config
    from mora.workflows.manifest import llm_record

    config_list = load_llm_config(llm_config)
    if not config_list:
        raise InputError(
            "--llm-config: chat needs an LLM and none is configured; pass --llm-config PATH or set OAI_CONFIG_LIST "
            "(see OAI_CONFIG_LIST.example), or run a task directly, e.g. mora text-to-video \"a fox\""
        )
    director = make_director(config_list, director_task_list(), start_task_function())
    messages, steps, faults = [{"role": "user", "content": message}], [], []
    user_text = message
    for _ in range(max_turns):
        turn = _director_turn(director, messages, user_text, config_list)
        turn.record(steps, faults)
        if not turn.used:
            what = "the LLM endpoint failed" if turn.endpoint_failed else "the director made no valid start_task call"
            raise LLMError(f"chat: {what} in {turn.tries} tries ({turn.reason})") from None
        if isinstance(turn.value, tuple):
            from mora.workflows.runner import run

            task, inputs, chosen = turn.value
            logger.info("director starts %s with %s %s", task, inputs, chosen)
            options = {**chosen, **{k: v for k, v in run_options.items() if v is not None}}  # the user's win
            return ChatResult(task=task, inputs=inputs, options=chosen, messages=messages,
                              llm=llm_record(config_list, steps, faults),
                              result=run(task, llm_config=config_list, **inputs, **options))
        text = turn.value or ""
        messages.append({"role": "assistant", "content": text})
        reply = ask(text) if ask else None
        if not reply:
            return ChatResult(reply=text, messages=messages, llm=llm_record(config_list, steps, faults))
        messages.append({"role": "user", "content": reply})
        user_text += "\n" + reply
    return ChatResult(reply="(no task started within the turn limit)", messages=messages,
                      llm=llm_record(config_list, steps, faults))

"""`mora.chat()`: conversational prompting. A director LLM talks with the user and starts a task
through a `start_task` tool call, validated like any LLM output; then the task's route runs."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mora.errors import InputError, LLMError
from mora.workflows.routes import TASK_INPUTS, TASKS

logger = logging.getLogger(__name__)

_PATH_KEYS = ("image", "video", "video_a", "video_b")
ATTEMPTS = 3


@dataclass
class ChatResult:
    """The outcome of `mora.chat`: the task started (if any), its result, and the conversation."""

    task: str | None = None
    inputs: dict = field(default_factory=dict)
    result: Any = None  # a RunResult when a task ran
    reply: str | None = None  # the director's last words when no task started
    messages: list[dict] = field(default_factory=list)


def validate_start_task(args: dict, user_text: str) -> tuple[str, dict]:
    """Check a `start_task` call: a known task, its inputs only, and paths the user actually typed."""
    from mora.workflows.runner import validate_inputs

    task = args.get("task")
    if task not in TASKS:
        raise InputError(f"task: {task!r} is not a task; choose one of {', '.join(TASKS)}")
    required, optional = TASK_INPUTS[task]
    inputs = {k: v for k, v in args.items() if k != "task" and v not in (None, "")}
    for key in _PATH_KEYS:
        if key in inputs and not _typed(str(inputs[key]), user_text):
            raise InputError(f"{key}: {inputs[key]!r} was not given by the user; use only paths the user typed")
    return task, validate_inputs(task, inputs)


def _typed(path: str, text: str) -> bool:
    """Whether `path` appears in `text` as a whole path, not as a piece of a longer one (the user
    typing `/videos/clip.mp4` does not make `clip.mp4` or `/videos` acceptable)."""
    if not path.strip():
        return False
    pattern = rf"(?<![^\s'\"`(<\[=]){re.escape(path)}(?=$|[\s'\"`)>\],;:!?]|\.(?:$|\s))"
    return re.search(pattern, text) is not None


def chat(
    message: str,
    *,
    llm_config: Any = None,
    ask: Callable[[str], str | None] | None = None,
    max_turns: int = 8,
    **run_options: Any,
) -> ChatResult:
    """Talk with the director LLM until it starts a task, then run it.

    Args:
        message: the user's first message.
        llm_config: an OAI_CONFIG_LIST path or list (default: $OAI_CONFIG_LIST, then ./OAI_CONFIG_LIST).
        ask: called with each question of the director; returns the user's answer (None ends the chat).
            Without it the chat ends at the first question, returned in `ChatResult.reply`.
        max_turns: most director answers before giving up.
        **run_options: passed to `mora.run` (preset, out, seed, device, ...).

    Raises:
        InputError: no LLM is configured (chat needs one), or the config is malformed.

    Example:
        >>> mora.chat("a fox running in snow, as a video", llm_config="OAI_CONFIG_LIST", preset="tiny")
    """
    from mora.agents.llm import load_llm_config, scrub

    config_list = load_llm_config(llm_config)
    if not config_list:
        raise InputError(
            "--llm-config: chat needs an LLM and none is configured; pass --llm-config PATH or set OAI_CONFIG_LIST "
            "(see OAI_CONFIG_LIST.example), or run a task directly, e.g. mora text-to-video \"a fox\""
        )
    from mora.agents.director import ask_director, make_director

    director = make_director(config_list)
    messages = [{"role": "user", "content": message}]
    user_text = message
    faults = 0
    for _ in range(max_turns):
        try:
            answer = ask_director(director, messages)
        except Exception as e:  # HTTP errors, timeouts
            reason = scrub(f"{type(e).__name__}: {str(e)[:200]}", config_list)  # the text may echo the key
            raise LLMError(f"chat: the LLM endpoint failed ({reason})") from None
        calls = answer.get("tool_calls") if isinstance(answer, dict) else None
        if calls:
            import json

            call = calls[0]
            try:
                if call.get("function", {}).get("name") != "start_task":
                    raise InputError(f"tool: {call.get('function', {}).get('name')!r} is unknown; call start_task")
                args = json.loads(call["function"].get("arguments") or "{}")
                if not isinstance(args, dict):
                    raise InputError("start_task: arguments must be a JSON object")
                task, inputs = validate_start_task(args, user_text)
            except (InputError, json.JSONDecodeError) as e:
                faults += 1
                logger.warning("director's start_task call unusable (%s)", e)
                if faults >= ATTEMPTS:
                    raise LLMError(f"chat: the director made no valid start_task call in {ATTEMPTS} tries ({e})") from e
                messages.append({"role": "user", "content": f"That call was invalid: {e}. Try again."})
                continue
            from mora.workflows.runner import run

            logger.info("director starts %s with %s", task, inputs)
            result = run(task, llm_config=config_list, **inputs, **run_options)
            return ChatResult(task=task, inputs=inputs, result=result, messages=messages)
        text = answer.get("content") if isinstance(answer, dict) else answer
        text = (text or "").strip()
        messages.append({"role": "assistant", "content": text})
        reply = ask(text) if ask else None
        if not reply:
            return ChatResult(reply=text, messages=messages)
        messages.append({"role": "user", "content": reply})
        user_text += "\n" + reply
    return ChatResult(reply="(no task started within the turn limit)", messages=messages)

"""Checking tool calls that come from an LLM: untrusted input, validated before anything runs.

The tool name must be the step's tool; arguments must be a JSON object with known keys of the
right types and ranges; input paths must be this job's inputs or artifacts. Output paths are
never an argument: the tools choose them.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mora.errors import InputError
from mora.limits import check_int, check_text
from mora.tools.toolset import PATH_ARGS, Toolset


class ToolCallFault(Exception):
    """The LLM's answer cannot be used as the step's tool call (the reason is the message)."""


def _param_types(tool: str) -> dict[str, type]:
    hints = typing.get_type_hints(getattr(Toolset, tool), include_extras=False)
    hints.pop("return", None)
    return hints


def _required(tool: str) -> list[str]:
    """Parameters of `tool` without a default: a call that leaves one out cannot run."""
    parameters = inspect.signature(getattr(Toolset, tool)).parameters.values()
    return [p.name for p in parameters if p.name != "self" and p.default is inspect.Parameter.empty]


def extract_call(reply: Any, tool: str) -> tuple[str, dict]:
    """(call id, raw arguments) of the single call of `tool` in an LLM reply."""
    calls = reply.get("tool_calls") if isinstance(reply, dict) else None
    if not calls:
        raise ToolCallFault(f"no tool call in the answer; call `{tool}`")
    if len(calls) != 1:
        raise ToolCallFault(f"{len(calls)} tool calls in one answer; make exactly one call of `{tool}`")
    call = calls[0]
    function = call.get("function") or {}
    name = function.get("name")
    if name != tool:
        raise ToolCallFault(f"unknown or wrong tool {name!r}; this step calls `{tool}`")
    raw = function.get("arguments") or "{}"
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as e:
        raise ToolCallFault(f"arguments are not valid JSON ({e.msg})") from None
    if not isinstance(args, dict):
        raise ToolCallFault("arguments must be a JSON object")
    return call.get("id") or "call", args


def validate_args(tool: str, args: dict, guard: Callable[[str, str], Path], bounds: dict[str, tuple[int, int]]) -> dict:
    """Types, ranges and paths of an LLM's arguments for `tool`; raises ToolCallFault.

    Args:
        tool: the step's tool.
        args: the LLM's arguments (already a dict).
        guard: `(path, argument) -> Path`, raising InputError for a path outside the job.
        bounds: (low, high) per integer argument (`mora.limits.llm_bounds` of the job's preset).

    Example:
        >>> validate_args("extend_video", {"video_path": "a.mp4", "seed": 3}, job.guard, llm_bounds(preset, "extend_video"))
    """
    types, required = _param_types(tool), _required(tool)
    unknown = sorted(set(args) - set(types))
    if unknown:
        raise ToolCallFault(f"unknown argument(s) {unknown} for `{tool}`; allowed: {sorted(types)}")
    clean: dict[str, Any] = {}
    try:
        for key, value in args.items():
            if value is None:
                continue
            if key in PATH_ARGS.get(tool, ()):
                if not isinstance(value, str):
                    raise ToolCallFault(f"{key} must be a path string")
                guard(value, key)
                clean[key] = value
            elif int in typing.get_args(types[key]) or types[key] is int:
                low, high = bounds.get(key, (0, None))
                clean[key] = check_int(value, key, low=low, high=high)
            elif value == "" and key not in required:
                continue  # models often send "" for "none"; the tool's default applies
            else:
                clean[key] = check_text(value, key)
    except InputError as e:
        raise ToolCallFault(str(e)) from None
    for key in required:
        if key not in clean:
            raise ToolCallFault(f"missing required argument {key!r}")
    return clean

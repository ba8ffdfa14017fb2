"""Checking tool calls that come from an LLM: untrusted input, validated before anything runs.

The tool name must be the step's tool; arguments must be a JSON object that validates against the
tool's pydantic model (`args_model`: known keys, types, the preset's bounds as constraints; the
same model is the JSON schema the LLM is sent); input paths (the tool table's `paths`) must be
this job's inputs or artifacts. Output paths are never an argument: the tools choose them.
"""

from __future__ import annotations

import functools
import inspect
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
)

from mora import validation
from mora.errors import InputError, MoraError
from mora.limits import MAX_PROMPT_CHARS, Span
from mora.tools.toolset import Toolset
from mora.tooltable import TOOL_TABLE


class ToolCallFault(MoraError):
    """The LLM's answer cannot be used as the step's tool call (the reason is the message, shown without a type)."""


def _whole_number(value: Any) -> Any:
    """JSON true/false and "5" are not numbers to a tool (pydantic's lax mode would take them)."""
    if isinstance(value, (bool, str)):
        raise ValueError("is not a whole number; pass an integer")
    return value


def _none_if_blank(value: Any) -> Any:
    """Models often send "" for "none" in an optional text: the tool's default applies."""
    return None if isinstance(value, str) and not value.strip() else value


_TEXT = StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PROMPT_CHARS)


def _field(tool: str, parameter: inspect.Parameter, hint: Any, bounds: dict[str, Span]) -> tuple:
    """(type, FieldInfo) of one tool parameter: its description from the signature, bounds as constraints."""
    base, *meta = typing.get_args(hint) if typing.get_origin(hint) is Annotated else (hint,)
    description = next((m for m in meta if isinstance(m, str)), None)
    required = parameter.default is inspect.Parameter.empty
    default = ... if required else parameter.default
    if parameter.name in TOOL_TABLE[tool].paths:  # a path string; the job's guard checks it after the model
        return str, Field(default, description=description, min_length=1)
    if int in typing.get_args(base) or base is int:
        low, high = bounds.get(parameter.name, (0, None))
        number = Annotated[int, Field(ge=low, le=high), BeforeValidator(_whole_number)]
        return (number if required else number | None), Field(default, description=description)
    if required:
        return Annotated[str, _TEXT], Field(default, description=description)
    return Annotated[Annotated[str, _TEXT] | None, BeforeValidator(_none_if_blank)], Field(
        None if default == "" else default, description=description)


@functools.lru_cache(maxsize=64)
def _model(tool: str, bounds: tuple[tuple[str, Span], ...]) -> type[BaseModel]:
    method = getattr(Toolset, tool)
    hints = typing.get_type_hints(method, include_extras=True)
    fields = {p.name: _field(tool, p, hints[p.name], dict(bounds))
              for p in inspect.signature(method).parameters.values() if p.name != "self"}
    return create_model(f"{tool}_arguments", __config__=ConfigDict(extra="forbid"), **fields)


def args_model(tool: str, bounds: dict[str, Span]) -> type[BaseModel]:
    """The pydantic model of an LLM's arguments for `tool`: the schema the LLM sees and the check, in one.

    Built from the Toolset method's signature (names, types, descriptions, defaults), the tool
    table (which arguments are input paths) and `mora.limits.llm_bounds` (integer bounds as
    `ge`/`le` constraints). Extra fields are forbidden.

    Args:
        tool: a tool of `mora.tooltable.TOOL_TABLE`.
        bounds: (low, high) per integer argument (`llm_bounds(preset, tool)`).

    Example:
        >>> args_model("extend_video", llm_bounds(get_preset("tiny"), "extend_video")).model_json_schema()["required"]
        ['video_path']
    """
    return _model(tool, tuple(sorted(bounds.items())))


def llm_function(tool: str, bounds: dict[str, Span]) -> Callable[..., str]:
    """`tool` as an LLM sees it: a function whose signature is `args_model`'s fields, for AutoGen's `register_for_llm`.

    AutoGen builds the JSON schema the LLM is sent from a function's signature; this one's parameters
    carry `args_model`'s types, constraints (the preset's bounds as minimum/maximum), defaults and
    descriptions (as AutoGen's own description marker; a parameter without one is described by its
    name, as AutoGen does). AutoGen's schema has no `additionalProperties: false`; `validate_args`
    refuses unknown keys all the same. The function only describes: the LLM's answer is checked by
    `validate_args` in the agent's reply, and the executor runs the Toolset method.

    Example:
        >>> agent.register_for_llm(name="extend_video", description="Extend a video")(
        ...     llm_function("extend_video", llm_bounds(get_preset("tiny"), "extend_video")))
        >>> agent.llm_config["tools"][0]["function"]["parameters"]["required"]
        ['video_path']
    """
    from autogen.tools.dependency_injection import Field as Description  # what AutoGen's schema builder reads

    def described(**kwargs: Any) -> str:
        raise RuntimeError(f"{tool}: this function describes the tool to an LLM; the executor runs the tool")

    parameters = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                          default=inspect.Parameter.empty if field.is_required() else field.default,
                          annotation=Annotated[(field.annotation, Description(field.description or name),
                                                *field.metadata)])
        for name, field in args_model(tool, bounds).model_fields.items()
    ]
    described.__name__ = described.__qualname__ = tool
    described.__signature__ = inspect.Signature(parameters, return_annotation=str)  # type: ignore[attr-defined]
    described.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": str}
    return described


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


def validate_args(tool: str, args: dict, guard: Callable[[str, str], Path], bounds: dict[str, Span]) -> dict:
    """Types, ranges and paths of an LLM's arguments for `tool` (`args_model`); raises ToolCallFault.

    The fault's text is `mora.validation`'s one line (`FIELD: VALUE PROBLEM; FIX`), also shown to
    the LLM when it is asked again. Arguments left out or None are not in the result: the scripted
    call fills them.

    Args:
        tool: the step's tool.
        args: the LLM's arguments (already a dict).
        guard: `(path, argument) -> Path`, raising InputError for a path outside the job.
        bounds: (low, high) per integer argument (`mora.limits.llm_bounds` of the job's preset).

    Example:
        >>> validate_args("extend_video", {"video_path": "a.mp4", "seed": 3}, job.guard, llm_bounds(preset, "extend_video"))
        {'video_path': 'a.mp4', 'seed': 3}
    """
    model = args_model(tool, bounds)
    try:
        clean = model.model_validate(args).model_dump(exclude_none=True, exclude_unset=True)
        for key in TOOL_TABLE[tool].paths:
            guard(clean[key], key)
    except ValidationError as e:
        raise ToolCallFault(validation.problems(e, model=model)[0]) from None
    except InputError as e:
        raise ToolCallFault(str(e)) from None
    return clean

"""One formatter of pydantic's validation errors, so every validator speaks Mora's one-line shape.

Validators are pydantic v2 models (the job model, preset files, jobs lines, storyboards, LLM
tool-call arguments, training options, the LLM config). Their errors all become
`[WHERE: ]FIELD: VALUE PROBLEM; FIX` lines here, and the first one an `InputError` (exit 2).

A model's own checks (`field_validator`, `model_validator`) raise `ValueError("PROBLEM; FIX")`:
the text after pydantic's "Value error, " prefix is used as it is. A field may name its fix with
`Field(json_schema_extra={"fix": "..."})`; otherwise a fix is derived from the error type and the
field's bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mora.errors import InputError

try:  # pydantic is a dependency; the import is here so a missing install names itself clearly
    from pydantic import BaseModel, ValidationError
except ImportError as e:  # pragma: no cover
    raise ImportError("mora needs pydantic>=2: pip install 'pydantic>=2'") from e

_MISSING = object()
#: How much of a value an error message quotes: a caller's 50 MB prompt is not echoed back whole.
QUOTE_CHARS = 80
# pydantic error type prefix -> what the value should have been
_EXPECTED = (("int", "a whole number"), ("float", "a number"), ("bool", "true or false"), ("string", "text"),
             ("str", "text"), ("list", "a list"), ("dict", "an object"), ("model", "an object"),
             ("literal", "one of the listed values"))


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)` for an error message, cut after `limit` characters (then `...` and the full length).

    Example:
        >>> quote("y" * 5000)[-22:]
        "yyy... (5000 characters)"
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters written out"
    return f"{text[:limit]}... ({size})"


def _field_name(loc: tuple, spell: Callable[[str], str] | None) -> str:
    parts = [str(p) for p in loc]
    if spell and parts and isinstance(loc[0], str):
        parts[0] = spell(loc[0])
    return ".".join(parts) or "value"


def _problem(err: dict, fix: str | None) -> str:
    """`VALUE PROBLEM; FIX` for one of pydantic's error dicts."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input", _MISSING)
    shown = "" if value is _MISSING else f"{quote(value)} "
    if kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error", err["msg"]))
        return f"{shown}{text}" if ";" in text else f"{shown}{text}; {fix or 'fix the value'}"
    if kind == "missing":
        return f"missing; {fix or 'add it'}"
    if kind == "extra_forbidden":
        return f"{shown}is not a known field; {fix or 'remove it or check its spelling'}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = ctx.get("ge", ctx.get("gt", ctx.get("le", ctx.get("lt"))))
        return f"{shown}is out of range; {fix or f'pass a number {sign} {bound}'}"
    if kind == "literal_error" or kind == "enum":
        return f"{shown}is not allowed; {fix or 'use ' + str(ctx.get('expected', 'one of the listed values'))}"
    if kind == "string_pattern_mismatch":
        return f"{shown}is not allowed; {fix or 'match ' + str(ctx.get('pattern'))}"
    if kind in ("string_too_short", "string_too_long", "too_short", "too_long"):
        return f"{shown}{err['msg'].lower()}; {fix or 'change its length'}"
    expect = next((text for prefix, text in _EXPECTED if kind.startswith(prefix)), None)
    if expect is not None:
        return f"{shown}is not {expect}; {fix or 'pass ' + expect}"
    return f"{shown}{err['msg']}; {fix or 'fix the value'}"


def _fix_of(model: type[BaseModel] | None, loc: tuple) -> str | None:
    if model is None or not loc or not isinstance(loc[0], str):
        return None
    info = model.model_fields.get(loc[0])
    extra = info.json_schema_extra if info is not None else None
    return extra.get("fix") if isinstance(extra, dict) else None


def _nested_fix(fixes: dict[str, str] | None, loc: tuple, kind: str) -> str | None:
    if not fixes:
        return None
    if kind == "extra_forbidden":  # an unknown key: the fix is its parent's (`PARENT.*`, `*` at the top)
        parent = next((p for p in reversed(loc[:-1]) if isinstance(p, str)), None)
        return fixes.get(f"{parent}.*" if parent else "*")
    last = next((p for p in reversed(loc) if isinstance(p, str)), None)
    return fixes.get(last) if last else None


def problems(error: ValidationError, *, where: str | None = None, model: type[BaseModel] | None = None,
             spell: Callable[[str], str] | None = None, name: Callable[[tuple], str] | None = None,
             fixes: dict[str, str] | None = None) -> list[str]:
    """Every error of `error` as one `[WHERE: ]FIELD: VALUE PROBLEM; FIX` line.

    Args:
        error: pydantic's ValidationError.
        where: a prefix such as `jobs.jsonl:3` or `--preset-file my.toml`.
        model: the model validated (its fields' `fix` hints are used).
        spell: how a field is named, for a model that is not the job model (the training options' flags);
            without `spell` or `name` an error carries its field as `param` and each front door spells it.
        name: how a whole location is named (e.g. `("shots", 0, "seconds")` -> `shots[0] (shot 1).seconds`);
            it replaces the default dotted name and `spell`.
        fixes: field name (the location's last text part, at any depth) -> its fix, for nested
            models whose fields `model`'s own `fix` hints cannot reach; `PARENT.*` (`*` at the
            top level) is the fix of an unknown key inside PARENT (e.g. "use one of a, b").

    Example:
        >>> problems(exc, where="jobs.jsonl:2")
        ["jobs.jsonl:2: seed: -1 is out of range; pass a number >= 0"]
    """
    return [e.spelled() for e in _errors(error, where, model, spell, name, fixes)]


def _errors(error: ValidationError, where: str | None, model: type[BaseModel] | None,
            spell: Callable[[str], str] | None, name: Callable[[tuple], str] | None,
            fixes: dict[str, str] | None) -> list[InputError]:
    """Each of pydantic's errors as an InputError: about the field at the head of its location
    (`param`), unless the caller names the location itself (`spell`, `name`)."""
    out = []
    for err in error.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        problem = _problem(err, _fix_of(model, loc) or _nested_fix(fixes, loc, err["type"]))
        if name or spell or not loc or not isinstance(loc[0], str):
            field = name(loc) if name else _field_name(loc, spell)
            out.append(InputError(f"{field}: {problem}", where=where))
        else:
            out.append(InputError(problem, param=loc[0], path="".join(f".{p}" for p in loc[1:]), where=where))
    return out


def input_error(error: ValidationError, *, where: str | None = None, model: type[BaseModel] | None = None,
                spell: Callable[[str], str] | None = None, name: Callable[[tuple], str] | None = None,
                fixes: dict[str, str] | None = None) -> InputError:
    """The first problem of `error` as an InputError (exit 2) carrying its field (`param`); see `problems`
    for the arguments."""
    found = _errors(error, where, model, spell, name, fixes)
    if len(found) == 1:
        return found[0]
    first = found[0]
    return InputError(f"{first.detail} (and {len(found) - 1} more)", param=first.param, path=first.path,
                      where=first.where)


def validate(model: type[BaseModel], data: Any, **kwargs: Any) -> BaseModel:
    """`model.model_validate(data)`, its errors as one InputError in Mora's shape."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise input_error(e, model=model, **kwargs) from None

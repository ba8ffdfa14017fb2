"""Job options as command-line flags: one option of the job model -> one argparse flag.

Shared by every parser that takes job options (`mora.cli_parsers` for the tasks, story, batch,
ui, train; `mora.mcp.cli` for `mora mcp`), so none of them lists an option or its help. argparse
only: nothing here imports torch.
"""

from __future__ import annotations

import argparse
import typing
from typing import Any

_OUTPUT_HELP = {"json": "print the manifest (JSON) on stdout", "quiet": "no progress output",
                "verbose": "log what Mora does (model loads, files)", "debug": "show tracebacks and debug logs"}


def number_type(kind: type, what: str):
    """An argparse `type`: `kind(text)`, or a one-line error naming the value and an example."""

    def parse(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}; pass e.g. {kind(1)}") from None

    return parse


def positive_int(text: str) -> int:
    """An argparse `type`: a whole number of at least 1."""
    return _positive(number_type(int, "a whole number")(text), "of at least 1")


def positive_float(text: str) -> float:
    """An argparse `type`: a number above 0."""
    return _positive(number_type(float, "a number")(text), "above 0")


def _positive(value: Any, least: str) -> Any:
    if not value > 0:  # `not >`: NaN is refused too
        raise argparse.ArgumentTypeError(f"{value} must be positive; pass a number {least}")
    return value


def add_option(group: Any, option: Any, *, default: Any = None, hidden: bool = False) -> None:
    """One job option as a flag: its type, choices and help from the job model (default None: not given)."""
    kind = option.kind
    shown = option.default if option.default not in (None, False) else None
    text = argparse.SUPPRESS if hidden else option.help + (f" (default {shown})" if shown is not None and
                                                           f"default {shown}" not in option.help else "")
    kwargs: dict[str, Any] = {"dest": option.name, "default": default, "help": text}
    if kind is bool:
        action = argparse.BooleanOptionalAction if option.default is True else "store_true"
        group.add_argument(option.flag, action=action, **kwargs)
        return
    if typing.get_origin(kind) is typing.Literal:
        kwargs["choices"] = typing.get_args(kind)
    elif kind in (int, float):
        kwargs["type"] = number_type(kind, "a whole number" if kind is int else "a number")
    group.add_argument(option.flag, metavar=option.metavar, **kwargs)


def add_job_options(p: argparse.ArgumentParser, task: str | None, *, scopes: tuple[str, ...] = ("job", "host",
                    "person"), skip: tuple[str, ...] = (), title: str = "common options") -> None:
    """Every option of `task` (None: the options every task takes) as flags, from the job model."""
    from mora.workflows.jobspec import OPTIONS
    from mora.workflows.tasks import TASKS

    g = p.add_argument_group(title)
    for option in OPTIONS.values():
        if option.name in skip or option.scope not in scopes:
            continue
        takes = option.applies_to(task) if task else option.tasks is None
        if takes:
            add_option(g, option)
        elif task in TASKS and option.elsewhere:  # accepted, then refused with the reason
            add_option(g, option, hidden=True)


def output_flags(p: argparse.ArgumentParser, *names: str) -> None:
    g = p.add_argument_group("output")
    for name in names or tuple(_OUTPUT_HELP):
        flags = (f"--{name}", f"-{name[0]}") if name in ("quiet", "verbose") else (f"--{name}",)
        g.add_argument(*flags, action="store_true", help=_OUTPUT_HELP[name])

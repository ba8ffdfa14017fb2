"""Progress on stderr: a tqdm bar on a terminal, a plain line each tenth of the way elsewhere.

Written to a pipe or a log file, tqdm's redraws are `\\r` fragments (`0%| | 0/200`) that never read
as a finished line, and tqdm has no line mode; `Lines` is the few methods of tqdm the training loops
use, as whole lines. The diffusion step bars follow the same rule (`mora.cli._bars`).

Example:
    >>> with bar(200, desc="train", unit="step") as b:
    ...     b.update(1)
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

STEPS = 10  # lines per run off a terminal: one each tenth of the way, and the last


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether progress written to `stream` (stderr) reaches a person's terminal."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class Lines:
    """tqdm's `update`, `set_postfix`, `set_postfix_str` and `close`, as a whole line each tenth of the way."""

    def __init__(self, total: int, *, desc: str, unit: str, initial: int = 0, file: TextIO | None = None):
        self.total, self.desc, self.unit, self.n, self.postfix = total, desc, unit, initial, ""
        self.file = file or sys.stderr
        self._shown = initial * STEPS // max(total, 1)

    def update(self, n: int = 1) -> None:
        self.n += n
        tenth = self.n * STEPS // max(self.total, 1)
        if tenth > self._shown or self.n >= self.total:
            self._shown = tenth
            self._line()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in {**(ordered_dict or {}), **values}.items())

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def _line(self) -> None:
        tail = f" ({self.postfix})" if self.postfix else ""
        # A progress display, not a log record: it goes where tqdm's bar would go (the stream given,
        # stderr by default), shown with the CLI's default WARNING level and silenced by --quiet
        # (progress=False), as the bar is.
        self.file.write(f"{self.desc}: {self.n}/{self.total} {self.unit}s{tail}\n")
        self.file.flush()
        if self.n >= self.total:
            self._shown = STEPS + 1  # the last line once

    def close(self) -> None:
        """Nothing to redraw: every line is already whole."""

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bar(total: int, *, desc: str, unit: str, initial: int = 0) -> Any:
    """A tqdm bar when stderr is a terminal, else `Lines`."""
    if on_terminal():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
    return Lines(total, desc=desc, unit=unit, initial=initial)

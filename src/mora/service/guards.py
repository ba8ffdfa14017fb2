"""The service's rules against a careless or hostile caller that need the job as prepared.

- **Work budget**: a job may cost at most `factor` times the work of its preset's own job, work
  being pixels x frames x denoising steps x candidates (x shots for a story). Without it one
  request (`width` 4096 on tiny) held the worker for minutes.
- **Public paths**: what a response says about a job names no server path: a file of the job's
  folder is `job:<id>/<name>`, any other absolute path only its file name.

docs/serve.md ("Security") states these rules with their defaults.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mora.errors import InputError
from mora.paths import is_inside

WORK_FACTOR = 4.0  # --max-job-work's default: room for a longer or finer clip, not for 1000x one
MAX_QUEUED_PER_KEY = 32  # --max-queued-per-key's default: a busy client's backlog, not a flood
PUBLIC_PREFIX = "job:"  # `job:<id>/<name>`: a file of a job's folder (GET /v1/jobs/<id>/files/<name> serves it)


@dataclass(frozen=True)
class Work:
    """What a job asks of its video model: `pixels x frames x steps x candidates x shots`."""

    width: int
    height: int
    frames: int
    steps: int
    candidates: int = 1
    shots: int = 1

    @property
    def units(self) -> int:
        return self.width * self.height * self.frames * self.steps * self.candidates * self.shots

    def __str__(self) -> str:
        text = f"{self.width}x{self.height} px x {self.frames} frames x {self.steps} steps"
        text += f" x {self.candidates} candidates" if self.candidates > 1 else ""
        return text + (f" x {self.shots} shots" if self.shots > 1 else "")


def job_work(prepared: Any, *, own: bool = False) -> Work:
    """The work of a prepared job (`mora.workflows.prepare.Prepared`), or with `own` of its preset's own job.

    The video model dominates a job's cost, so its settings count: the options the job pins
    (width, height, num_frames, steps), else the preset's settings of the role that makes the video.
    A film's shots are those of its route (`Prepared.route`, the steps its progress counts too).
    """
    from mora.tooltable import TOOL_TABLE, video_tool
    from mora.workflows.prepare import default_route
    from mora.workflows.tasks import TASK_TABLE

    p = prepared
    film = TASK_TABLE[p.task].film
    tools = film.tools() if film else [s.tool for s in p.route if s.tool]
    s = p.preset.spec(TOOL_TABLE[video_tool(tools)].role).settings
    pins = {} if own else {k: v for k, v in p.pinned.items() if v is not None}
    frames = pins.get("num_frames") or s.num_frames * max(1, getattr(s, "segments", 1) or 1)
    shots = film.shots(default_route(p) if own else p.route) if film else 1
    return Work(width=pins.get("width") or s.width, height=pins.get("height") or s.height, frames=frames,
                steps=pins.get("steps") or s.steps, candidates=1 if own else max(1, p.best_of or 1), shots=shots)


def check_work(prepared: Any, factor: float | None) -> None:
    """Refuse a job costing more than `factor` times its preset's own job (None: no budget).

    Raises:
        InputError: over budget, naming both works and the server's factor.

    Example:
        >>> check_work(prepare({"task": "text-to-video", "prompt": "x", "preset": "tiny", "steps": 500}), 4.0)
        Traceback (most recent call last):
        InputError: job work: 96x64 px x 8 frames x 500 steps is 250x ...
    """
    if factor is None:
        return
    work, own = job_work(prepared), job_work(prepared, own=True)
    ratio = work.units / max(1, own.units)
    if ratio > factor:
        shown = f"{ratio:.0f}" if ratio >= 10 else f"{math.ceil(ratio * 10) / 10:g}"
        raise InputError(f"job work: {work} is {shown}x the work of preset {prepared.preset.name}'s own job ({own});"
                         f" this server allows {factor:g}x (its --max-job-work); ask for fewer pixels, frames, steps"
                         " or candidates")


def public(value: Any, job_id: str, folder: Path) -> Any:
    """`value` (a job, a manifest, an event's data) with no server path in it.

    A string under the job's folder becomes `job:<id>/<name>`; any other absolute path its file name.
    Why by value and not by key: manifests and events put paths in many fields, and a rule per field
    would miss the next one added. Whole strings only: a prompt that mentions a path stays as sent.
    """
    if isinstance(value, dict):
        return {k: public(v, job_id, folder) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [public(v, job_id, folder) for v in value]
    if not isinstance(value, str) or not os.path.isabs(value) or "\n" in value:
        return value
    path = Path(value)
    if is_inside(path, folder):  # resolved: `<folder>/../x` is not the job's
        return f"{PUBLIC_PREFIX}{job_id}/{path.resolve().relative_to(folder.resolve()).as_posix()}".rstrip("/")
    return path.name


# an absolute path inside a text: `/a/b` and longer, not `and/or` or `1/2`
_PATH_IN_TEXT = re.compile(r"(?<![\w.~])/(?:[^\s'\"/:]+/)+([^\s'\"/:]*)")


def public_text(text: str | None, job_id: str | None = None, folder: Path | None = None) -> str | None:
    """A message (a job's error, a refusal) with the job's folder as `job:<id>` and any other absolute
    path as its name (`/root/.cache/mora/presets` -> `presets`)."""
    if not text:
        return text
    if folder is not None:
        text = text.replace(str(folder), f"{PUBLIC_PREFIX}{job_id}")
    return _PATH_IN_TEXT.sub(lambda m: m[1] or "/", text)

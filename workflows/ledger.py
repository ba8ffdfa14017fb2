"""A batch's rows: one `BatchRow` per job, rewritten to `<out_dir>/batch.json` after every change."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mora import media

IN_PROCESS = "in-process"  # the worker and mode of a batch run in this process (else `ray`, or a Ray actor)
STATUSES = ("pending", "ok", "failed", "skipped")  # pending: not finished (not started, running or interrupted)


@dataclass
class BatchRow:
    """One row of batch.json.

    Args:
        id, line, task: which job.
        status: `pending` (not finished), `ok`, `failed` or `skipped` (resumed, or stopped by fail-fast).
        error: the one-line error of a failed job.
        note: why a job was skipped or retried.
        seconds: wall time of its last attempt (model loading included on a cold worker).
        worker: `in-process`, or the Ray actor (`ray-N@host:pid`) that ran it.
        video: the output video (set when ok or skipped by resume).
        attempts: how many times it started (2 when its first worker died).
    """

    id: str
    line: int
    task: str
    status: str = "pending"
    error: str | None = None
    note: str | None = None
    seconds: float | None = None
    worker: str | None = None
    video: str | None = None
    attempts: int = 0


@dataclass
class BatchResult:
    """What `mora.batch` did.

    Args:
        jobs: a row per job, in file order.
        path: `<out_dir>/batch.json`, the same rows on disk.
        out_dir: where relative outputs went.
        seconds: wall time of the whole batch.
        mode: `in-process` or `ray`.
        interrupted: stopped by Ctrl-C.
    """

    jobs: list[BatchRow]
    path: Path
    out_dir: Path
    seconds: float = 0.0
    mode: str = IN_PROCESS
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(1 for r in self.jobs if r.status == status)

    @property
    def ok(self) -> bool:
        """True when no job failed and none is left pending."""
        return not self.interrupted and self.count("failed") == 0 and self.count("pending") == 0

    @property
    def exit_code(self) -> int:
        """The `mora batch` exit code: 0 all done, 1 some failed, 130 interrupted."""
        return 130 if self.interrupted else 0 if self.ok else 1

    @property
    def jobs_per_minute(self) -> float:
        done = self.count("ok") + self.count("failed")
        return 60.0 * done / self.seconds if self.seconds > 0 else 0.0


class Ledger:
    """The rows of a batch: updated as jobs finish, each time rewritten to batch.json atomically."""

    def __init__(self, jobs: list[Any], out_dir: Path, mode: str, source: str,
                 progress: bool, on_job: Callable[[BatchRow], None] | None):
        self.rows = {j.id: BatchRow(id=j.id, line=j.line, task=j.task) for j in jobs}
        self.result = BatchResult(jobs=list(self.rows.values()), path=out_dir / "batch.json", out_dir=out_dir,
                                  mode=mode)
        self.source, self.on_job, self.started = source, on_job, time.perf_counter()
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.bar = _progress_bar(len(jobs), progress)

    def start(self, job: Any, worker: str) -> None:
        row = self.rows[job.id]
        row.attempts += 1
        row.worker = worker
        if self.bar is not None:  # the counts as the next job starts (not one job behind)
            self.bar.set_postfix(self.postfix(), refresh=True)

    def postfix(self) -> dict:
        return {s: self.result.count(s) for s in ("ok", "failed", "skipped") if self.result.count(s)}

    def finish(self, job_id: str, **changes: Any) -> BatchRow:
        row = self.rows[job_id]
        for key, value in changes.items():
            setattr(row, key, value)
        self.save()
        if self.bar is not None:
            self.bar.set_postfix(self.postfix(), refresh=False)
            self.bar.update(1)  # refreshes the bar with this job counted
        if self.on_job is not None:
            self.on_job(row)
        return row

    def skip(self, jobs: Any, note: str) -> None:
        """Mark `jobs` skipped, with why (fail-fast)."""
        for job in jobs:
            self.finish(job.id, status="skipped", note=note)

    def save(self) -> None:
        self.result.seconds = round(time.perf_counter() - self.started, 3)
        counts = {s: self.result.count(s) for s in STATUSES}
        media.write_json({"jobs_file": self.source, "out_dir": str(self.result.out_dir), "mode": self.result.mode,
                          "started": self.started_at, "seconds": self.result.seconds,
                          "interrupted": self.result.interrupted, "counts": counts,
                          "jobs": [asdict(r) for r in self.result.jobs]}, self.result.path)

    def close(self) -> BatchResult:
        self.save()
        if self.bar is not None:
            self.bar.close()
        return self.result


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from mora.progress import bar

    return bar(total, unit="job", desc="batch")


def format_summary(result: BatchResult, shown: Callable[[str], str] = str) -> str:
    """A plain-text table of the rows and a totals line (what `mora batch` prints at the end); `shown`
    writes each path (the CLI's: relative to the working directory, as its single commands print them).

    Example:
        >>> print(format_summary(result))
        id  task           status  seconds  worker  video / error
        1   text-to-video  ok          8.2  in-process  /abs/outputs/batch/1.mp4
        1 job: 1 ok, 0 failed, 0 skipped, 0 pending in 8.3 s (7.2 jobs/min); rows in /abs/outputs/batch/batch.json
    """
    header = ("id", "task", "status", "seconds", "worker", "video / error")
    rows = [(r.id, r.task, r.status, "" if r.seconds is None else f"{r.seconds:.1f}", r.worker or "",
             shown(r.video) if r.status in ("ok", "skipped") and r.video else (r.error or r.note or ""))
            for r in result.jobs]
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header) - 1)]

    def fmt(row: tuple) -> str:
        cells = [str(c).rjust(w) if i == 3 else str(c).ljust(w) for i, (c, w) in enumerate(zip(row[:-1], widths, strict=True))]
        return "  ".join([*cells, str(row[-1])]).rstrip()

    n = len(result.jobs)
    counts = ", ".join(f"{result.count(s)} {s}" for s in ("ok", "failed", "skipped", "pending"))
    total = (f"{n} job{'s' if n != 1 else ''}: {counts} in {result.seconds:.1f} s "
             f"({result.jobs_per_minute:.1f} jobs/min); rows in {shown(str(result.path))}")
    if result.interrupted:
        total += "; interrupted (run again with --resume to finish)"
    return "\n".join([fmt(header), *map(fmt, rows), total])




def worker_name(prefix: str) -> str:
    """`prefix@host:pid`: where a job ran, for the batch.json row."""
    return f"{prefix}@{socket.gethostname()}:{os.getpid()}"

"""`mora.batch()`: many jobs with warm models, in this process or across GPUs and machines on Ray.

A batch is a list of jobs of the job model (a JSON Lines file, one job a line, or a list of dicts;
`mora.workflows.jobs_file`). The whole list is checked before anything runs; input files are
checked when each job starts, so a missing input fails that job alone.

Without Ray, jobs run in order in this process: `mora.tools.runtime` caches pipelines
process-wide, so the second job of a preset loads nothing. With Ray, each actor is such a
process (one per GPU, or N CPU actors); idle actors take the next job. There is no scheduler
here beyond a `ray.wait` loop: Ray places the actors, this module only hands out jobs and retries
the job of an actor that died, once, on another actor.

After every job `<out_dir>/batch.json` is rewritten atomically (a row per job, `ledger.py`), so a
crash or a Ctrl-C loses nothing. One rule with every command: `resume=True` skips the jobs an
earlier run finished (and needs that run's batch.json); writing over earlier outputs needs
`overwrite=True`. The Ray pool is `ray_pool.py`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mora.errors import InputError
from mora.workflows.jobs_file import JobLine, JobsFileError, load_jobs, run_job
from mora.workflows.jobspec import task_inputs
from mora.workflows.ledger import IN_PROCESS, BatchResult, BatchRow, Ledger, format_summary
from mora.workflows.ray_pool import run_on_ray, with_llm_configs
from mora.workflows.tasks import FILE_KINDS

logger = logging.getLogger(__name__)


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch. `result` holds the rows so far (also in batch.json): finished jobs
    are kept; the others stay `pending` and a run with `resume=True` picks them up."""

    def __init__(self, result: BatchResult):
        super().__init__("batch interrupted")
        self.result = result



def finished_video(job: JobLine) -> str | None:
    """The job's video when an earlier run finished it: its manifest exists and its task, inputs,
    preset and seed (when the job fixes one) are the job's, and the video is there."""
    try:
        manifest = json.loads(job.manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kinds = {i.name: i.kind for i in task_inputs(job.task)}

    def norm(inputs: Any) -> dict:
        items = inputs.items() if isinstance(inputs, dict) else ()
        return {k: os.path.abspath(v) if kinds.get(k) in FILE_KINDS and isinstance(v, str) else v
                for k, v in items}

    seed = job.options.get("seed")
    same = (manifest.get("task") == job.task and norm(manifest.get("inputs")) == norm(job.inputs)
            and manifest.get("preset") == job.preset and (seed is None or manifest.get("seed") == seed))
    return str(job.out) if same and job.out.is_file() else None



# --- running ---

def _run_here(jobs: list[JobLine], ledger: Ledger, fail_fast: bool) -> None:
    """In order, in this process: the runtime's pipeline cache keeps every model warm across jobs."""
    for i, job in enumerate(jobs):
        ledger.start(job, IN_PROCESS)
        row = ledger.finish(job.id, **run_job(job, IN_PROCESS))
        if fail_fast and row.status == "failed":
            ledger.skip(jobs[i + 1:], f"not run: --fail-fast stopped the batch after job {job.id} failed")
            return


def _skip_finished(jobs: list[JobLine], ledger: Ledger) -> list[JobLine]:
    """`--resume`: mark jobs whose manifest matches as skipped; return the others."""
    todo = []
    for job in jobs:
        video = finished_video(job)
        if video:
            ledger.finish(job.id, status="skipped", video=video, note="finished in an earlier run (manifest matches)")
        else:
            todo.append(job)
    return todo


def _check_workers(ray: Any, workers: Any) -> bool:
    """Whether the batch runs on Ray; `--workers` only makes sense there."""
    use_ray = ray not in (None, False)
    if workers is not None and not use_ray:
        raise InputError(f"--workers: {workers!r} needs --ray; without Ray, jobs run one after another in this "
                         "process (add --ray, or drop --workers)")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"--workers: {workers!r} is not a positive whole number; pass e.g. --workers 2")
    return use_ray


def _out_dir(out_dir: str | os.PathLike, resume: bool) -> Path:
    """The batch's folder, checked: a folder (or nothing yet), and with `resume` an earlier run's."""
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out-dir: {str(out_dir)!r} is a file; pass a folder")
    if resume and not (out / "batch.json").is_file():
        raise InputError(f"--resume: {str(out)!r} holds no batch.json of an earlier run; drop --resume to start "
                         "the batch, or pass the --out-dir of the earlier run")
    return out


def batch(
    jobs: str | os.PathLike | Iterable[dict],
    *,
    out_dir: str | os.PathLike = "outputs/batch",
    workers: int | None = None,
    ray: bool | str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    fail_fast: bool = False,
    progress: bool = True,
    on_job: Callable[[BatchRow], None] | None = None,
    **defaults: Any,
) -> BatchResult:
    """Run many jobs, models kept warm: in this process, or on Ray across GPUs and machines.

    Args:
        jobs: a JSON Lines file or a list of dicts: jobs of the job model plus an optional `id`.
        out_dir: relative `out` paths go here; a job without `out` writes `<out_dir>/<id>.mp4`;
            `<out_dir>/batch.json` gets a row per job after every job.
        workers: with Ray, this many CPU actors (default: one actor per GPU of the cluster).
        ray: None/False: run in this process. True: `ray.init()` (`$RAY_ADDRESS`, else a new local
            instance). A string: the address of a running cluster (`auto`, `HOST:6379`, `ray://HOST:10001`).
        resume: skip the jobs an earlier run of this batch finished (their manifest exists and matches
            task, inputs, preset and seed); needs that run's `<out_dir>/batch.json`.
        overwrite: let jobs write over earlier outputs at their paths (without it, a job whose `out`
            holds an earlier job's outputs is refused with the other bad lines, and nothing runs).
        fail_fast: stop at the first failed job (the rest are marked skipped).
        progress: a progress bar over jobs on stderr.
        on_job: called with each job's row as it finishes.
        **defaults: options for every job (`preset=`, `device=`, ...: `jobs_file.default_options()`).

    Returns:
        BatchResult: the rows; `.exit_code` is 0 when every job succeeded, 1 when some failed.

    Raises:
        JobsFileError: bad jobs (every one listed in `.problems`); nothing ran.
        InputError: bad batch arguments (e.g. `workers` without `ray`), or Ray not installed.
        BatchInterrupted: Ctrl-C; finished jobs are kept and recorded (`.result`).

    Example:
        >>> result = mora.batch([{"task": "text-to-video", "prompt": "a fox", "seed": 1},
        ...                      {"task": "simulate", "prompt": "a village", "seed": 2}],
        ...                     out_dir="outputs/batch", preset="tiny")
        >>> [(r.id, r.status) for r in result.jobs]
        [('1', 'ok'), ('2', 'ok')]
    """
    use_ray = _check_workers(ray, workers)
    out = _out_dir(out_dir, resume)
    checked = load_jobs(jobs, out_dir=out, defaults=defaults, ray=use_ray, overwrite=overwrite or resume)
    if use_ray:
        checked = with_llm_configs(checked)
    out.mkdir(parents=True, exist_ok=True)
    source = str(Path(jobs).absolute()) if isinstance(jobs, (str, os.PathLike)) else None
    ledger = Ledger(checked, out, "ray" if use_ray else IN_PROCESS, source, progress, on_job)
    todo = _skip_finished(checked, ledger) if resume else list(checked)
    ledger.save()
    try:
        if use_ray and todo:
            run_on_ray(todo, ledger, address=None if ray is True else str(ray), workers=workers, fail_fast=fail_fast)
        elif todo:
            _run_here(todo, ledger, fail_fast)
    except KeyboardInterrupt:
        ledger.result.interrupted = True
        raise BatchInterrupted(ledger.close()) from None
    return ledger.close()


__all__ = ["JobLine", "BatchResult", "BatchInterrupted", "BatchRow", "JobsFileError", "batch", "finished_video",
           "format_summary", "load_jobs", "run_job"]

"""The worker: a thread that runs the store's queued jobs one at a time, models kept warm.

The runtime caches pipelines process-wide (`mora.tools.runtime`), so the second job on the same
preset loads nothing: one worker in the server process keeps the GPU busy while the HTTP side
answers at once. Each job runs through `mora.workflows.runner.run_job`, the same path as
`mora run` and `mora batch`; its steps become events (`step`, `progress`), its end `done`,
`failed` or `cancelled`.

Example:
    >>> worker = Worker(store, {"device": "cpu"}).start()
    >>> worker.stop()
"""

from __future__ import annotations

import logging
import shutil
import threading

from mora.errors import MoraError
from mora.service.store import VIDEO_NAME, JobRow, JobStore

logger = logging.getLogger(__name__)


class JobCancelled(MoraError):
    """Raised from a step callback to stop a job that was cancelled or deleted."""


def acting_steps(job: dict) -> int:
    """How many agent steps the job's route takes (the progress denominator; a story's is estimated)."""
    from mora.workflows.prepare import Hooks, prepare, shot_route
    from mora.workflows.tasks import REVIEW

    p = prepare(job, Hooks(progress=False), files=False)
    if p.task != "story":
        return max(1, sum(1 for s in p.route if s.agent != REVIEW))
    shots = len(p.storyboard["shots"]) if p.storyboard else p.shots
    per_shot = sum(len(shot_route(k, p.shot_seconds, p.continuity, p.preset, p.pinned)) for k in range(shots))
    return 1 + per_shot + (shots - 1)  # storyboard_agent, every shot's steps, the transitions at most


def first_line(error: BaseException) -> str:
    """`Type: message` on one line (a job's error)."""
    text = str(error).strip().splitlines()
    return text[0] if isinstance(error, MoraError) and text else f"{type(error).__name__}: {text[0] if text else ''}"


class Worker:
    """Claims queued jobs from `store` and runs them one at a time in a thread.

    Args:
        store: the job store.
        host: the host options every job runs with (preset_file, device, dtype, profile, llm_config,
            adapter); requests cannot set them.
        poll_s: how often to look for work queued by another process (work queued in this process
            wakes the worker at once).

    Example:
        >>> worker = Worker(JobStore("jobs.db", "outputs/serve"), {"device": "cpu"}).start()
    """

    def __init__(self, store: JobStore, host: dict | None = None, *, poll_s: float = 1.0):
        self.store, self.host, self.poll_s = store, dict(host or {}), poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: str | None = None  # the id of the job running now

    def start(self) -> Worker:
        """Start the thread (returns self)."""
        self._thread = threading.Thread(target=self._loop, name="mora-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to stop after its current job; a job still running stays in_progress and
        `JobStore.recover()` queues it again on the next start."""
        self._stop.set()
        self.store._work.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            row = self.store.claim()
            if row is None:
                self.store.wait_for_work(self.poll_s)
                continue
            self.run_one(row)

    def run_one(self, row: JobRow) -> None:
        """Run one claimed job to its end: completed, failed or cancelled (never raises)."""
        from mora.workflows.prepare import Hooks
        from mora.workflows.runner import run_job

        self.current = row.id
        folder = self.store.folder(row.id)
        try:
            job = {**row.job, **self.host, "out": str(folder / VIDEO_NAME), "overwrite": True}
            total = acting_steps(job)
            done = [0]

            def on_step(agent: str, doing: str) -> None:
                if self.store.cancel_requested(row.id):
                    raise JobCancelled(f"job {row.id} was cancelled")
                progress = min(99, round(100 * done[0] / total))
                self.store.step(row.id, f"{agent}: {doing}", progress, {"agent": agent, "doing": doing,
                                                                         "index": done[0]})
                done[0] += 1

            result = run_job(job, Hooks(on_step=on_step, progress=False))
            self.store.complete(row.id, result.manifest, str(result.video_path))
        except JobCancelled:
            self.store.cancelled(row.id)
        # Every error of a job, whatever its type, must end that job as failed and leave the worker
        # running for the next one: this is the one place where a broad except means exactly that.
        except Exception as e:  # noqa: BLE001
            logger.exception("job %s failed", row.id)
            self.store.fail(row.id, first_line(e))
        finally:
            self.current = None
            if self.store.is_deleted(row.id):
                shutil.rmtree(folder, ignore_errors=True)

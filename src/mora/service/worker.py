"""The worker: a thread that runs the store's queued jobs one at a time, models kept warm.

The runtime caches pipelines process-wide (`mora.tools.runtime`), so the second job on the same
preset loads nothing: one worker in the server process keeps the GPU busy while the HTTP side
answers at once. Each job runs through `mora.workflows.runner.run_job`, the same path as
`mora run` and `mora batch`; its steps become events (`step`, `progress`), its end `done`,
`failed` or `cancelled`. A cancelled or deleted job stops within one denoising step (its
`Hooks.cancelled` reads the store's flag, a few microseconds); in a child process, a step that
does not return within `CANCEL_GRACE_S` gets the child killed and a new one started.

Example:
    >>> worker = Worker(store, {"device": "cpu"}).start()
    >>> worker.stop()
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import sys
import threading
import time
from typing import Any

from mora.errors import Cancelled, one_line
from mora.service.store import VIDEO_NAME, JobRow, JobStore

logger = logging.getLogger(__name__)

CANCEL_GRACE_S = 5.0  # a cancelled job's child process has this long to stop at a step, then it is killed
CHILD_POLL_S = 0.2  # how often the parent looks at a running job's cancel flag while its child works


def acting_steps(job: dict) -> int:
    """How many agent steps the job's prepared route takes (the progress denominator; a story's is
    estimated when its storyboard is not known yet: `mora.workflows.prepare.film_route`)."""
    from mora.workflows.prepare import Hooks, prepare
    from mora.workflows.tasks import REVIEW

    p = prepare(job, Hooks(progress=False), files=False)
    return max(1, sum(1 for s in p.route if s.agent != REVIEW))


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

    def __init__(self, store: JobStore, host: dict | None = None, *, poll_s: float = 1.0, process: bool = False):
        self.store, self.host, self.poll_s = store, dict(host or {}), poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: str | None = None  # the id of the job running now
        self.child = ChildProcess(store, self.host) if process else None

    def start(self) -> Worker:
        """Start the thread (returns self); a child process starts now too, importing while the server starts."""
        if self.child is not None:
            self.child.start()
        self._thread = threading.Thread(target=self._loop, name="mora-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to stop after its current job; a job still running stays in_progress and
        `JobStore.recover()` queues it again on the next start."""
        self._stop.set()
        self.store._work.set()
        if self.child is not None:
            self.child.close(timeout)
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
            if self.child is not None:
                self.current = row.id
                self.child.run(row.id)
                self.current = None
            else:
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
                progress = min(99, round(100 * done[0] / total))
                self.store.step(row.id, f"{agent}: {doing}", progress, {"agent": agent, "doing": doing,
                                                                         "index": done[0]})
                done[0] += 1

            # asked before each agent step and after each denoising step (an SQLite read: microseconds)
            cancelled = functools.partial(self.store.cancel_requested, row.id)
            result = run_job(job, Hooks(on_step=on_step, progress=False, cancelled=cancelled))
            # a storyboard-only story makes no video: its row keeps none (not the text "None")
            self.store.complete(row.id, result.manifest, str(result.video_path) if result.video_path else None)
        except Cancelled:
            self.store.cancelled(row.id)
        # Every error of a job, whatever its type, must end that job as failed and leave the worker
        # running for the next one: this is the one place where a broad except means exactly that.
        except Exception as e:  # noqa: BLE001
            logger.exception("job %s failed", row.id)
            self.store.fail(row.id, one_line(e))
        finally:
            self.current = None
            if self.store.is_deleted(row.id):
                shutil.rmtree(folder, ignore_errors=True)


class ChildProcess:
    """Runs jobs in one long-lived child process (models warm there), for `Worker(process=True)`.

    Why: a job on the CPU runs thousands of small Python-level ops; in the server's own process they
    hold the GIL, and every HTTP request then waits its turn at each GIL switch (100 ms and more
    per request with a job running). In a child process the HTTP side answers at once. The child
    writes steps and results to the same SQLite file; it dies with its parent (Linux
    PR_SET_PDEATHSIG, else a watchdog), so a killed server leaves no job running behind it.
    """

    def __init__(self, store: JobStore, host: dict):
        self.store, self.host = store, host
        self._proc: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()  # a close() (server stop) waits for a restart under way (`_kill`)
        self._closed = False

    def start(self) -> None:
        self._closed = False
        if self._proc is None or not self._proc.is_alive():
            self._start()

    def _start(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads and a GPU context
        with self._lock:
            self._conn, theirs = ctx.Pipe()
            self._proc = ctx.Process(target=child_main, args=(str(self.store.db), str(self.store.out_dir), self.host,
                                                              theirs, os.getpid()), name="mora-worker", daemon=True)
            self._proc.start()
            theirs.close()

    def run(self, job_id: str) -> None:
        """Run one claimed job in the child; a child that dies fails the job and is started again.

        The parent never blocks on the child: it polls, and a job cancelled (or deleted) whose child
        has not answered `CANCEL_GRACE_S` later (a step that never returns) gets the child killed,
        ends `cancelled`, and a new child starts at once (warm, as the first one).
        """
        self.start()
        try:
            self._conn.send(job_id)
            stop_by = None
            while not self._conn.poll(CHILD_POLL_S):  # True on an answer, and on EOF (a dead child)
                if stop_by is None and self.store.cancel_requested(job_id):
                    stop_by = time.monotonic() + CANCEL_GRACE_S
                elif stop_by is not None and time.monotonic() >= stop_by:
                    self._kill(job_id)
                    return
            self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._proc.join(5)
            code = self._proc.exitcode
            logger.error("the worker process died (exit code %s) while running %s", code, job_id)
            row = self.store.get(job_id)
            if row is not None and row.status == "in_progress":
                self.store.fail(job_id, f"the worker process died (exit code {code}); submit the job again")
            self._proc = None

    def _kill(self, job_id: str) -> None:
        """The cancelled job's child did not stop in time: kill it, end the job, start a new child."""
        logger.warning("job %s was cancelled but its worker process did not stop within %gs; killing it "
                       "(pid %s) and starting a new one", job_id, CANCEL_GRACE_S, self._proc.pid)
        self._proc.kill()
        self._proc.join(5)
        self._conn.close()
        row = self.store.get(job_id)
        if row is not None and row.status == "in_progress":
            self.store.cancelled(job_id)
        if self.store.is_deleted(job_id):
            shutil.rmtree(self.store.folder(job_id), ignore_errors=True)
        self._proc = None
        if not self._closed:
            self._start()  # warm again before the next job: the new child imports torch and diffusers now

    def close(self, timeout: float | None) -> None:
        with self._lock:
            self._closed = True
            self._close(timeout)

    def _close(self, timeout: float | None) -> None:
        if self._proc is None:
            return
        try:
            self._conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self._proc.join(timeout)
        if self._proc.is_alive():  # still inside a job: it is queued again on the next start
            self._proc.terminate()
            self._proc.join(timeout)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    def watch() -> None:  # elsewhere (and if the parent died before prctl): poll
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def child_main(db: str, out_dir: str, host: dict, conn: Any, parent: int) -> None:
    """The child process: run each job id received on `conn` with an in-process Worker; None stops."""
    _die_with_parent(parent)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    store = JobStore(db, out_dir, host=host)
    worker = Worker(store, host)
    import mora.tools.toolset  # noqa: F401  (torch and diffusers load now, not in the first job)
    import mora.workflows.runner  # noqa: F401
    while (job_id := conn.recv()) is not None:
        row = store.get(job_id)
        if row is not None:
            worker.run_one(row)
        conn.send(job_id)

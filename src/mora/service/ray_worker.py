"""`mora serve --ray`: the store's queued jobs run on a Ray actor pool, models warm in each actor.

The pool is `mora batch --ray`'s (`mora.workflows.ray_pool`): the same actor class, one actor per GPU
of the cluster or `--workers N` CPU actors, the same connection rules. A dispatcher thread in the
server claims a queued job whenever an actor is idle and sends it there; the actor reports each
agent step through a Ray queue, and the dispatcher writes the steps, the progress and the end into
the store, so the APIs and the page see a Ray job as they see a local one. The actors only need the
shared storage (`<out-dir>` and `--inputs-dir` at the same paths), never the SQLite file.

Cancels, dead actors and the LLM config:
- a cancelled (or deleted) running job stops within one denoising step, as with the local worker:
  the dispatcher puts its id on a small board actor (`CancelBoard`), which the job's actor asks
  before each agent step and after denoising steps (at most every `BOARD_POLL_S`: a round trip);
- a job whose actor died (its process or node gone) is queued again once, as a server restart does,
  and a new actor takes the dead one's place; a job whose actor died twice fails;
- the LLM config is read once when the pool starts (`--llm-config`, else `$OAI_CONFIG_LIST`) and
  travels with each job (Ray's object store), since an actor on another node has neither the file
  nor the variable; it is never written into the store.

Example:
    >>> worker = RayWorker(store, {"device": "cpu"}, workers=2).start()
    >>> worker.stop()
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections import deque
from typing import Any

from mora.errors import Cancelled, MoraError, one_line
from mora.service.store import VIDEO_NAME, JobRow, JobStore
from mora.service.worker import acting_steps
from mora.workflows.ray_pool import MAX_ATTEMPTS, BatchWorker, connect, import_ray, pool_shape, worker_env

logger = logging.getLogger(__name__)

BOARD_POLL_S = 0.2  # a job's actor asks the CancelBoard at most this often (a Ray round trip per ask)


class CancelBoard:
    """The ids of running jobs that were cancelled: a small Ray actor that the dispatcher writes and
    the job actors read before each agent step (so they never need the SQLite file)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def add(self, job_id: str) -> None:
        self.ids.add(job_id)

    def discard(self, job_id: str) -> None:
        self.ids.discard(job_id)

    def has(self, job_id: str) -> bool:
        return job_id in self.ids


class ServiceActor(BatchWorker):
    """`mora batch`'s Ray actor, plus one method that runs a job of the service's queue."""

    def run_service(self, job_id: str, job: dict, events: Any, board: Any) -> dict:
        """Run one job here; each agent step goes to `events` (a ray.util.queue.Queue) as it starts.

        Args:
            job_id: the job's id in the store.
            job: the job as `RayWorker.job_for` made it (host options and LLM config included).
            events: where each step goes as `(job_id, agent, what it does)`.
            board: the `CancelBoard` actor, asked before each agent step and between denoising steps:
                a job on it stops there.

        Returns:
            `{"manifest", "video"}`, `{"cancelled": True}` when it stopped at a step because it was
            cancelled, or `{"error": one line}` when the job failed.
        """
        import ray

        from mora.workflows.prepare import Hooks, throttled
        from mora.workflows.runner import run_job

        def on_step(agent: str, doing: str) -> None:
            events.put((job_id, agent, doing))

        cancelled = throttled(lambda: ray.get(board.has.remote(job_id)), BOARD_POLL_S)

        if self.device and job.get("device", "auto") == "auto":  # a CPU actor never takes a GPU Ray did not give
            job = {**job, "device": self.device}
        try:
            result = run_job(job, Hooks(on_step=on_step, progress=False, cancelled=cancelled))
        except Cancelled:
            logger.info("job %s cancelled", job_id)
            return {"cancelled": True}
        # Every error of a job must end that job as failed and keep the actor (its warm models) for the
        # next one: this broad except means exactly that; the error travels back as the job's one line.
        except Exception as e:  # noqa: BLE001
            logger.exception("job %s failed", job_id)
            return {"error": one_line(e)}
        return {"manifest": result.manifest, "video": str(result.video_path) if result.video_path else None}


class RayWorker:
    """The store's jobs on Ray actors: the same interface as `mora.service.worker.Worker`.

    Args:
        store: the job store.
        host: the host options every job runs with.
        address: a Ray cluster address; None: `$RAY_ADDRESS`, else a new local instance (an already
            initialised session, e.g. a test's, is used as it is and left open).
        workers: CPU actors; None: one actor per GPU of the cluster.
        poll_s: how often the dispatcher looks at the queue, the step events, the cancels and the actors.

    Example:
        >>> RayWorker(JobStore("jobs.db", "outputs/serve"), workers=2).start()
    """

    def __init__(self, store: JobStore, host: dict | None = None, *, address: str | None = None,
                 workers: int | None = None, poll_s: float = 0.2):
        self.store, self.host, self.address, self.workers, self.poll_s = store, dict(host or {}), address, workers, poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: str | None = None  # one of the running jobs (the Worker interface)
        self.running: dict[Any, tuple[Any, str, JobRow, int]] = {}  # result ref -> (actor, name, row, steps)
        self._done: dict[str, int] = {}  # job id -> steps reported so far
        self._new: Any = None  # the actor class, as the pool started it (to replace a dead actor)
        self._device: str | None = None
        self._actors: list = []
        self._board: Any = None  # the CancelBoard actor
        self._flagged: set[str] = set()  # running jobs put on the board
        self._llm: tuple[list[dict] | None] | None = None  # (the config list,) once read

    def start(self) -> RayWorker:
        """Read the LLM config, connect to Ray and start the actors (here: Ray wants the main thread),
        then the dispatcher thread.

        Raises:
            InputError: the LLM config is unreadable or malformed, Ray is not installed or the
                cluster cannot be reached.
        """
        self.llm_config()  # a bad file fails the start, before Ray does anything
        ray = import_ray()
        connected = connect(ray, self.address, self.workers)
        try:
            from ray.util.queue import Queue

            count, gpus, self._device = pool_shape(ray, self.workers)
            self._new = ray.remote(ServiceActor).options(num_cpus=1, num_gpus=gpus, max_restarts=0,
                                                         runtime_env={"env_vars": worker_env()})
            self._actors = [(self._new.remote(f"ray-{i + 1}", self._device), f"ray-{i + 1}") for i in range(count)]
            self._board = ray.remote(CancelBoard).options(num_cpus=0, max_restarts=0).remote()
            events = Queue()
        except BaseException:  # the pool did not start: leave no actor and no Ray instance of ours behind
            self._close(ray, connected)
            raise
        logger.info("Ray: %d actor(s), %d GPU each, for the queue", count, gpus)
        self._thread = threading.Thread(target=self._main, args=(ray, connected, events), name="mora-ray-dispatcher",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop dispatching; jobs still running stay in_progress and are queued again on the next start."""
        self._stop.set()
        self.store._work.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def llm_config(self) -> list[dict] | None:
        """The host's LLM config list (`llm_config`, else `$OAI_CONFIG_LIST`), read on the first call only.

        Raises:
            InputError: the file is missing or the config is malformed.
        """
        if self._llm is None:
            from mora.agents.llm import load_llm_config

            self._llm = (load_llm_config(self.host.get("llm_config")),)
        return self._llm[0]

    def job_for(self, row: JobRow) -> dict:
        """The job as an actor runs it: the row's job, the host options, the LLM config read here (an actor
        on another node has neither the file nor `$OAI_CONFIG_LIST`; keys never go into the store) and
        its output in the job's folder."""
        return {**row.job, **self.host, "llm_config": self.llm_config(),
                "out": str(self.store.folder(row.id) / VIDEO_NAME), "overwrite": True}

    def _main(self, ray: Any, connected: bool, events: Any) -> None:
        try:
            self._dispatch(ray, deque(self._actors), events)
        finally:
            self._close(ray, connected)

    def _close(self, ray: Any, connected: bool) -> None:
        for actor, _ in self._actors:  # every actor started, replacements too
            _kill(ray, actor)
        if self._board is not None:
            _kill(ray, self._board)
        if connected:
            ray.shutdown()

    def _dispatch(self, ray: Any, idle: deque, events: Any) -> None:
        """Give each idle actor the next queued job; record steps, cancels and results as they come."""
        while not self._stop.is_set():
            while idle and (row := self.store.claim()) is not None:
                self._send(idle, row, events)
            if not self.running:
                self._steps(events)
                self.store.wait_for_work(self.poll_s)
                continue
            ready, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=self.poll_s)
            self._steps(events)
            self._cancels()
            for ref in ready:
                actor, name, row, _ = self.running.pop(ref)
                idle.append(self._finish(ray, ref, actor, name, row))
            self.current = next(iter(self.running.values()))[2].id if self.running else None

    def _send(self, idle: deque, row: JobRow, events: Any) -> None:
        job = self.job_for(row)
        try:
            total = acting_steps(job)
        except (MoraError, OSError) as e:  # checked at submit; a file gone since then fails the job alone
            self.store.fail(row.id, one_line(e))
            return
        actor, name = idle.popleft()
        self._done[row.id] = 0
        self.running[actor.run_service.remote(row.id, job, events, self._board)] = (actor, name, row, total)
        self.current = row.id

    def _steps(self, events: Any) -> None:
        """The step events the actors sent since the last look, into the store."""
        totals = {row.id: total for _, _, row, total in self.running.values()}
        batch = events.get_nowait_batch(events.qsize()) if events.qsize() else []
        for job_id, agent, doing in batch:
            done = self._done.get(job_id, 0)
            progress = min(99, round(100 * done / totals.get(job_id, max(1, done + 1))))
            self.store.step(job_id, f"{agent}: {doing}", progress, {"agent": agent, "doing": doing, "index": done})
            self._done[job_id] = done + 1

    def _cancels(self) -> None:
        """Running jobs cancelled (or deleted) since the last look go on the board: each stops at its next step."""
        for _, _, row, _ in self.running.values():
            if row.id not in self._flagged and self.store.cancel_requested(row.id):
                self._flagged.add(row.id)
                self._board.add.remote(row.id)

    def _finish(self, ray: Any, ref: Any, actor: Any, name: str, row: JobRow) -> tuple[Any, str]:
        """Record a finished job; returns the actor that is idle now (a new one when it died)."""
        from ray.exceptions import RayActorError, RayError

        self._done.pop(row.id, None)
        died = None
        try:
            outcome = ray.get(ref)
        except RayActorError as e:  # the process or its node is gone: a new actor takes its place
            outcome, died = {}, one_line(e)
            _kill(ray, actor)
            actor = self._new.remote(name, self._device)
            self._actors.append((actor, name))
        except RayError as e:
            outcome = {"error": one_line(e)}
        self._record(row, name, outcome, died)
        if row.id in self._flagged:
            self._flagged.discard(row.id)
            self._board.discard.remote(row.id)
        if self.store.is_deleted(row.id):  # deleted while it ran: its folder goes now that nothing writes there
            shutil.rmtree(self.store.folder(row.id), ignore_errors=True)
        return actor, name

    def _record(self, row: JobRow, name: str, outcome: dict, died: str | None) -> None:
        """The job's end in the store: cancelled, queued again (its actor died once), failed or completed."""
        if outcome.get("cancelled") or self.store.cancel_requested(row.id):  # stopped at a step, or asked too late
            self.store.cancelled(row.id)
        elif died is not None and row.attempts < MAX_ATTEMPTS:
            logger.warning("the Ray worker %s died running job %s (%s); queued again for another worker", name,
                           row.id, died)
            self.store.requeue(row.id)
        elif died is not None:
            self.store.fail(row.id, f"worker: the Ray worker {name} died running this job ({died}), on attempt "
                                    f"{row.attempts}: its worker died twice; check the Ray nodes' logs (memory, "
                                    "GPU) and submit the job again")
        elif "error" in outcome:
            self.store.fail(row.id, outcome["error"])
        else:
            self.store.complete(row.id, outcome["manifest"], outcome["video"])


def _kill(ray: Any, actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except (ray.exceptions.RayError, ValueError):  # already gone: nothing to clean up
        pass

"""The Ray side of `mora batch`: a pool of actors that keep their models warm, one job each at a time.

There is no scheduler here beyond a `ray.wait` loop: Ray places the actors (one per GPU, or N CPU
actors), this module hands out jobs and retries the job of an actor that died, once, on another.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections import deque
from dataclasses import replace
from typing import Any

from mora.errors import InputError, one_line
from mora.workflows.jobs_file import JobLine, run_job
from mora.workflows.ledger import Ledger, worker_name

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a job whose worker dies runs once more, on another worker
# Environment a Ray worker needs to behave like this process (model cache, threads, offline mode).
FORWARDED_ENV = ("MORA_HOME", "OMP_NUM_THREADS", "HF_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT", "TRANSFORMERS_OFFLINE",
                 "HF_HUB_CACHE", "TOKENIZERS_PARALLELISM")
# The logger of the "Token authentication is enabled for this Ray cluster" notice of newer Rays.
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class BatchWorker:
    """The body of a Ray actor: a process that runs jobs one at a time and keeps its models warm.

    Wrapped with `ray.remote` when a batch starts (Ray is an optional extra). Every node needs mora
    installed, and the inputs and the output folder at the same paths (shared storage).

    Args:
        name: `ray-N`, unique within the batch.
        device: `cpu` for CPU actors, so a job's `auto` never takes a GPU Ray did not give the actor.
    """

    def __init__(self, name: str, device: str | None = None):
        self.name = worker_name(name)
        self.device = device

    def run(self, job: JobLine, attempt: int) -> dict:
        """Run one job here (`attempt` counts from 1: a job whose actor died runs again elsewhere)."""
        if self.device and job.options.get("device", "auto") == "auto":
            job = replace(job, options={**job.options, "device": self.device})
        return run_job(job, self.name)


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray: Ray is not installed; install the extra (pip install 'mora[ray]') or run "
                         "without --ray") from None
    return ray


def connect(ray, address: str | None, workers: int | None) -> bool:
    """Join the cluster at `address` (None: `$RAY_ADDRESS`, else a new local instance).

    Returns True when this call connected (so the batch disconnects at the end); a session the
    caller opened already (a notebook, the tests) is used as it is and left open.
    """
    if ray.is_initialized():
        return False
    # Actor logs stay in Ray's log files and dashboard unless debugging: the rows carry the errors.
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": logger.isEnabledFor(logging.DEBUG)}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # A new local instance, Mora's own ("local": never a `ray start` cluster found on this machine).
        # Its start-up lines are noise to a batch user: Ray's INFO lines ("Started a local Ray
        # instance", the new token's path) and its notice that token authentication (Ray's default)
        # is on stay off unless debugging; Ray's other warnings and its errors still show.
        debug = logger.isEnabledFor(logging.DEBUG)
        kwargs.update(address="local", logging_level=logging.INFO if debug else logging.WARNING)
        if not debug:  # RAY_AUTH_MODE, its own switch, is read when ray is imported: too late here
            logging.getLogger(RAY_AUTH_LOGGER).setLevel(logging.ERROR)
        if workers:
            kwargs["num_cpus"] = max(os.cpu_count() or 1, workers)  # a CPU slot per actor
    handler = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise InputError(f"--ray: cannot reach a Ray cluster at {address or os.environ.get('RAY_ADDRESS')!r} "
                         f"({e}); start one with `ray start --head` or pass its address") from None
    # ray.init puts its own SIGTERM handler in place (a native stack dump, then exit): the command's
    # handler (`mora.cli`: a clean stop, rows saved, exit 143) is put back where there was one.
    if callable(handler) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
    return True


def pool_shape(ray, workers: int | None) -> tuple[int, int, str | None]:
    """(actors, GPUs per actor, forced device): one actor per GPU, or `workers` CPU actors."""
    resources = ray.cluster_resources()
    if workers is None:
        gpus = int(resources.get("GPU", 0))
        if gpus:
            return gpus, 1, None
        logger.warning("the Ray cluster has no GPU: running one CPU actor (pass --workers N for more)")
        workers = 1
    cpus = int(resources.get("CPU", 0))
    if 0 < cpus < workers:  # an actor that can never be placed would hold its jobs forever
        logger.warning("--workers %d but the Ray cluster has %d CPUs: starting %d actors", workers, cpus, cpus)
        workers = cpus
    return workers, 0, "cpu"


def with_llm_configs(jobs: list[JobLine]) -> list[JobLine]:
    """The jobs with their LLM config read here: an actor on another node has neither the file nor
    `$OAI_CONFIG_LIST`. Configs travel with the job (Ray's object store), never in batch.json or logs."""
    from mora.agents.llm import load_llm_config

    default = load_llm_config(None)
    return [replace(job, options={**job.options, "llm_config": load_llm_config(job.options["llm_config"])
                                  if "llm_config" in job.options else default})
            for job in jobs]


def worker_env() -> dict[str, str]:
    """The variables every actor gets from this process (model cache, threads, offline mode)."""
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


class _Actors:
    """The batch's actors: started up front, each replaced by a new one when it dies."""

    def __init__(self, ray, count: int, gpus: int, device: str | None):
        self.ray, self.device, self.started = ray, device, 0
        # looked up when the pool starts: a test may swap in a worker class of its own
        self.cls = ray.remote(sys.modules[__name__].BatchWorker).options(num_cpus=1, num_gpus=gpus, max_restarts=0,
                                                   runtime_env={"env_vars": worker_env()})
        self.all: list = []
        self.idle: deque = deque(self.new() for _ in range(count))

    def new(self) -> tuple[Any, str]:
        self.started += 1
        name = f"ray-{self.started}"
        actor = self.cls.remote(name, self.device)
        self.all.append(actor)
        return actor, name

    def replace(self, actor: Any) -> None:
        self.kill(actor)
        self.idle.append(self.new())

    def kill(self, actor: Any) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except (self.ray.exceptions.RayError, ValueError):  # already gone: nothing to clean up
            pass

    def shutdown(self) -> None:
        for actor in self.all:
            self.kill(actor)


def run_on_ray(jobs: list[JobLine], ledger: Ledger, *, address: str | None, workers: int | None,
               fail_fast: bool) -> None:
    """Run `jobs` on Ray actors that keep their models warm; record each row in `ledger`.

    Args:
        jobs: checked jobs (absolute paths, so any node with the shared storage finds them).
        ledger: the batch's rows.
        address: a cluster address, or None for `$RAY_ADDRESS` or a new local instance.
        workers: CPU actors to start; None: one actor per GPU of the cluster.
        fail_fast: stop at the first failed job.
    """
    ray = import_ray()
    connected = connect(ray, address, workers)
    actors = None
    try:
        count, gpus, device = pool_shape(ray, workers)
        logger.info("Ray: %d actor(s), %d GPU each, for %d job(s)", count, gpus, len(jobs))
        actors = _Actors(ray, count, gpus, device)
        _dispatch(ray, actors, jobs, ledger, fail_fast)
    finally:
        if actors is not None:
            actors.shutdown()
        if connected:
            ray.shutdown()


def _dispatch(ray, actors: _Actors, jobs: list[JobLine], ledger: Ledger, fail_fast: bool) -> None:
    """Give each idle actor the next job; `ray.wait` for whichever finishes first."""
    from ray.exceptions import RayActorError, RayError

    queue = deque((job, 1) for job in jobs)
    running: dict[Any, tuple[Any, str, JobLine, int]] = {}  # result ref -> (actor, name, job, attempt)
    while queue or running:
        while queue and actors.idle:
            (actor, name), (job, attempt) = actors.idle.popleft(), queue.popleft()
            ledger.start(job, name)
            running[actor.run.remote(job, attempt)] = (actor, name, job, attempt)
        [ref], _ = ray.wait(list(running), num_returns=1)
        actor, name, job, attempt = running.pop(ref)
        try:
            outcome = ray.get(ref)
            actors.idle.append((actor, name))
        except RayActorError as e:  # the process or its node is gone: a new actor takes its place
            actors.replace(actor)
            reason = one_line(e)
            if attempt < MAX_ATTEMPTS:
                logger.warning("worker %s died running job %s (%s); retrying it on another worker", name, job.id,
                               reason)
                ledger.rows[job.id].note = f"worker {name} died on attempt {attempt}; retried"
                queue.appendleft((job, attempt + 1))
                continue
            outcome = {"status": "failed", "worker": name, "video": None,
                       "error": f"the worker died on each of {attempt} attempts (last {name}: {reason})"}
        except RayError as e:  # the call failed past run_job's own handling; the actor lives on
            actors.idle.append((actor, name))
            outcome = {"status": "failed", "worker": name, "video": None, "error": one_line(e)}
        row = ledger.finish(job.id, **outcome)
        if fail_fast and row.status == "failed":
            rest = [j for j, _ in queue] + [r[2] for r in running.values()]
            ledger.skip(rest, f"not run: --fail-fast stopped the batch after job {job.id} failed")
            return



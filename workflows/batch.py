"""`mora.batch()`: many jobs with warm models, in this process or across GPUs and machines on Ray.

A batch is a list of jobs, each the arguments of one `mora.run` (a JSON Lines file, one job a
line, or a list of dicts). The whole list is checked before anything runs; input files are checked
when each job starts, so a missing input fails that job alone.

Without Ray, jobs run in order in this process: `mora.tools.runtime` caches pipelines
process-wide, so the second job of a preset loads nothing. With Ray, each actor is such a
process (one per GPU, or N CPU actors); idle actors take the next job. There is no scheduler
here beyond a `ray.wait` loop: Ray places the actors, this module only hands out jobs and retries
the job of an actor that died, once, on another actor.

After every job `<out_dir>/batch.json` is rewritten atomically (a row per job), so a crash or a
Ctrl-C loses nothing; `resume=True` skips jobs whose manifest exists and matches the job.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mora import media
from mora.errors import InputError, MoraError

logger = logging.getLogger(__name__)

INPUT_KEYS = ("prompt", "image", "video", "instruction", "video_a", "video_b")
FILE_INPUTS = ("image", "video", "video_a", "video_b")
# What a job line may set besides its task, id and inputs: the options of `mora.run` that are data
# (the callbacks `review` and `on_step`, and `progress`, are the batch's own business).
JOB_OPTIONS = ("preset", "seed", "out", "num_frames", "width", "height", "steps", "fps", "device", "dtype",
               "profile", "llm_config", "best_of", "metrics", "preset_file", "adapter")
STATUSES = ("pending", "ok", "failed", "skipped")  # pending: not finished (not started, running or interrupted)
MAX_ATTEMPTS = 2  # a job whose worker dies runs once more, on another worker
# Test-only hook: `MORA_BATCH_TEST_CRASH=<job id>` makes the Ray actor running that job exit
# (os._exit) on its first attempt, `<job id>:always` on every attempt (several: comma-separated);
# the tests use it to kill an actor mid-job. Never set it otherwise. The in-process runner ignores it.
TEST_CRASH_ENV = "MORA_BATCH_TEST_CRASH"
# Environment a Ray worker needs to behave like this process (model cache, threads, offline mode).
FORWARDED_ENV = ("MORA_HOME", "OMP_NUM_THREADS", "HF_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT", "TRANSFORMERS_OFFLINE",
                 "HF_HUB_CACHE", "TOKENIZERS_PARALLELISM", TEST_CRASH_ENV)
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class JobsFileError(InputError):
    """The jobs file (or list) has bad jobs; nothing ran. `problems` has one line per bad job.

    Example:
        >>> try:
        ...     mora.batch([{"task": "text-to-vidoe", "prompt": "a fox"}], out_dir="out")
        ... except JobsFileError as e:
        ...     e.problems
        ["job 1: task: 'text-to-vidoe' is not a task; choose one of text-to-video, ..."]
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        more = f" (and {len(problems) - 1} more bad jobs)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch. `result` holds the rows so far (also in batch.json): finished jobs
    are kept; the others stay `pending` and a run with `resume=True` picks them up."""

    def __init__(self, result: BatchResult):
        super().__init__("batch interrupted")
        self.result = result


@dataclass(frozen=True)
class BatchJob:
    """One checked job: what `mora.run` gets.

    Args:
        id: the job's name in batch.json (default: its line number).
        line: its line in the jobs file (1-based; the position for a list).
        task: one of the six tasks.
        inputs: prompt / instruction texts and input file paths (made absolute).
        options: `mora.run` options; `out` is always set and absolute.
    """

    id: str
    line: int
    task: str
    inputs: dict
    options: dict

    @property
    def out(self) -> Path:
        return Path(self.options["out"])

    @property
    def manifest_path(self) -> Path:
        return self.out.with_suffix(".json")


@dataclass
class JobRecord:
    """One row of batch.json.

    Args:
        id, line, task: which job.
        status: `pending` (not finished), `ok`, `failed` or `skipped` (resumed, or stopped by fail-fast).
        error: the one-line error of a failed job.
        note: why a job was skipped or retried.
        seconds: wall time of its last attempt (model loading included on a cold worker).
        worker: `local`, or the Ray actor (`ray-N@host:pid`) that ran it.
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
        mode: `local` (in-process) or `ray`.
        interrupted: stopped by Ctrl-C.
    """

    jobs: list[JobRecord]
    path: Path
    out_dir: Path
    seconds: float = 0.0
    mode: str = "local"
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


# --- checking jobs ---------------------------------------------------------------------------------


def validate_job(task: Any, inputs: dict, options: dict) -> tuple[dict, dict]:
    """Check one job's task, inputs and options as `mora.run` will, without loading a model.

    The single place batch validation touches the runner's checks. Input files are only checked to
    be non-empty paths here; `mora.run` opens them when the job starts, so a missing or broken file
    fails that job alone.

    Args:
        task: the task name.
        inputs: `prompt`, `image`, `video`, `instruction`, `video_a`, `video_b` (None = absent).
        options: `mora.run` options (see JOB_OPTIONS); `out` may be absent.

    Returns:
        (inputs, options), cleaned: texts stripped, numbers as ints.

    Raises:
        InputError: the first problem, as `field: value problem; fix`.

    Example:
        >>> validate_job("text-to-video", {"prompt": " a fox "}, {"preset": "tiny", "seed": 1})
        ({'prompt': 'a fox'}, {'preset': 'tiny', 'seed': 1})
    """
    return _check_inputs(task, inputs), _check_options(task, options)


# The two halves of validate_job. Everything batch validation borrows from the runner is in them.


def _check_inputs(task: Any, inputs: dict) -> dict:
    from mora.limits import check_text
    from mora.workflows.tasks import TASK_TABLE, TASKS

    if not isinstance(task, str) or task not in TASK_TABLE:
        raise InputError(f"task: {task!r} is not a task; choose one of {', '.join(TASKS)}")
    required, optional = TASK_TABLE[task].required, TASK_TABLE[task].optional
    given = {k: v for k, v in inputs.items() if v is not None}
    for key, value in given.items():
        if key not in required + optional:
            raise InputError(f"{key}: {value!r} is not an input of {task}; it takes {', '.join(required + optional)}")
    for key in required:
        if key not in given:
            raise InputError(f"{key}: missing; {task} needs {' and '.join(required)}")
    clean = {}
    for key, value in given.items():
        if key not in FILE_INPUTS:
            clean[key] = check_text(value, key)
        elif isinstance(value, str) and value.strip():
            clean[key] = value  # opened when the job starts: a missing file fails that job alone
        else:
            raise InputError(f"{key}: {value!r} is not a file path; pass the path of the input as a string")
    return clean


def _check_options(task: str, options: dict) -> dict:
    from mora.config import get_preset
    from mora.limits import MAX_SEED, check_best_of, check_int, check_options
    from mora.tools.runtime import check_profile
    from mora.workflows import runner
    from mora.workflows.tasks import CRITIC_TASKS

    opts = {k: v for k, v in options.items() if v is not None}
    for key in ("preset", "device", "dtype", "profile", "out", "preset_file", "adapter"):
        if key in opts and not isinstance(opts[key], str):
            raise InputError(f"{key}: {opts[key]!r} is not text; pass a string")
    preset = get_preset(opts.get("preset", "mora"), opts.get("preset_file"))
    sizes = check_options(task, preset, {k: opts.get(k) for k in ("num_frames", "width", "height", "steps", "fps")})
    opts.update({k: v for k, v in sizes.items() if v is not None})
    if "seed" in opts:
        opts["seed"] = check_int(opts["seed"], "seed", low=0, high=MAX_SEED)
    if "best_of" in opts:
        opts["best_of"] = check_best_of(task, opts["best_of"], CRITIC_TASKS)
    if "device" in opts and not _DEVICE_PATTERN.fullmatch(opts["device"]):
        raise InputError(f"device: {opts['device']!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    if "profile" in opts:
        check_profile(opts["profile"])
    if "metrics" in opts and not isinstance(opts["metrics"], bool):
        raise InputError(f"metrics: {opts['metrics']!r} is not true or false; pass true or false")
    if "llm_config" in opts:
        from mora.agents.llm import load_llm_config

        load_llm_config(opts["llm_config"])
    if "out" in opts:
        runner.output_paths(opts["out"], task, overwrite=True)  # the batch owns its outputs
    return opts


def load_jobs(source: str | os.PathLike | Iterable[dict], *, out_dir: str | os.PathLike,
              defaults: dict | None = None, ray: bool = False) -> list[BatchJob]:
    """Read and check every job; report every bad one at once.

    Args:
        source: a JSON Lines file (one job object a line; blank lines are ignored) or a list of dicts.
        out_dir: relative `out` paths go under it; a job without `out` writes `<out_dir>/<id>.mp4`.
        defaults: options for every job (a job's own value wins), e.g. `{"preset": "tiny"}`.
        ray: the jobs will run on Ray (in any order, each actor seeing one GPU as `cuda`).

    Returns:
        The jobs, in order.

    Raises:
        JobsFileError: bad jobs, each as `FILE:LINE: field: problem; fix` (or `job N: ...`).

    Example:
        >>> jobs = load_jobs("jobs.jsonl", out_dir="outputs/batch", defaults={"preset": "tiny"})
        >>> jobs[0].out
        PosixPath('/home/me/outputs/batch/fox.mp4')
    """
    defaults = dict(defaults or {})
    for key in defaults:
        if key not in JOB_OPTIONS or key == "out":
            raise InputError(f"{key}: not an option for every job; defaults take {', '.join(_default_keys())}")
    entries, problems = _read_entries(source)
    if not entries and not problems:
        raise InputError(f"jobs: {_label(source)} has no jobs; write one JSON object per line, e.g. "
                         '{"task": "text-to-video", "prompt": "a fox"}')
    out_root = Path(out_dir).expanduser().absolute()
    jobs: list[BatchJob] = []
    for where, line, entry in entries:
        try:
            jobs.append(_make_job(line, entry, out_root, defaults, ray))
        except InputError as e:
            problems.append(f"{where}: {_as_field(str(e))}")
    problems.extend(_clashes(jobs, out_root, ray, where_of={line: where for where, line, _ in entries}))
    if problems:
        raise JobsFileError(sorted(problems, key=_line_of))
    return jobs


def _default_keys() -> list[str]:
    return [k for k in JOB_OPTIONS if k != "out"]


def _label(source: Any) -> str:
    return repr(str(source)) if isinstance(source, (str, os.PathLike)) else "the job list"


def _read_entries(source: Any) -> tuple[list[tuple[str, int, Any]], list[str]]:
    """(where, line, parsed object) per job, and the lines that are not JSON."""
    if not isinstance(source, (str, os.PathLike)):
        if isinstance(source, dict) or not isinstance(source, Iterable):
            raise InputError(f"jobs: {type(source).__name__} is not a list of jobs; pass a list of dicts or a "
                             ".jsonl path")
        return [(f"job {i}", i, entry) for i, entry in enumerate(source, 1)], []
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(f"jobs: {str(source)!r} is not a file; pass a JSON Lines file with one job per line")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"jobs: {str(source)!r} cannot be read as UTF-8 text ({e}); pass a JSON Lines file") from None
    entries, problems = [], []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        where = f"{path.name}:{n}"
        try:
            entries.append((where, n, json.loads(raw)))
        except json.JSONDecodeError as e:
            problems.append(f"{where}: not valid JSON ({e.msg} at column {e.colno}); write one JSON object per "
                            'line, e.g. {"task": "text-to-video", "prompt": "a fox"}')
    return entries, problems


def _line_of(problem: str) -> int:
    match = re.match(r"(?:job |[^:]*:)(\d+)", problem)
    return int(match.group(1)) if match else 0


def _as_field(message: str) -> str:
    """The runner's messages name command-line flags (`--num-frames: ...`); a job line has fields."""
    return re.sub(r"^--([a-z][a-z-]*):", lambda m: m.group(1).replace("-", "_") + ":", message)


def _make_job(line: int, entry: Any, out_root: Path, defaults: dict, ray: bool) -> BatchJob:
    if not isinstance(entry, dict):
        raise InputError(f"job: a JSON {type(entry).__name__} is not a job; write an object like "
                         '{"task": "text-to-video", "prompt": "a fox"}')
    for key in entry:
        if key not in ("id", "task", *INPUT_KEYS, *JOB_OPTIONS):
            raise InputError(f"{key}: not a job field; use task, id, the inputs ({', '.join(INPUT_KEYS)}) or the "
                             f"options ({', '.join(JOB_OPTIONS)})")
    job_id = _check_id(entry.get("id", line))
    inputs, options = validate_job(entry.get("task"), {k: entry.get(k) for k in INPUT_KEYS},
                                   {**defaults, **{k: entry[k] for k in JOB_OPTIONS if k in entry}})
    if ray and re.fullmatch(r"cuda:\d+", options.get("device", "")):
        raise InputError(f"device: {options['device']!r} with Ray: each actor sees only its own GPU; use cuda or auto")
    for key in FILE_INPUTS:  # absolute, so a worker in another directory finds the same file
        if key in inputs:
            inputs[key] = str(Path(inputs[key]).expanduser().absolute())
    out = Path(options.get("out") or f"{job_id}.mp4").expanduser()
    options["out"] = str(out if out.is_absolute() else (out_root / out).absolute())
    return BatchJob(id=job_id, line=line, task=entry["task"], inputs=inputs, options=options)


def _check_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not _ID_PATTERN.fullmatch(str(value)):
        raise InputError(f"id: {value!r} is not a usable job id; use up to 100 letters, digits, '.', '_' or '-' "
                         "(it names the default output <id>.mp4)")
    return str(value)


def _clashes(jobs: list[BatchJob], out_root: Path, ray: bool, where_of: dict[int, str]) -> list[str]:
    """Two jobs writing the same file, sharing an id, or (on Ray) one reading what another writes."""
    problems = []
    ids: dict[str, BatchJob] = {}
    outs: dict[Path, BatchJob] = {}
    ledger = out_root / "batch.json"
    for job in jobs:
        where = where_of[job.line]
        if job.id in ids:
            problems.append(f"{where}: id: {job.id!r} is also the id of line {ids[job.id].line}; give each job "
                            "its own id")
        ids.setdefault(job.id, job)
        if job.out in outs:
            problems.append(f"{where}: out: {str(job.out)!r} is also the output of line {outs[job.out].line}; "
                            "give each job its own out")
        elif job.manifest_path == ledger:
            problems.append(f"{where}: out: {str(job.out)!r} would write its manifest over batch.json; choose "
                            "another name")
        outs.setdefault(job.out, job)
    if ray:  # Ray runs jobs in any order, so one job cannot wait for another's output
        for job in jobs:
            for key in FILE_INPUTS:
                maker = outs.get(Path(job.inputs.get(key, "")))
                if maker is not None and maker is not job:
                    problems.append(f"{where_of[job.line]}: {key}: {job.inputs[key]!r} is the output of line "
                                    f"{maker.line}; on Ray jobs run in any order: run that job in an earlier batch")
    return problems


# --- resume, rows and batch.json -------------------------------------------------------------------


def finished_video(job: BatchJob) -> str | None:
    """The job's video when an earlier run finished it: its manifest exists and its task, inputs,
    preset and seed (when the job fixes one) are the job's, and the video is there."""
    try:
        manifest = json.loads(job.manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    from mora.config import get_preset

    def norm(inputs: Any) -> dict:
        items = inputs.items() if isinstance(inputs, dict) else ()
        return {k: os.path.abspath(v) if k in FILE_INPUTS and isinstance(v, str) else v for k, v in items}

    seed = job.options.get("seed")
    same = (manifest.get("task") == job.task and norm(manifest.get("inputs")) == norm(job.inputs)
            and manifest.get("preset") == get_preset(job.options.get("preset", "mora")).name
            and (seed is None or manifest.get("seed") == seed))
    return str(job.out) if same and job.out.is_file() else None


class _Ledger:
    """The rows of a batch: updated as jobs finish, each time rewritten to batch.json atomically."""

    def __init__(self, jobs: list[BatchJob], out_dir: Path, mode: str, source: str,
                 progress: bool, on_job: Callable[[JobRecord], None] | None):
        self.rows = {j.id: JobRecord(id=j.id, line=j.line, task=j.task) for j in jobs}
        self.result = BatchResult(jobs=list(self.rows.values()), path=out_dir / "batch.json", out_dir=out_dir,
                                  mode=mode)
        self.source, self.on_job, self.started = source, on_job, time.perf_counter()
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.bar = _progress_bar(len(jobs), progress)

    def start(self, job: BatchJob, worker: str) -> None:
        row = self.rows[job.id]
        row.attempts += 1
        row.worker = worker

    def finish(self, job_id: str, **changes: Any) -> JobRecord:
        row = self.rows[job_id]
        for key, value in changes.items():
            setattr(row, key, value)
        self.save()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(ok=self.result.count("ok"), failed=self.result.count("failed"), refresh=False)
        if self.on_job is not None:
            self.on_job(row)
        return row

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
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="job", desc="batch", file=sys.stderr, dynamic_ncols=True)


# --- running ---------------------------------------------------------------------------------------


def run_job(job: BatchJob, worker: str = "local") -> dict:
    """Run one job with `mora.run`; never raises for the job's own failure.

    Returns:
        The row fields: `status` (ok/failed), `error` (one line), `seconds`, `worker`, `video`.

    Example:
        >>> run_job(load_jobs([{"task": "text-to-video", "prompt": "a fox", "preset": "tiny"}], out_dir="o")[0])
        {'status': 'ok', 'error': None, 'seconds': 8.2, 'worker': 'local', 'video': '/abs/o/1.mp4'}
    """
    from mora.workflows.runner import run

    started = time.perf_counter()
    try:
        result = run(job.task, **job.inputs, **job.options, progress=False, overwrite=True)
        status, error, video = "ok", None, str(result.video_path)
    except MoraError as e:  # the user's to fix (a missing input) or a clean stop: the message says it
        status, error, video = "failed", str(e), None
    except Exception as e:  # noqa: BLE001 - one job's crash must not stop the batch; its row says what happened
        logger.debug("job %s failed", job.id, exc_info=True)
        status, error, video = "failed", f"{type(e).__name__}: {e}", None
    if error:
        error = " ".join(error.split())  # one line in the table and in batch.json
        logger.warning("job %s (line %d) failed: %s", job.id, job.line, error)
    return {"status": status, "error": error, "seconds": round(time.perf_counter() - started, 3),
            "worker": worker, "video": video}


def _run_here(jobs: list[BatchJob], ledger: _Ledger, fail_fast: bool) -> None:
    """In order, in this process: the runtime's pipeline cache keeps every model warm across jobs."""
    for i, job in enumerate(jobs):
        ledger.start(job, "local")
        row = ledger.finish(job.id, **run_job(job, "local"))
        if fail_fast and row.status == "failed":
            _skip(ledger, jobs[i + 1:], f"not run: --fail-fast stopped the batch after job {job.id} failed")
            return


def _skip(ledger: _Ledger, jobs: Iterable[BatchJob], note: str) -> None:
    for job in jobs:
        ledger.finish(job.id, status="skipped", note=note)


# --- Ray -------------------------------------------------------------------------------------------


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

    def run(self, job: BatchJob, attempt: int) -> dict:
        _test_crash_hook(job.id, attempt)
        if self.device and job.options.get("device", "auto") == "auto":
            job = BatchJob(job.id, job.line, job.task, job.inputs, {**job.options, "device": self.device})
        return run_job(job, self.name)


def _test_crash_hook(job_id: str, attempt: int) -> None:
    """Test-only (TEST_CRASH_ENV): end this worker process abruptly, as a killed one would end."""
    for target in filter(None, os.environ.get(TEST_CRASH_ENV, "").split(",")):
        name, _, when = target.partition(":")
        if name == job_id and (attempt == 1 or when == "always"):
            logger.warning("%s=%s: this worker exits now (test hook)", TEST_CRASH_ENV, target)
            os._exit(1)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--ray: Ray is not installed; install the extra (pip install 'mora[ray]') or run "
                         "without --ray") from None
    return ray


def _connect(ray, address: str | None, workers: int | None) -> bool:
    """Join the cluster at `address` (None: `$RAY_ADDRESS`, else a new local instance).

    Returns True when this call connected (so the batch disconnects at the end); a session the
    caller opened already (a notebook, the tests) is used as it is and left open.
    """
    if ray.is_initialized():
        return False
    # Actor logs stay in Ray's log files and dashboard unless debugging: the rows carry the errors.
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": logger.isEnabledFor(logging.DEBUG)}
    if address is None and not os.environ.get("RAY_ADDRESS") and workers:
        kwargs["num_cpus"] = max(os.cpu_count() or 1, workers)  # a new local instance: a CPU slot per actor
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise InputError(f"--ray: cannot reach a Ray cluster at {address or os.environ.get('RAY_ADDRESS')!r} "
                         f"({e}); start one with `ray start --head` or pass its address") from None
    return True


def _pool_shape(ray, workers: int | None) -> tuple[int, int, str | None]:
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


def with_llm_configs(jobs: list[BatchJob]) -> list[BatchJob]:
    """The jobs with their LLM config read here: an actor on another node has neither the file nor
    `$OAI_CONFIG_LIST`. Configs travel with the job (Ray's object store), never in batch.json or logs."""
    from mora.agents.llm import load_llm_config

    default = load_llm_config(None)
    return [BatchJob(job.id, job.line, job.task, job.inputs,
                     {**job.options, "llm_config": load_llm_config(job.options["llm_config"])
                      if "llm_config" in job.options else default})
            for job in jobs]


def worker_env() -> dict[str, str]:
    """The variables every actor gets from this process (model cache, threads, offline mode)."""
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


class _Actors:
    """The batch's actors: started up front, each replaced by a new one when it dies."""

    def __init__(self, ray, count: int, gpus: int, device: str | None):
        self.ray, self.device, self.started = ray, device, 0
        self.cls = ray.remote(BatchWorker).options(num_cpus=1, num_gpus=gpus, max_restarts=0,
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


def run_on_ray(jobs: list[BatchJob], ledger: _Ledger, *, address: str | None, workers: int | None,
               fail_fast: bool) -> None:
    """Run `jobs` on Ray actors that keep their models warm; record each row in `ledger`.

    Args:
        jobs: checked jobs (absolute paths, so any node with the shared storage finds them).
        ledger: the batch's rows.
        address: a cluster address, or None for `$RAY_ADDRESS` or a new local instance.
        workers: CPU actors to start; None: one actor per GPU of the cluster.
        fail_fast: stop at the first failed job.
    """
    ray = _import_ray()
    connected = _connect(ray, address, workers)
    actors = None
    try:
        count, gpus, device = _pool_shape(ray, workers)
        logger.info("Ray: %d actor(s), %d GPU each, for %d job(s)", count, gpus, len(jobs))
        actors = _Actors(ray, count, gpus, device)
        _dispatch(ray, actors, jobs, ledger, fail_fast)
    finally:
        if actors is not None:
            actors.shutdown()
        if connected:
            ray.shutdown()


def _dispatch(ray, actors: _Actors, jobs: list[BatchJob], ledger: _Ledger, fail_fast: bool) -> None:
    """Give each idle actor the next job; `ray.wait` for whichever finishes first."""
    from ray.exceptions import RayActorError, RayError

    queue = deque((job, 1) for job in jobs)
    running: dict[Any, tuple[Any, str, BatchJob, int]] = {}  # result ref -> (actor, name, job, attempt)
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
            reason = _first_line(e)
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
            outcome = {"status": "failed", "worker": name, "video": None, "error": _first_line(e)}
        row = ledger.finish(job.id, **outcome)
        if fail_fast and row.status == "failed":
            rest = [j for j, _ in queue] + [r[2] for r in running.values()]
            _skip(ledger, rest, f"not run: --fail-fast stopped the batch after job {job.id} failed")
            return


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _skip_finished(jobs: list[BatchJob], ledger: _Ledger) -> list[BatchJob]:
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


def batch(
    jobs: str | os.PathLike | Iterable[dict],
    *,
    out_dir: str | os.PathLike = "outputs/batch",
    workers: int | None = None,
    ray: bool | str | None = None,
    resume: bool = False,
    fail_fast: bool = False,
    progress: bool = True,
    on_job: Callable[[JobRecord], None] | None = None,
    **defaults: Any,
) -> BatchResult:
    """Run many jobs, models kept warm: in this process, or on Ray across GPUs and machines.

    Args:
        jobs: a JSON Lines file (one `{"task": ..., "prompt": ..., ...}` a line) or a list of dicts, each
            with the inputs and options of `mora.run`, plus an optional `id` (default: the line number).
        out_dir: relative `out` paths go here; a job without `out` writes `<out_dir>/<id>.mp4`;
            `<out_dir>/batch.json` gets a row per job after every job.
        workers: with Ray, this many CPU actors (default: one actor per GPU of the cluster).
        ray: None/False: run in this process. True: `ray.init()` (`$RAY_ADDRESS`, else a new local
            instance). A string: the address of a running cluster (`auto`, `HOST:6379`, `ray://HOST:10001`).
        resume: skip jobs whose manifest exists and matches (task, inputs, preset, seed).
        fail_fast: stop at the first failed job (the rest are marked skipped).
        progress: a progress bar over jobs on stderr.
        on_job: called with each job's row as it finishes.
        **defaults: options for every job (`preset=`, `device=`, `steps=`, ...); a job's own value wins.

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
    out = Path(out_dir).expanduser().absolute()
    checked = load_jobs(jobs, out_dir=out, defaults=defaults, ray=use_ray)
    if use_ray:
        checked = with_llm_configs(checked)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out-dir: {str(out_dir)!r} is a file; pass a folder")
    out.mkdir(parents=True, exist_ok=True)
    source = str(Path(jobs).absolute()) if isinstance(jobs, (str, os.PathLike)) else None
    ledger = _Ledger(checked, out, "ray" if use_ray else "local", source, progress, on_job)
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


def format_summary(result: BatchResult) -> str:
    """A plain-text table of the rows and a totals line (what `mora batch` prints at the end).

    Example:
        >>> print(format_summary(result))
        id  task           status  seconds  worker  video / error
        1   text-to-video  ok          8.2  local   /abs/outputs/batch/1.mp4
        1 job: 1 ok, 0 failed, 0 skipped, 0 pending in 8.3 s (7.2 jobs/min); rows in /abs/outputs/batch/batch.json
    """
    header = ("id", "task", "status", "seconds", "worker", "video / error")
    rows = [(r.id, r.task, r.status, "" if r.seconds is None else f"{r.seconds:.1f}", r.worker or "",
             r.video if r.status in ("ok", "skipped") and r.video else (r.error or r.note or "")) for r in result.jobs]
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header) - 1)]

    def fmt(row: tuple) -> str:
        cells = [str(c).rjust(w) if i == 3 else str(c).ljust(w) for i, (c, w) in enumerate(zip(row[:-1], widths, strict=True))]
        return "  ".join([*cells, str(row[-1])]).rstrip()

    n = len(result.jobs)
    counts = ", ".join(f"{result.count(s)} {s}" for s in ("ok", "failed", "skipped", "pending"))
    total = (f"{n} job{'s' if n != 1 else ''}: {counts} in {result.seconds:.1f} s "
             f"({result.jobs_per_minute:.1f} jobs/min); rows in {result.path}")
    if result.interrupted:
        total += "; interrupted (run again with --resume to finish)"
    return "\n".join([fmt(header), *map(fmt, rows), total])


def worker_name(prefix: str) -> str:
    """`prefix@host:pid`: where a job ran, for the batch.json row."""
    return f"{prefix}@{socket.gethostname()}:{os.getpid()}"


__all__ = ["BatchJob", "BatchResult", "BatchInterrupted", "JobRecord", "JobsFileError", "batch", "finished_video",
           "format_summary", "load_jobs", "run_job", "validate_job"]

"""A batch's jobs: read every line, check each through the job model and `prepare`, report all; run one.

A jobs file is JSON Lines, one job a line in the job model's shape (`mora.workflows.jobspec`):
`{"task": "text-to-video", "prompt": "a fox", "seed": 1, "out": "fox.mp4"}` plus an optional `id`.
Every line is checked before anything runs and every bad line is reported; input files are
checked when each job starts, so a missing input fails that job alone.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mora.errors import InputError, MoraError, one_line
from mora.workflows.jobspec import OPTIONS, parse_job, task_inputs
from mora.workflows.prepare import prepare
from mora.workflows.tasks import FILE_KINDS

logger = logging.getLogger(__name__)

# a batch line may set job and host options (device, out, ...), not those that need a person
LINE_SCOPES = ("job", "host")
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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


@dataclass(frozen=True)
class JobLine:
    """One checked job: what `mora.run` gets.

    Args:
        id: the job's name in batch.json (default: its line number).
        line: its line in the jobs file (1-based; the position for a list).
        task: one of the six tasks, or story.
        inputs: prompt / instruction texts and input file paths (made absolute).
        options: the job model's options as given (defaults merged); `out` is always set and absolute.
        preset: the preset's name, resolved (with its preset file) when the line was checked.
    """

    id: str
    line: int
    task: str
    inputs: dict
    options: dict
    preset: str = ""

    def data(self) -> dict:
        """The job as the job model takes it (`{"task": ..., inputs..., options...}`)."""
        return {"task": self.task, **self.inputs, **self.options}

    @property
    def out(self) -> Path:
        return Path(self.options["out"])

    @property
    def manifest_path(self) -> Path:
        return self.out.with_suffix(".json")


def load_jobs(source: str | os.PathLike | Iterable[dict], *, out_dir: str | os.PathLike,
              defaults: dict | None = None, ray: bool = False, overwrite: bool = False) -> list[JobLine]:
    """Read and check every job; report every bad one at once.

    Args:
        source: a JSON Lines file (one job object a line; blank lines are ignored) or a list of dicts.
        out_dir: relative `out` paths go under it; a job without `out` writes `<out_dir>/<id>.mp4`.
        defaults: options for every job (a job's own value wins), e.g. `{"preset": "tiny"}`.
        ray: the jobs will run on Ray (in any order, each actor seeing one GPU as `cuda`).
        overwrite: the jobs may write over earlier outputs (`--overwrite`, or `--resume`: the batch's own).

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
        if key not in default_options():
            raise InputError(f"{key}: not an option for every job; defaults take {', '.join(default_options())}")
    entries, problems = _read_entries(source)
    if not entries and not problems:
        raise InputError(f"jobs: {_label(source)} has no jobs; write one JSON object per line, e.g. "
                         '{"task": "text-to-video", "prompt": "a fox"}')
    out_root = Path(out_dir).expanduser().absolute()
    jobs: list[JobLine] = []
    for where, line, entry in entries:
        try:
            jobs.append(_make_job(line, entry, out_root, defaults, ray, overwrite))
        except InputError as e:
            problems.append(str(e.at(where)))
    problems.extend(_clashes(jobs, out_root, ray, where_of={line: where for where, line, _ in entries}))
    if problems:
        raise JobsFileError(sorted(problems, key=_line_of))
    return jobs


def default_options() -> list[str]:
    """The options a batch may set for every job: those every task takes, bar the per-job output."""
    return [o.name for o in OPTIONS.values() if o.tasks is None and o.scope in LINE_SCOPES
            and o.name not in ("out", "overwrite")]


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


def _make_job(line: int, entry: Any, out_root: Path, defaults: dict, ray: bool, overwrite: bool) -> JobLine:
    """One line through the job model and `prepare` (without touching its input files)."""
    if not isinstance(entry, dict):
        raise InputError(f"job: a JSON {type(entry).__name__} is not a job; write an object like "
                         '{"task": "text-to-video", "prompt": "a fox"}')
    job_id = _check_id(entry.get("id", line))
    data = {**defaults, **{k: v for k, v in entry.items() if k != "id"}}
    if "resume" in entry:
        raise InputError("resume: a batch line cannot set it; the batch's own --resume decides")
    out = Path(data.get("out") or f"{job_id}.mp4").expanduser()
    data["out"] = str(out if out.is_absolute() else (out_root / out).absolute())
    data["overwrite"] = bool(data.get("overwrite")) or overwrite
    spec = parse_job(data, scopes=LINE_SCOPES, door="a batch line")
    prepared = prepare(spec, files=False)  # preset (and its file), sizes, output paths, LLM config
    if ray and re.fullmatch(r"cuda:\d+", spec.device):
        raise InputError(f"device: {spec.device!r} with Ray: each actor sees only its own GPU; use cuda or auto")
    kinds = {i.name: i.kind for i in task_inputs(spec.task)}
    inputs = {k: (str(Path(v).expanduser().absolute()) if kinds[k] in FILE_KINDS and isinstance(v, str) else v)
              for k, v in spec.inputs().items()}  # file paths absolute: any worker's cwd (a storyboard may be a dict)
    given = {k: v for k, v in spec.options().items() if k in data and v is not None}
    return JobLine(id=job_id, line=line, task=spec.task, inputs=inputs, options=given, preset=prepared.preset.name)


def _check_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not _ID_PATTERN.fullmatch(str(value)):
        raise InputError(f"id: {value!r} is not a usable job id; use up to 100 letters, digits, '.', '_' or '-' "
                         "(it names the default output <id>.mp4)")
    return str(value)


def _clashes(jobs: list[JobLine], out_root: Path, ray: bool, where_of: dict[int, str]) -> list[str]:
    """Two jobs writing the same file, sharing an id, or (on Ray) one reading what another writes."""
    problems = []
    ids: dict[str, JobLine] = {}
    outs: dict[Path, JobLine] = {}
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
            for key in job.inputs:
                maker = outs.get(Path(str(job.inputs[key])))
                if maker is not None and maker is not job:
                    problems.append(f"{where_of[job.line]}: {key}: {job.inputs[key]!r} is the output of line "
                                    f"{maker.line}; on Ray jobs run in any order: run that job in an earlier batch")
    return problems


def run_job(job: JobLine, worker: str) -> dict:
    """Run one job with `mora.run`; never raises for the job's own failure.

    Returns:
        The row fields: `status` (ok/failed), `error` (one line), `seconds`, `worker`, `video`.

    Example:
        >>> run_job(load_jobs([{"task": "text-to-video", "prompt": "a fox", "preset": "tiny"}], out_dir="o")[0], "in-process")
        {'status': 'ok', 'error': None, 'seconds': 8.2, 'worker': 'in-process', 'video': '/abs/o/1.mp4'}
    """
    from mora.workflows.prepare import Hooks
    from mora.workflows.runner import run_job as run_one

    started = time.perf_counter()
    try:
        result = run_one(job.data(), Hooks(progress=False))
        status, error, video = "ok", None, str(result.video_path)
    except MoraError as e:  # the user's to fix (a missing input) or a clean stop: the message says it
        status, error, video = "failed", one_line(e), None
    except Exception as e:  # noqa: BLE001 - one job's crash must not stop the batch; its row says what happened
        logger.debug("job %s failed", job.id, exc_info=True)
        status, error, video = "failed", one_line(e), None
    if error:  # one line (one_line) in the table and in batch.json
        logger.warning("job %s (line %d) failed: %s", job.id, job.line, error)
    return {"status": status, "error": error, "seconds": round(time.perf_counter() - started, 3),
            "worker": worker, "video": video}

"""The durable job queue: jobs and their events in SQLite (WAL), one folder per job.

Every front door that queues work (`mora serve`'s HTTP APIs, MCP) submits here, and one or more
workers (`mora.service.worker.Worker`) claim jobs from here. A job is a job of the job model
(`mora.workflows.jobspec`: `{"task": ..., inputs..., options...}`, a `mora batch` line); its
uploads, its video, manifest and artifacts live in `<out_dir>/<job id>/`.

Durability: every state change is one SQLite transaction in WAL mode, so a process killed with
SIGKILL loses nothing it acknowledged; on the next start `recover()` puts the jobs that were
running back in the queue (their outputs are written atomically, so nothing half-written is ever
served). SQLite is in the standard library, needs no server and is safe across threads with one
connection per thread; a team that outgrows it runs several workers through Ray, not several stores.

Example:
    >>> store = JobStore("jobs.db", "outputs/serve")
    >>> row = store.submit({"task": "text-to-video", "prompt": "a fox", "preset": "tiny"})
    >>> store.get(row.id).status
    'queued'
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mora.errors import InputError
from mora.workflows.jobspec import JOB_TASKS, as_field, parse_job, task_inputs

logger = logging.getLogger(__name__)

STATUSES = ("queued", "in_progress", "completed", "failed", "cancelled")
EVENT_TYPES = ("step", "progress", "done", "failed", "cancelled")
FILE_KINDS = ("image", "video", "storyboard")  # inputs that name a file
JOB_REF = "job:"  # `job:<id>`: an earlier job's video as an input
VIDEO_NAME = "video.mp4"  # a job's output in its folder (manifest video.json, artifacts video_artifacts/)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    step TEXT,
    error TEXT,
    job TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    manifest TEXT,
    video TEXT,
    idempotency_key TEXT UNIQUE,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, n);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"""
# A running job back in the queue (a restart, a dead worker): one rule for `recover` and `requeue`.
_BACK_TO_QUEUE = "UPDATE jobs SET status = 'queued', step = NULL, progress = 0 WHERE id = ? AND status = 'in_progress'"


@dataclass
class JobRow:
    """One job as the store holds it.

    Attributes:
        id: `job_<hex>`.
        status: queued, in_progress, completed, failed or cancelled.
        progress: 0-100 (acting steps done / the route's acting steps).
        step: the current agent step (`image_to_video_agent: animates the image`) or None.
        error: one line when failed, else None.
        job: the job as queued (file inputs are paths in the job's folder).
        created_at, started_at, completed_at: unix seconds (None until then).
        manifest: the manifest when completed.
        video: the video's path when completed.
        meta: what the front door recorded with it (the Videos API's model, seconds, size, ...).
        attempts: how many times a worker started it (more than 1 after a restart).
    """

    id: str
    status: str
    progress: int
    step: str | None
    error: str | None
    job: dict
    created_at: float
    started_at: float | None
    completed_at: float | None
    manifest: dict | None
    video: str | None
    meta: dict
    attempts: int = 0
    cancel_requested: bool = False

    @property
    def task(self) -> str:
        return self.job["task"]

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")


def _row(r: sqlite3.Row) -> JobRow:
    return JobRow(id=r["id"], status=r["status"], progress=r["progress"], step=r["step"], error=r["error"],
                  job=json.loads(r["job"]), created_at=r["created_at"], started_at=r["started_at"],
                  completed_at=r["completed_at"], manifest=json.loads(r["manifest"]) if r["manifest"] else None,
                  video=r["video"], meta=json.loads(r["meta"]), attempts=r["attempts"],
                  cancel_requested=bool(r["cancel_requested"]))


class JobStore:
    """SQLite (WAL) job queue with one folder per job under `out_dir`.

    Args:
        db: the SQLite file (created with its folder).
        out_dir: where each job's folder goes (`<out_dir>/<id>/`).
        host: the host's options every job runs with (preset_file, device, dtype, profile,
            llm_config, adapter): submit checks jobs with them, as the worker will run them.
        defaults: job options filled in when a job omits them (e.g. `{"preset": "tiny"}`).
        inputs_dir: a folder on the server whose files jobs may name by path; any other path is refused.
        local_paths: accept any path on this machine (a local front door such as stdio MCP).

    Example:
        >>> store = JobStore("jobs.db", "outputs/serve", defaults={"preset": "tiny"})
        >>> store.recover()
        []
    """

    def __init__(self, db: str | Path, out_dir: str | Path, *, host: dict | None = None,
                 defaults: dict | None = None, inputs_dir: str | Path | None = None, local_paths: bool = False):
        self.db = Path(db).expanduser()
        self.out_dir = Path(out_dir).expanduser()
        self.host = dict(host or {})
        self.defaults = dict(defaults or {})
        self.inputs_dir = Path(inputs_dir).expanduser().resolve() if inputs_dir else None
        self.local_paths = local_paths
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()  # one writer at a time in this process
        self._work = threading.Event()  # set when a job is queued: wakes a waiting worker at once
        self._conn().executescript(_SCHEMA)

    # --- connections -------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:  # one connection per thread: sqlite3 connections must not cross threads
            con = sqlite3.connect(self.db, timeout=30, isolation_level=None, check_same_thread=False)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no commit
            self._local.con = con
        return con

    class _Tx:
        def __init__(self, con: sqlite3.Connection, lock: threading.Lock):
            self.con, self.lock = con, lock

        def __enter__(self) -> sqlite3.Connection:
            # Threads of this process queue on a lock, not on SQLite's busy handler, whose sleeps
            # (up to 100 ms each) made p99 latency a second under 50 concurrent clients.
            self.lock.acquire()
            try:
                self.con.execute("BEGIN IMMEDIATE")  # take the write lock first: no upgrade deadlocks
            except BaseException:
                self.lock.release()
                raise
            return self.con

        def __exit__(self, kind, value, tb) -> None:
            try:
                self.con.execute("COMMIT" if kind is None else "ROLLBACK")
            finally:
                self.lock.release()

    def _write(self) -> JobStore._Tx:
        return JobStore._Tx(self._conn(), self._lock)

    # --- submit ------------------------------------------------------------------------------------

    def submit(self, job: dict, *, idempotency_key: str | None = None, files: dict[str, Path] | None = None,
               meta: dict | None = None) -> JobRow:
        """Check a job and queue it; returns its row (the same row again for a known idempotency key).

        Args:
            job: `{"task": ..., inputs..., options...}` (job-scope options only).
            idempotency_key: a client's key; a retried submit with it returns the first job.
            files: uploaded files by input name (moved into the job's folder; their paths go in the job).
            meta: what the front door wants kept with the job (e.g. the Videos API's fields).

        Raises:
            InputError: the job is not valid, names a path outside `inputs_dir`, or a `job:<id>` that
                is unknown or not completed (nothing is queued or kept).

        Example:
            >>> store.submit({"task": "extend", "video": "job:job_ab12", "preset": "tiny"}).status
            'queued'
        """
        if idempotency_key is not None and (known := self._by_key(idempotency_key)) is not None:
            return known
        files = dict(files or {})
        data = {**self.defaults, **{k: v for k, v in job.items() if v is not None}}
        kinds = {i.name: i.kind for i in task_inputs(data["task"])} if data.get("task") in JOB_TASKS else {}
        for name in files if kinds else ():
            if kinds.get(name) not in FILE_KINDS:
                raise InputError(f"{name}: an uploaded file is not an input of {data['task']}; upload only "
                                 f"{', '.join(k for k, v in kinds.items() if v in FILE_KINDS) or 'no files'}")
        data |= {name: str(path) for name, path in files.items()}
        parse_job(data, scopes=("job",), door="a request")
        job_id = f"job_{uuid.uuid4().hex[:24]}"
        folder = self.folder(job_id)
        folder.mkdir(parents=True)
        try:
            data = self._place_files(data, kinds, files, folder)
            data = self._check(data, folder)
            return self._insert(job_id, data, idempotency_key, meta or {})
        except BaseException:  # refused or interrupted: keep nothing of it (then re-raise)
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _place_files(self, data: dict, kinds: dict, files: dict[str, Path], folder: Path) -> dict:
        """Uploads moved into the folder, `job:<id>` resolved, server paths allowed only under inputs_dir."""
        data = dict(data)
        for name, kind in kinds.items():
            value = data.get(name)
            if kind not in FILE_KINDS or not isinstance(value, str):
                continue
            if name in files:
                src = Path(files[name])
                dest = folder / f"{name}{src.suffix.lower()}"
                shutil.move(src, dest)
                data[name] = str(dest)
            elif value.startswith(JOB_REF):
                data[name] = self._job_video(name, kind, value[len(JOB_REF):], folder)
            else:
                data[name] = self._server_path(name, value)
        return data

    def _job_video(self, name: str, kind: str, ref: str, folder: Path) -> str:
        row = self.get(ref)
        if row is None:
            raise InputError(f"{name}: job:{ref} is not a job of this server; pass the id of an earlier job")
        if row.status != "completed" or not row.video:
            raise InputError(f"{name}: job:{ref} is {row.status}, not completed; wait for it to complete "
                             "or pass another job")
        if kind != "image":
            return row.video
        from mora import media  # an image input takes the earlier video's first frame

        return str(media.write_image(media.read_frame(row.video, 0, argument=name), folder / f"{name}.png"))

    def _server_path(self, name: str, value: str) -> str:
        path = Path(value).expanduser()
        if self.local_paths:
            return str(path)
        if self.inputs_dir is not None and path.resolve().is_relative_to(self.inputs_dir):
            return str(path.resolve())
        where = f", or a path under {self.inputs_dir}" if self.inputs_dir else ""
        raise InputError(f"{name}: {value!r} is a path on the server, which a request may not name; upload the "
                         f"file or pass job:<id> of an earlier job{where}")

    def _check(self, data: dict, folder: Path) -> dict:
        """Every check of the job as the worker will run it (prepare: nothing loads, nothing is written);
        returns the job with its seed fixed, so a job run again after a restart makes the same video."""
        from mora.workflows.prepare import Hooks, prepare

        try:
            p = prepare({**data, **self.host, "out": str(folder / VIDEO_NAME), "overwrite": True},
                        Hooks(progress=False))
        except InputError as e:  # the preset checks name command-line flags; a request names fields
            raise InputError(as_field(str(e))) from None
        return {**data, "seed": p.seed} if data.get("seed") is None and p.seed is not None else data

    def _insert(self, job_id: str, data: dict, key: str | None, meta: dict) -> JobRow:
        try:
            with self._write() as con:
                con.execute("INSERT INTO jobs (id, status, job, meta, created_at, idempotency_key) "
                            "VALUES (?, 'queued', ?, ?, ?, ?)",
                            (job_id, json.dumps(data), json.dumps(meta), time.time(), key))
        except sqlite3.IntegrityError:  # the same key submitted twice at once: the first one wins
            known = self._by_key(key) if key is not None else None
            if known is None:
                raise
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
            return known
        self._work.set()
        logger.info("queued %s (%s)", job_id, data["task"])
        return self.get(job_id)

    def _by_key(self, key: str) -> JobRow | None:
        r = self._conn().execute("SELECT * FROM jobs WHERE idempotency_key = ? AND deleted = 0", (key,)).fetchone()
        return _row(r) if r else None

    # --- reading -----------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRow | None:
        """The job, or None (unknown or deleted)."""
        r = self._conn().execute("SELECT * FROM jobs WHERE id = ? AND deleted = 0", (job_id,)).fetchone()
        return _row(r) if r else None

    def list(self, *, after: str | None = None, limit: int = 20, order: str = "desc") -> list[JobRow]:
        """Jobs in submit order (`desc`: newest first), starting after the job `after`."""
        if order not in ("asc", "desc"):
            raise InputError(f"order: {order!r} is not an order; pass asc or desc")
        where, args = "deleted = 0", []
        if after is not None:
            r = self._conn().execute("SELECT n FROM jobs WHERE id = ?", (after,)).fetchone()
            if r is None:
                raise InputError(f"after: {after!r} is not a job of this server; pass the id of the last job listed")
            where += " AND n < ?" if order == "desc" else " AND n > ?"
            args.append(r["n"])
        rows = self._conn().execute(f"SELECT * FROM jobs WHERE {where} ORDER BY n {order.upper()} LIMIT ?",
                                    (*args, int(limit))).fetchall()
        return [_row(r) for r in rows]

    def events(self, job_id: str, after: int = 0) -> list[dict]:
        """The job's events with seq > after: `{"seq", "type", "data", "at"}`, in order."""
        rows = self._conn().execute("SELECT seq, type, data, at FROM events WHERE job_id = ? AND seq > ? ORDER BY seq",
                                    (job_id, after)).fetchall()
        return [{"seq": r["seq"], "type": r["type"], "data": json.loads(r["data"]), "at": r["at"]} for r in rows]

    def counts(self) -> dict[str, int]:
        """Jobs by status (deleted ones left out)."""
        rows = self._conn().execute("SELECT status, COUNT(*) AS c FROM jobs WHERE deleted = 0 GROUP BY status")
        return {s: 0 for s in STATUSES} | {r["status"]: r["c"] for r in rows}

    def durations(self) -> list[float]:
        """Seconds of each completed job (start to end), for /metrics."""
        rows = self._conn().execute("SELECT completed_at - started_at AS s FROM jobs WHERE status = 'completed' "
                                    "AND started_at IS NOT NULL")
        return [r["s"] for r in rows]

    def folder(self, job_id: str) -> Path:
        """The job's folder: its uploads, video.mp4, video.json and video_artifacts/."""
        return self.out_dir / job_id

    # --- state changes -----------------------------------------------------------------------------

    def _event(self, con: sqlite3.Connection, job_id: str, kind: str, data: dict) -> None:
        seq = con.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)).fetchone()[0]
        con.execute("INSERT INTO events (job_id, seq, type, data, at) VALUES (?, ?, ?, ?, ?)",
                    (job_id, seq, kind, json.dumps(data), time.time()))

    def claim(self) -> JobRow | None:
        """Take the oldest queued job (now in_progress), or None when the queue is empty."""
        with self._write() as con:
            r = con.execute("SELECT id FROM jobs WHERE status = 'queued' AND deleted = 0 ORDER BY n LIMIT 1").fetchone()
            if r is None:
                self._work.clear()
                return None
            con.execute("UPDATE jobs SET status = 'in_progress', started_at = ?, progress = 0, step = NULL, "
                        "attempts = attempts + 1 WHERE id = ?", (time.time(), r["id"]))
        return self.get(r["id"])

    def wait_for_work(self, timeout: float) -> None:
        """Block until a job is queued in this process, or `timeout` seconds."""
        self._work.wait(timeout)

    def step(self, job_id: str, step: str, progress: int, data: dict | None = None) -> None:
        """Record the agent step that starts now and the progress so far (a step and a progress event)."""
        with self._write() as con:
            con.execute("UPDATE jobs SET step = ?, progress = ? WHERE id = ?", (step, progress, job_id))
            self._event(con, job_id, "step", {"step": step, **(data or {})})
            self._event(con, job_id, "progress", {"progress": progress})

    def complete(self, job_id: str, manifest: dict, video: str | None) -> None:
        """The job finished: its manifest and video path (None: a storyboard-only story), progress 100, a `done` event."""
        with self._write() as con:
            con.execute("UPDATE jobs SET status = 'completed', progress = 100, step = NULL, completed_at = ?, "
                        "manifest = ?, video = ? WHERE id = ?", (time.time(), json.dumps(manifest), video, job_id))
            self._event(con, job_id, "progress", {"progress": 100})
            self._event(con, job_id, "done", {"video": video})

    def fail(self, job_id: str, error: str) -> None:
        """The job failed with a one-line error (a `failed` event)."""
        with self._write() as con:
            con.execute("UPDATE jobs SET status = 'failed', completed_at = ?, error = ? WHERE id = ?",
                        (time.time(), error, job_id))
            self._event(con, job_id, "failed", {"error": error})

    def cancel(self, job_id: str) -> JobRow:
        """Cancel a job: a queued one at once, a running one at its next step; a finished one stays as it is.

        Raises:
            InputError: no such job.
        """
        with self._write() as con:
            r = con.execute("SELECT status FROM jobs WHERE id = ? AND deleted = 0", (job_id,)).fetchone()
            if r is None:
                raise InputError(f"job: {job_id!r} is not a job of this server; pass the id of a job")
            if r["status"] == "queued":
                self._mark_cancelled(con, job_id)
            elif r["status"] == "in_progress":
                con.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        return self.get(job_id)

    def _mark_cancelled(self, con: sqlite3.Connection, job_id: str) -> None:
        con.execute("UPDATE jobs SET status = 'cancelled', completed_at = ?, step = NULL, error = NULL "
                    "WHERE id = ?", (time.time(), job_id))
        self._event(con, job_id, "cancelled", {})

    def cancelled(self, job_id: str) -> None:
        """The worker stopped a running job that was cancelled."""
        with self._write() as con:
            self._mark_cancelled(con, job_id)

    def cancel_requested(self, job_id: str) -> bool:
        r = self._conn().execute("SELECT cancel_requested, deleted FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return r is None or bool(r["cancel_requested"] or r["deleted"])

    def delete(self, job_id: str) -> bool:
        """Forget a job (a running one is cancelled first); its folder goes when nothing writes to it.

        Returns:
            False when there was no such job.
        """
        with self._write() as con:
            r = con.execute("SELECT status FROM jobs WHERE id = ? AND deleted = 0", (job_id,)).fetchone()
            if r is None:
                return False
            con.execute("UPDATE jobs SET deleted = 1, cancel_requested = 1, idempotency_key = NULL WHERE id = ?",
                        (job_id,))
        if r["status"] != "in_progress":  # a running job's folder is removed by its worker when it stops
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
        return True

    def is_deleted(self, job_id: str) -> bool:
        r = self._conn().execute("SELECT deleted FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return r is None or bool(r["deleted"])

    def recover(self) -> list[str]:
        """On start: jobs left in_progress by a killed server go back to the queue (cancelled if asked).

        Returns:
            The ids put back in the queue.
        """
        with self._write() as con:
            rows = con.execute("SELECT id, cancel_requested FROM jobs WHERE status = 'in_progress'").fetchall()
            back = [r["id"] for r in rows if not r["cancel_requested"]]
            for r in rows:
                if r["cancel_requested"]:
                    self._mark_cancelled(con, r["id"])
            con.executemany(_BACK_TO_QUEUE, [(i,) for i in back])
        if back:
            logger.warning("%d job(s) were running when the server stopped; queued again: %s", len(back),
                           ", ".join(back))
            self._work.set()
        return back

    def requeue(self, job_id: str) -> None:
        """Put a running job back in the queue (its worker died): queued, no step, progress 0.

        Its `attempts` stay as they are, so the caller can see a job that was already retried; the
        next `claim()` counts one more.
        """
        with self._write() as con:
            con.execute(_BACK_TO_QUEUE, (job_id,))
        self._work.set()

    def close(self) -> None:
        """Close this thread's connection."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


def as_dict(row: JobRow) -> dict[str, Any]:
    """A job row as the native API shows it (JSON-ready)."""
    return {"id": row.id, "object": "job", "status": row.status, "progress": row.progress, "step": row.step,
            "error": row.error, "task": row.task, "job": row.job, "created_at": row.created_at,
            "started_at": row.started_at, "completed_at": row.completed_at, "manifest": row.manifest,
            "video": row.video is not None, "attempts": row.attempts}

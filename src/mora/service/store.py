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

import builtins  # `list` below is JobStore.list inside the class
import hashlib
import json
import logging
import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from mora.errors import InputError
from mora.service.inputs import INPUTS, JOB_REF, place_files  # noqa: F401  (JOB_REF: front doors import it here)
from mora.service.rows import LOCAL_OWNER, IdempotencyConflict, JobRow, QueueFull, row_of
from mora.validation import quote
from mora.workflows.jobspec import JOB_TASKS, parse_job, task_inputs
from mora.workflows.tasks import FILE_KINDS

logger = logging.getLogger(__name__)

STATUSES = ("queued", "in_progress", "completed", "failed", "cancelled")
ACTIVE = ("queued", "in_progress")  # what counts against a key's queue limit
VIDEO_NAME = "video.mp4"  # a job's output in its folder (manifest video.json, artifacts video_artifacts/)
RETRY_AFTER_S = 10  # Retry-After of a full queue when no job has completed yet to measure by

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
    request_hash TEXT,
    owner TEXT NOT NULL DEFAULT '',
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
# Columns added since the first release: a store made before them gains them on open.
_ADDED = {"request_hash": "TEXT", "owner": "TEXT NOT NULL DEFAULT ''"}
_INDEXES = "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, status, n);"
# A running job back in the queue (a restart, a dead worker): one rule for `recover` and `requeue`.
_BACK_TO_QUEUE = "UPDATE jobs SET status = 'queued', step = NULL, progress = 0 WHERE id = ? AND status = 'in_progress'"


class JobStore:
    """SQLite (WAL) job queue with one folder per job under `out_dir`.

    Args:
        db: the SQLite file (created with its folder).
        out_dir: where each job's folder goes (`<out_dir>/<id>/`).
        host: the host's options every job runs with (preset_file, device, dtype, profile,
            llm_config, adapter): submit checks jobs with them, as the worker will run them.
        defaults: job options filled in when a job omits them (e.g. `{"preset": "tiny"}`).
        inputs_dir: a folder on the server whose files jobs may name by path; any other path is refused.
        any_path: accept any path on this machine (a local front door such as stdio MCP).
        max_job_work: refuse a job costing more than this many times its preset's own job
            (`mora.service.guards.check_work`); None: no budget.
        max_queued_per_key: refuse a job (`QueueFull`) while its owner has this many jobs queued or
            running; None: no limit.

    Example:
        >>> store = JobStore("jobs.db", "outputs/serve", defaults={"preset": "tiny"})
        >>> store.recover()
        []
    """

    def __init__(self, db: str | Path, out_dir: str | Path, *, host: dict | None = None,
                 defaults: dict | None = None, inputs_dir: str | Path | None = None, any_path: bool = False,
                 max_job_work: float | None = None, max_queued_per_key: int | None = None):
        self.db = Path(db).expanduser()
        self.out_dir = Path(out_dir).expanduser().resolve()  # absolute: responses are scrubbed of it by prefix
        self.host = dict(host or {})
        self.defaults = dict(defaults or {})
        self.inputs_dir = Path(inputs_dir).expanduser().resolve() if inputs_dir else None
        self.any_path = any_path
        self.max_job_work, self.max_queued_per_key = max_job_work, max_queued_per_key
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.local()
        self._lock = threading.Lock()  # one writer at a time in this process
        self._work = threading.Event()  # set when a job is queued: wakes a waiting worker at once
        self._migrate()

    def _migrate(self) -> None:
        con = self._conn()
        con.executescript(_SCHEMA)
        have = {r["name"] for r in con.execute("PRAGMA table_info(jobs)")}
        for column, kind in _ADDED.items():
            if column not in have:
                con.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
        con.executescript(_INDEXES)

    # --- connections -------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        con = getattr(self._thread, "con", None)
        if con is None:  # one connection per thread: sqlite3 connections must not cross threads
            con = sqlite3.connect(self.db, timeout=30, isolation_level=None, check_same_thread=False)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no commit
            self._thread.con = con
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

    def submit(self, job: dict, *, owner: str = LOCAL_OWNER, idempotency_key: str | None = None,
               files: dict[str, Path] | None = None, meta: dict | None = None) -> JobRow:
        """Check a job and queue it; returns its row (the same row again for a known idempotency key).

        Args:
            job: `{"task": ..., inputs..., options...}` (job-scope options only).
            owner: who submits it (a key's id): only they see the job, and `job:<id>` inputs name only theirs.
            idempotency_key: a client's key, scoped to `owner`; a retried submit with it and the same
                request returns the first job.
            files: uploaded files by input name (moved into the job's `inputs/`; their paths go in the job).
            meta: what the front door wants kept with the job (e.g. the Videos API's fields).

        Raises:
            InputError: the job is not valid, names a path outside `inputs_dir`, or a `job:<id>` that
                is unknown or not completed (nothing is queued or kept).
            IdempotencyConflict: the key was used before with a different request.
            QueueFull: `owner` has `max_queued_per_key` jobs queued or running.

        Example:
            >>> store.submit({"task": "extend", "video": "job:job_ab12", "preset": "tiny"}).status
            'queued'
        """
        files = dict(files or {})
        digest = _request_hash(job, files, meta) if idempotency_key is not None else None
        key = f"{owner}:{idempotency_key}" if idempotency_key is not None else None
        if key is not None and (known := self._by_key(key, digest)) is not None:
            return known
        data = {**self.defaults, **{k: v for k, v in job.items() if v is not None}}
        kinds = {i.name: i.kind for i in task_inputs(data["task"])} if data.get("task") in JOB_TASKS else {}
        for name in files if kinds else ():
            if kinds.get(name) not in FILE_KINDS:
                raise InputError(f"an uploaded file is not an input of {data['task']}; upload only "
                                 f"{', '.join(k for k, v in kinds.items() if v in FILE_KINDS) or 'no files'}",
                                 param=name)
        data |= {name: str(path) for name, path in files.items()}
        parse_job(data, scopes=("job",), door="a request")
        if self._full(self._conn(), owner):  # before any file is placed: a full queue costs the server nothing
            raise self._queue_full()
        job_id = f"job_{uuid.uuid4().hex[:24]}"
        folder = self.folder(job_id)
        (folder / INPUTS).mkdir(parents=True)
        try:
            data = place_files(self, data, kinds, files, folder / INPUTS, owner)
            data = self._check(data, folder)
            return self._insert(job_id, data, owner, key, digest, meta or {})
        except BaseException:  # refused or interrupted: keep nothing of it (then re-raise)
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _check(self, data: dict, folder: Path) -> dict:
        """Every check of the job as the worker will run it (prepare: nothing loads, nothing is written),
        its work budget included; returns the job with its seed fixed, so a job run again after a
        restart makes the same video."""
        from mora.service.guards import check_work
        from mora.workflows.prepare import Hooks, prepare

        p = prepare({**data, **self.host, "out": str(folder / VIDEO_NAME), "overwrite": True}, Hooks(progress=False))
        check_work(p, self.max_job_work)
        return {**data, "seed": p.seed}  # prepare fixes every task's seed, a story's included

    def _full(self, con: sqlite3.Connection, owner: str) -> bool:
        """Whether `owner` has `max_queued_per_key` jobs queued or running."""
        if self.max_queued_per_key is None:
            return False
        marks = ", ".join("?" * len(ACTIVE))
        return con.execute(f"SELECT COUNT(*) FROM jobs WHERE owner = ? AND deleted = 0 AND status IN ({marks})",
                           (owner, *ACTIVE)).fetchone()[0] >= self.max_queued_per_key

    def _queue_full(self) -> QueueFull:
        return QueueFull(f"queue: this key has {self.max_queued_per_key} jobs queued or running, the server's limit "
                         "(--max-queued-per-key); wait for one to finish, or cancel one", retry_after=self.retry_after())

    def retry_after(self) -> int:
        """Seconds a caller with a full queue should wait: the mean length of the last completed jobs."""
        r = self._conn().execute("SELECT AVG(s) FROM (SELECT completed_at - started_at AS s FROM jobs WHERE "
                                 "status = 'completed' AND started_at IS NOT NULL ORDER BY n DESC LIMIT 20)").fetchone()
        return max(1, round(r[0])) if r and r[0] is not None else RETRY_AFTER_S

    def _insert(self, job_id: str, data: dict, owner: str, key: str | None, digest: str | None,
                meta: dict) -> JobRow:
        try:
            with self._write() as con:
                if self._full(con, owner):  # again in the transaction: concurrent submits of one key
                    raise self._queue_full()
                con.execute("INSERT INTO jobs (id, status, job, meta, created_at, idempotency_key, request_hash, owner) "
                            "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                            (job_id, json.dumps(data), json.dumps(meta), time.time(), key, digest, owner))
        except sqlite3.IntegrityError:  # the same key submitted twice at once: the first one wins
            known = self._by_key(key, digest) if key is not None else None
            if known is None:
                raise
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
            return known
        self._work.set()
        logger.info("queued %s (%s)", job_id, data["task"])
        return self.get(job_id)

    def _by_key(self, key: str, digest: str | None) -> JobRow | None:
        r = self._conn().execute("SELECT * FROM jobs WHERE idempotency_key = ? AND deleted = 0", (key,)).fetchone()
        if r is None:
            return None
        if r["request_hash"] != digest:  # Stripe's rule: a key names one request, not whatever comes with it
            raise IdempotencyConflict(f"this Idempotency-Key was used with a different request (job {r['id']}); "
                                      "send a new key for a new request", param="idempotency_key")
        return row_of(r)

    # --- reading -----------------------------------------------------------------------------------

    def get(self, job_id: str, owner: str | None = None) -> JobRow | None:
        """The job, or None (unknown, deleted, or with `owner` given, someone else's).

        Args:
            owner: the caller (a key's id); None: any owner (the server's own use: workers, recovery).
        """
        where, args = _owned("id = ? AND deleted = 0", [job_id], owner)
        r = self._conn().execute(f"SELECT * FROM jobs WHERE {where}", args).fetchone()
        return row_of(r) if r else None

    def list(self, *, after: str | None = None, limit: int = 20, order: str = "desc",
             owner: str | None = None) -> list[JobRow]:
        """Jobs in submit order (`desc`: newest first), starting after the job `after` (of `owner`'s, if given)."""
        if order not in ("asc", "desc"):
            raise InputError(f"{order!r} is not an order; pass asc or desc", param="order")
        where, args = _owned("deleted = 0", [], owner)
        if after is not None:
            mark, mark_args = _owned("id = ?", [after], owner)
            r = self._conn().execute(f"SELECT n FROM jobs WHERE {mark}", mark_args).fetchone()
            if r is None:
                raise InputError(f"{quote(after)} is not a job of this server; pass the id of the last "
                                 "job listed", param="after")
            where += " AND n < ?" if order == "desc" else " AND n > ?"
            args.append(r["n"])
        rows = self._conn().execute(f"SELECT * FROM jobs WHERE {where} ORDER BY n {order.upper()} LIMIT ?",
                                    (*args, int(limit))).fetchall()
        return [row_of(r) for r in rows]

    def events(self, job_id: str, after: int = 0) -> builtins.list[dict]:
        """The job's events with seq > after: `{"seq", "type", "data", "at"}`, in order."""
        rows = self._conn().execute("SELECT seq, type, data, at FROM events WHERE job_id = ? AND seq > ? ORDER BY seq",
                                    (job_id, after)).fetchall()
        return [{"seq": r["seq"], "type": r["type"], "data": json.loads(r["data"]), "at": r["at"]} for r in rows]

    def counts(self) -> dict[str, int]:
        """Jobs by status (deleted ones left out)."""
        rows = self._conn().execute("SELECT status, COUNT(*) AS c FROM jobs WHERE deleted = 0 GROUP BY status")
        return {s: 0 for s in STATUSES} | {r["status"]: r["c"] for r in rows}

    def durations(self) -> builtins.list[float]:
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
        self.clear_outputs(r["id"])
        return self.get(r["id"])

    def clear_outputs(self, job_id: str) -> None:
        """Empty a job's folder but for its `inputs/`: a job run again (a restart, a dead worker) starts
        from its inputs, never from what an earlier attempt left."""
        folder = self.folder(job_id)
        for item in folder.iterdir() if folder.is_dir() else ():
            if item.name != INPUTS:
                shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink(missing_ok=True)

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
        self._purge_if_deleted(job_id)

    def fail(self, job_id: str, error: str) -> None:
        """The job failed with a one-line error (a `failed` event)."""
        with self._write() as con:
            con.execute("UPDATE jobs SET status = 'failed', completed_at = ?, error = ? WHERE id = ?",
                        (time.time(), error, job_id))
            self._event(con, job_id, "failed", {"error": error})
        self._purge_if_deleted(job_id)

    def cancel(self, job_id: str, owner: str | None = None) -> JobRow:
        """Cancel a job: a queued one at once, a running one at its next step; a finished one stays as it is.

        Args:
            owner: the caller; None: any owner.

        Raises:
            InputError: no such job (or not `owner`'s).
        """
        with self._write() as con:
            where, args = _owned("id = ? AND deleted = 0", [job_id], owner)
            r = con.execute(f"SELECT status FROM jobs WHERE {where}", args).fetchone()
            if r is None:
                raise InputError(f"{quote(job_id)} is not a job of this server; pass the id of a job", param="job")
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
        self._purge_if_deleted(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        r = self._conn().execute("SELECT cancel_requested, deleted FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return r is None or bool(r["cancel_requested"] or r["deleted"])

    def delete(self, job_id: str, owner: str | None = None) -> bool:
        """Forget a job: its row, events and folder go now, or for a running job when its worker stops it.

        Args:
            owner: the caller; None: any owner.

        Returns:
            False when there was no such job (or not `owner`'s).
        """
        with self._write() as con:
            where, args = _owned("id = ? AND deleted = 0", [job_id], owner)
            r = con.execute(f"SELECT status FROM jobs WHERE {where}", args).fetchone()
            if r is None:
                return False
            if r["status"] == "in_progress":  # its worker still writes there: it stops at its next step
                con.execute("UPDATE jobs SET deleted = 1, cancel_requested = 1, idempotency_key = NULL WHERE id = ?",
                            (job_id,))
            else:
                self._purge(con, job_id)
        if r["status"] != "in_progress":
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
        return True

    @staticmethod
    def _purge(con: sqlite3.Connection, job_id: str) -> None:
        con.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
        con.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def _purge_if_deleted(self, job_id: str) -> None:
        """After a job stops: if it was deleted while it ran, its row, events and folder go now."""
        with self._write() as con:
            r = con.execute("SELECT deleted FROM jobs WHERE id = ?", (job_id,)).fetchone()
            gone = r is not None and bool(r["deleted"])
            if gone:
                self._purge(con, job_id)
        if gone:
            shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def is_deleted(self, job_id: str) -> bool:
        r = self._conn().execute("SELECT deleted FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return r is None or bool(r["deleted"])

    def recover(self) -> builtins.list[str]:
        """On start: jobs left in_progress by a killed server go back to the queue (cancelled if asked).

        Returns:
            The ids put back in the queue.
        """
        with self._write() as con:
            rows = con.execute("SELECT id, cancel_requested, deleted FROM jobs WHERE status = 'in_progress'").fetchall()
            back = [r["id"] for r in rows if not r["cancel_requested"]]
            for r in rows:
                if r["deleted"]:
                    self._purge(con, r["id"])
                elif r["cancel_requested"]:
                    self._mark_cancelled(con, r["id"])
        for r in rows:
            if r["deleted"]:
                shutil.rmtree(self.folder(r["id"]), ignore_errors=True)
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
        con = getattr(self._thread, "con", None)
        if con is not None:
            con.close()
            self._thread.con = None


def _owned(where: str, args: list, owner: str | None) -> tuple[str, list]:
    """A WHERE clause narrowed to `owner`'s jobs (None: anyone's)."""
    return (where, args) if owner is None else (f"{where} AND owner = ?", [*args, owner])


def _request_hash(job: dict, files: dict[str, Path], meta: dict | None) -> str:
    """What a request asked for (its job, its uploads' bytes, the front door's fields): an
    Idempotency-Key is bound to it."""
    h = hashlib.sha256(json.dumps([job, meta or {}], sort_keys=True, default=str).encode())
    for name in sorted(files):
        h.update(name.encode())
        with open(files[name], "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()

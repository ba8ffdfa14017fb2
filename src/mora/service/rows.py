"""What the job store holds: a job's row, and the two refusals that carry their own HTTP status."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from mora.errors import InputError

LOCAL_OWNER = ""  # the owner of every job on a server without keys (one person's machine)


class IdempotencyConflict(InputError):
    """An Idempotency-Key reused with a different request (HTTP 409)."""

    status, code = 409, "idempotency_key_reused"


class QueueFull(InputError):
    """The caller's key has as many jobs waiting or running as the server allows (HTTP 429).

    Attributes:
        retry_after: seconds after which a retry may find room (a typical job's length).
    """

    status, code = 429, "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


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
        owner: who made it (a key's id; "" on a server without keys): only they see it.
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
    owner: str = LOCAL_OWNER

    @property
    def task(self) -> str:
        return self.job["task"]

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")


def row_of(r: sqlite3.Row) -> JobRow:
    """A row of the `jobs` table as a JobRow."""
    return JobRow(id=r["id"], status=r["status"], progress=r["progress"], step=r["step"], error=r["error"],
                  job=json.loads(r["job"]), created_at=r["created_at"], started_at=r["started_at"],
                  completed_at=r["completed_at"], manifest=json.loads(r["manifest"]) if r["manifest"] else None,
                  video=r["video"], meta=json.loads(r["meta"]), attempts=r["attempts"],
                  cancel_requested=bool(r["cancel_requested"]), owner=r["owner"])

"""The native API: any job of the job model (every task, `story` included), its events and files.

- `POST /v1/jobs`: a JSON job like a `mora batch` line, or multipart/form-data with the job as the
  field `job` (JSON) and each file input as an upload named after it; `job:<id>` names an
  earlier job's video. 422 when the job model refuses it.
- `GET /v1/jobs`, `GET /v1/jobs/{id}` (status, current agent step, progress, manifest),
  `GET /v1/jobs/{id}/events` (Server-Sent Events), `GET /v1/jobs/{id}/files/{name}`,
  `DELETE /v1/jobs/{id}` (cancels a queued or running job).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from mora.errors import InputError
from mora.paths import is_inside
from mora.service.guards import public
from mora.service.http import (
    ApiError,
    check_upload,
    from_input_error,
    idempotency_key,
    last_event_id,
    owner,
    page_of_rows,
    public_row,
    read_body,
    request_body,
    save_upload,
    service,
    stored_row,
)
from mora.service.store import VIDEO_NAME

router = APIRouter(prefix="/v1/jobs")
END_EVENTS = ("done", "failed", "cancelled")
SSE_POLL_S = 0.25




def _jobs_schema() -> dict:
    """A job of any task (the job model's schema of each, job options only) as `POST /v1/jobs`'s body."""
    from mora.workflows.jobspec import JOB_TASKS, job_schema

    return {"oneOf": [job_schema(task) for task in JOB_TASKS]}


@router.post("", openapi_extra=request_body(_jobs_schema()))
async def submit(request: Request) -> dict:
    from mora.workflows.jobspec import JOB_TASKS, task_inputs
    from mora.workflows.tasks import FILE_KINDS

    svc = service(request)
    body = await read_body(request)
    job = body.fields
    if body.uploads or "job" in body.fields and isinstance(body.fields["job"], str):
        try:
            job = json.loads(body.fields.get("job") or "{}")
        except json.JSONDecodeError as e:
            raise ApiError(422, f"job: not valid JSON ({e}); send the job as a JSON object", param="job",
                           code="invalid_value") from None
    if not isinstance(job, dict):
        raise ApiError(422, "job: a JSON object is needed, like {\"task\": \"text-to-video\", \"prompt\": \"a fox\"}",
                       param="job", code="invalid_value")
    kinds = {i.name: i.kind for i in task_inputs(job["task"])} if job.get("task") in JOB_TASKS else {}
    files: dict[str, Path] = {}
    try:
        for name, upload in body.uploads.items():
            if name not in kinds or kinds[name] not in FILE_KINDS:
                raise ApiError(422, f"{name}: an upload is not a file input of {job.get('task')!r}; upload only "
                               f"{', '.join(k for k, v in kinds.items() if v != 'text') or 'no files'}",
                               param=name, code="invalid_value")
            files[name] = await save_upload(upload, svc.upload_dir, check_upload(name, upload, kinds[name]))
        row = await run_in_threadpool(svc.store.submit, job, owner=owner(request),
                                      idempotency_key=idempotency_key(request), files=files)
    except InputError as e:
        raise from_input_error(e, 422) from None
    finally:
        for path in files.values():
            path.unlink(missing_ok=True)
    return public_row(request, row)


# The read routes are `async def`: a read of the store takes tens of microseconds, while in the thread
# pool (plain `def`) each one waited its turn at the GIL behind the pool's other threads (p99 tens of
# ms with 50 clients). Writes stay in the pool: they may wait on SQLite's lock.
@router.get("")
async def list_jobs(request: Request, after: str | None = None, limit: int = 20, order: str = "desc") -> dict:
    rows, more = page_of_rows(request, after, limit, order)
    return {"object": "list", "data": [public_row(request, r) for r in rows], "has_more": more}


@router.get("/{job_id}")
async def get(request: Request, job_id: str) -> dict:
    return public_row(request, stored_row(request, job_id, "job"))


@router.delete("/{job_id}")
def cancel(request: Request, job_id: str) -> dict:
    stored_row(request, job_id, "job")
    return public_row(request, service(request).store.cancel(job_id, owner=owner(request)))


@router.get("/{job_id}/files/{name:path}")
def file(request: Request, job_id: str, name: str) -> FileResponse:
    stored_row(request, job_id, "job")
    folder = service(request).store.folder(job_id)
    path = (folder / name).resolve()
    if not is_inside(path, folder) or not path.is_file():  # only the job's own folder, no `..`
        raise ApiError(404, f"name: {name!r} is not a file of job {job_id}; the manifest lists them", param="name",
                       code="not_found")
    return FileResponse(path)


@router.get("/{job_id}/events")
async def events(request: Request, job_id: str) -> StreamingResponse:
    stored_row(request, job_id, "job")
    after = last_event_id(request)
    return StreamingResponse(_stream(request, job_id, after), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(request: Request, job_id: str, after: int) -> AsyncIterator[str]:
    """One SSE event per stored event (id = seq, so a client resumes with Last-Event-ID), until the end."""
    store = service(request).store
    folder = store.folder(job_id)
    while True:
        found = await run_in_threadpool(store.events, job_id, after)
        for event in found:
            after = event["seq"]
            data = public(event["data"], job_id, folder)
            if event["type"] == "done" and event["data"].get("video"):  # the video as the URL that serves it
                data["video"] = f"{str(request.base_url).rstrip('/')}{router.prefix}/{job_id}/files/{VIDEO_NAME}"
            data = json.dumps(data)
            yield f"id: {event['seq']}\nevent: {event['type']}\ndata: {data}\n\n"
            if event["type"] in END_EVENTS:
                return
        if await request.is_disconnected():
            return
        row = store.get(job_id)
        if row is None:  # deleted meanwhile
            return
        await asyncio.sleep(SSE_POLL_S)

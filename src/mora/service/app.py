"""The HTTP service of `mora serve` (FastAPI): routes, auth, errors, health, metrics, the page.

`build_service` makes the store, recovers its queue, starts the warm worker and returns the app;
`mora serve` runs it with uvicorn. The routes live beside this file: `videos.py` (the OpenAI
Videos API shape) and `jobs.py` (the native API). Tests build it the same way.

Example:
    >>> service = build_service(db="jobs.db", out_dir="outputs/serve", defaults={"preset": "tiny"})
    >>> uvicorn.run(service.app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mora.errors import InputError, ModelUnavailableError
from mora.service import jobs, videos
from mora.service.guards import MAX_QUEUED_PER_KEY, WORK_FACTOR
from mora.service.http import ApiError, NoNulInPath, error_response, from_input_error
from mora.service.security import BearerGate, BodyLimit, HostGate
from mora.service.store import STATUSES, JobStore
from mora.service.worker import Worker

if TYPE_CHECKING:
    from mora.service.ray_worker import RayWorker

logger = logging.getLogger(__name__)


@dataclass
class Service:
    """The running service's parts (the app keeps it as `app.state.service`)."""

    app: FastAPI
    store: JobStore
    worker: Worker | RayWorker
    api_keys: frozenset[str]
    max_bytes: int
    upload_dir: Path


def build_service(*, db: str | Path, out_dir: str | Path, host: dict | None = None, defaults: dict | None = None,
                  api_keys: frozenset[str] = frozenset(), max_upload_mb: int = 200,
                  inputs_dir: str | Path | None = None, ui: bool = False, start_worker: bool = True,
                  worker_process: bool = False, ray: str | bool | None = None,
                  ray_workers: int | None = None, allowed_hosts: tuple[str, ...] = (),
                  max_job_work: float | None = WORK_FACTOR, max_queued_per_key: int | None = MAX_QUEUED_PER_KEY
                  ) -> Service:
    """Make the store (recovering jobs a killed server left running), the worker and the app.

    Args:
        db, out_dir: the queue's SQLite file and the jobs' folders.
        host: host options every job runs with (device, dtype, profile, preset_file, llm_config, adapter).
        defaults: job options filled in when a request omits them (`{"preset": "tiny"}`).
        api_keys: bearer tokens; empty: no auth (loopback only, `mora serve` checks).
        max_upload_mb: the largest request body and upload.
        inputs_dir: a folder whose files jobs may name by path.
        ui: mount the web page at /ui (needs gradio).
        start_worker: start the worker thread (tests of the HTTP side alone pass False).
        worker_process: run the jobs in a child process (models warm there) rather than in a thread
            of this one, so a job's Python work never delays an HTTP answer (`mora serve`'s default).
        ray: run the jobs on a Ray actor pool (`mora batch --ray`'s): True for `$RAY_ADDRESS` or a new
            local instance, or a cluster address.
        ray_workers: with `ray`, this many CPU actors (default: one actor per GPU).
        allowed_hosts: names besides loopback that Host and Origin may carry (a reverse proxy's).
        max_job_work: a job may cost this many times its preset's own job (None: no budget).
        max_queued_per_key: jobs one key may have queued or running (None: no limit).

    Raises:
        InputError: `ray_workers` without `ray`, Ray not installed or its cluster unreachable.
    """
    if ray_workers is not None and not ray:  # before anything is written
        raise InputError(f"--workers: {ray_workers} needs --ray; without Ray one worker runs the jobs (add --ray, "
                         "or drop --workers)")
    store = JobStore(db, out_dir, host=host, defaults=defaults, inputs_dir=inputs_dir, max_job_work=max_job_work,
                     max_queued_per_key=max_queued_per_key)
    store.recover()
    worker = _worker(store, host, worker_process, ray, ray_workers)
    app = FastAPI(title="Mora", summary="Multi-agent video generation: the OpenAI Videos API shape and Mora's jobs",
                  version="0.1.0")
    service = Service(app=app, store=store, worker=worker, api_keys=frozenset(api_keys),
                      max_bytes=max_upload_mb * 1024 * 1024, upload_dir=store.out_dir / ".uploads")
    app.state.service = service
    _errors(app)
    # outermost first (add_middleware wraps): who may call, with which key, how much they may send
    app.add_middleware(BodyLimit, max_bytes=service.max_bytes)
    app.add_middleware(BearerGate, keys=service.api_keys)
    app.add_middleware(HostGate, allowed=allowed_hosts, on=not api_keys or bool(allowed_hosts))
    app.include_router(videos.router)
    app.include_router(jobs.router)
    _info_routes(app, service)
    from mora.mcp.transports import mount_mcp  # /mcp: the tasks as MCP tools (streamable HTTP), same auth

    mount_mcp(app, store, preset=(defaults or {}).get("preset"))
    if ui:
        _mount_ui(app, service, host or {}, defaults or {})
    if start_worker:
        worker.start()
    return service


def _worker(store: JobStore, host: dict | None, process: bool, ray: str | bool | None,
            workers: int | None) -> Worker | RayWorker:
    """The service's worker: a thread or a warm child process here, or a Ray actor pool."""
    if not ray:
        return Worker(store, host, process=process)
    from mora.service.ray_worker import RayWorker

    return RayWorker(store, host, address=None if ray is True else str(ray), workers=workers)


def _errors(app: FastAPI) -> None:
    """Every error in OpenAI's shape: the caller's mistakes 4xx naming the field, anything else a JSON 500."""
    app.add_middleware(NoNulInPath)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return e.response()

    @app.exception_handler(InputError)
    async def input_error(request: Request, e: InputError):
        return from_input_error(e).response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path"))
        return error_response(422, f"{where or 'request'}: {first.get('msg', 'invalid')}", param=where or None,
                              code="invalid_value")

    @app.exception_handler(ModelUnavailableError)
    async def model_unavailable(request: Request, e: ModelUnavailableError):
        # the request named (or defaulted to) a preset this server cannot load: the command line's line
        # (exit 2 there), naming the models; the Videos API calls the preset `model`
        param = "model" if request.url.path.startswith(videos.router.prefix) else "preset"
        return error_response(400, str(e), param=param, code="model_unavailable")

    @app.exception_handler(Exception)
    async def server_error(request: Request, e: Exception):
        # Starlette re-raises after this answer, so the server (uvicorn) logs the traceback once
        return error_response(500, f"server: {type(e).__name__} while answering {request.method} "
                              f"{request.url.path}; the server's log has the traceback", code="server_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        message = e.detail if isinstance(e.detail, str) else str(e.detail)
        if e.status_code == 404:
            message = f"path: {request.url.path} is not a route of this server; see docs/serve.md"
        return error_response(e.status_code, message, code="not_found" if e.status_code == 404 else None)


def _info_routes(app: FastAPI, service: Service) -> None:
    @app.get("/healthz")
    def healthz() -> dict:
        counts = service.store.counts()
        return {"status": "ok" if service.worker.alive else "degraded", "worker": service.worker.alive,
                "queued": counts["queued"], "in_progress": counts["in_progress"]}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        return prometheus_text(service.store)

    @app.get("/v1/presets")
    def presets() -> dict:
        return {"object": "list", "data": model_objects(service.store.host.get("preset_file"))}


def prometheus_text(store: JobStore) -> str:
    """Queue length, jobs by status and job seconds in Prometheus' text format.

    Hand-written: three metrics in a documented text format do not justify the prometheus_client
    dependency, and these values live in SQLite (shared with a restarted process), not in memory.
    """
    counts, seconds = store.counts(), store.durations()
    lines = ["# HELP mora_queue_length Jobs waiting for a worker.", "# TYPE mora_queue_length gauge",
             f"mora_queue_length {counts['queued']}",
             "# HELP mora_jobs Jobs by status.", "# TYPE mora_jobs gauge"]
    lines += [f'mora_jobs{{status="{s}"}} {counts[s]}' for s in STATUSES]
    lines += ["# HELP mora_job_seconds Seconds from start to completion of completed jobs.",
              "# TYPE mora_job_seconds summary", f"mora_job_seconds_count {len(seconds)}",
              f"mora_job_seconds_sum {sum(seconds):.3f}"]
    return "\n".join(lines) + "\n"


def model_objects(preset_file: str | None) -> list[dict]:
    """Every preset as the Videos API's `model`: name, description, default seconds and size."""
    from mora.config import load_presets
    from mora.workflows.prepare import default_seconds

    rows = []
    for p in load_presets(preset_file).values():
        s = p.spec("image_to_video").settings
        rows.append({"id": p.name, "object": "model", "owned_by": "mora", "description": p.description,
                     "capabilities": sorted(p.capabilities), "seconds": str(max(1, round(default_seconds(p, {})))),
                     "size": f"{s.width}x{s.height}", "models": p.models()})
    return rows


def _mount_ui(app: FastAPI, service: Service, host: dict, defaults: dict) -> None:
    """The web page at /ui when gradio is installed: its jobs go to the service's queue (the page follows
    their events). It takes only files gradio's /upload received and serves only the copies of its jobs'
    files in gradio's cache: nothing by path, never `<out_dir>` or the database."""
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        logger.warning("gradio is not installed: no web page at /ui (pip install -e \".[ui]\")")
        return
    import gradio as gr

    from mora.ui import App

    page = App(output_root=service.store.out_dir / "ui", shared={**defaults, **host}, store=service.store)
    db = service.store.db
    blocks = page.build()
    gr.mount_gradio_app(app, blocks, path="/ui", **page.file_access(
        service.store.out_dir, db, *(db.with_name(db.name + end) for end in ("-wal", "-shm", "-journal"))))
    # gradio checks that an input's file is one its /upload received only once the Blocks has launched,
    # and mount_gradio_app never marks it so (a forged FileData path would be copied in): mark it here,
    # as launch() does.
    blocks.has_launched = True

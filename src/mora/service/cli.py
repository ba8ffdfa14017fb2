"""`mora serve`: its parser (argparse only: `mora --help` imports nothing heavy) and its runner."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mora.errors import InputError

logger = logging.getLogger(__name__)

HOST_SKIP = ("out", "overwrite", "resume")  # per job, decided by the service itself


def add_serve_parser(sub: Any, parsers: Any) -> None:
    """Add the `serve` subcommand to `mora`'s subparsers.

    Args:
        sub: the subparsers of `mora.cli_parsers.build_parser`.
        parsers: the `mora.cli_parsers` module itself (its flag helpers, derived from the job
            model): passed in, because importing it here would make an import cycle.
    """
    from mora.cli_flags import positive_float
    from mora.service.guards import MAX_QUEUED_PER_KEY, WORK_FACTOR
    from mora.workflows.jobspec import OPTIONS

    add_job_options, add_option = parsers.add_job_options, parsers.add_option
    output_flags, positive_int = parsers.output_flags, parsers.positive_int

    p = sub.add_parser("serve", help="Serve Mora over HTTP: the OpenAI Videos API shape, /v1/jobs, a durable queue.",
                       description="An HTTP service with a durable job queue (SQLite): the OpenAI Videos API "
                       "(client.videos of the openai package, base_url http://HOST:PORT/v1), the native /v1/jobs "
                       "API for every task, Server-Sent Events, /metrics and the web page at /ui. Needs the serve "
                       "extra: pip install -e \".[serve]\". See docs/serve.md.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                   "any other needs --api-key-file)")
    p.add_argument("--port", type=positive_int, default=8000, help="port (default 8000)")
    p.add_argument("--out-dir", default="outputs/serve", help="one folder per job: uploads, video, manifest, "
                   "artifacts (default outputs/serve)")
    p.add_argument("--db", metavar="PATH", help="the job queue's SQLite file (default OUT_DIR.db, beside the "
                   "jobs' folder, never inside a served one); a restart on the same file runs every accepted job")
    p.add_argument("--api-key-file", metavar="FILE", help="bearer tokens, one per line: every request but "
                   "/healthz needs one (required for a --host other than loopback)")
    p.add_argument("--max-upload-mb", type=positive_int, default=200, metavar="N",
                   help="largest upload in MB (default 200; larger: 413)")
    p.add_argument("--inputs-dir", metavar="DIR", help="a folder on the server whose files jobs may name by path "
                   "(other paths are refused)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name besides 127.0.0.1/localhost that requests' Host and Origin may carry (the name "
                   "a reverse proxy serves); repeatable. Without keys, or with this flag, others get 403")
    p.add_argument("--max-job-work", type=positive_float, default=WORK_FACTOR, metavar="X",
                   help=f"refuse a job costing more than X times its preset's own job, counted as pixels x frames x "
                   f"steps x candidates (default {WORK_FACTOR:g})")
    p.add_argument("--max-queued-per-key", type=positive_int, default=MAX_QUEUED_PER_KEY, metavar="N",
                   help=f"jobs one key (or, without keys, the one local user) may have queued or running; more: 429 "
                   f"with Retry-After (default {MAX_QUEUED_PER_KEY})")
    p.add_argument("--no-ui", action="store_true", help="do not mount the web page at /ui")
    p.add_argument("--thread-worker", action="store_true", help="run jobs in a thread of the server process "
                   "(default: one warm child process, so HTTP answers never wait on a job's Python work)")
    p.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="run the jobs on a Ray actor pool, as mora batch --ray (ADDRESS, e.g. auto or HOST:6379; "
                   "none: a local instance). Needs the ray extra: pip install -e \".[ray]\"")
    p.add_argument("--workers", type=positive_int, metavar="N", help="with --ray: N CPU actors (default: one "
                   "actor per GPU)")
    add_option(p, OPTIONS["preset"])  # the default preset of requests that name none
    add_job_options(p, None, scopes=("host",), skip=HOST_SKIP, title="for every job of the service")
    output_flags(p, "quiet", "verbose", "debug")


def is_loopback(host: str) -> bool:
    """127.0.0.1, ::1, localhost: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_api_keys(path: str | Path) -> frozenset[str]:
    """The bearer tokens of `--api-key-file`: one per line, blank lines and `#` comments skipped."""
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--api-key-file: {str(path)!r} is not readable ({e.__class__.__name__}); pass a text "
                         "file with one key per line") from None
    keys = frozenset(s.strip() for s in lines if s.strip() and not s.strip().startswith("#"))
    if not keys:
        raise InputError(f"--api-key-file: {str(path)!r} holds no key; write one key per line")
    return keys


def default_db(out_dir: Path) -> Path:
    """`OUT_DIR.db` beside the jobs' folder: nothing that serves files from OUT_DIR can reach it.

    A queue of an older release (`OUT_DIR/jobs.db`) is moved there once, with its WAL files.
    """
    new, old = out_dir.with_name(out_dir.name + ".db"), out_dir / "jobs.db"
    if old.is_file() and not new.exists():
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{old}{suffix}").is_file():
                Path(f"{old}{suffix}").rename(f"{new}{suffix}")
        logger.warning("moved the job queue %s to %s (outside the jobs' folder)", old, new)
    return new


def run_serve(args: argparse.Namespace, announce: Callable[[str], None] | None = None) -> int:
    """Check the options, recover the queue, start the worker and serve until stopped.

    Args:
        args: `mora serve`'s parsed options.
        announce: shows the start line (where the service listens); the `mora` command prints it to
            stderr, a library caller gets it as an INFO log line.
    """
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"serve: {', '.join(missing)} not installed; install the serve extra: "
                         "pip install -e \".[serve]\"")
    keys = read_api_keys(args.api_key_file) if args.api_key_file else frozenset()
    if not keys and not is_loopback(args.host):
        raise InputError(f"--host: {args.host} lets other machines connect; pass --api-key-file FILE (bearer "
                         "tokens) too, or serve on 127.0.0.1")
    from mora.workflows.jobspec import OPTIONS

    host = {k: getattr(args, k) for k, o in OPTIONS.items()
            if o.scope == "host" and k not in HOST_SKIP and getattr(args, k, None) is not None}
    import uvicorn

    from mora.service.app import build_service

    out_dir = Path(args.out_dir)
    service = build_service(db=args.db or default_db(out_dir), out_dir=out_dir, host=host,
                            defaults={"preset": args.preset} if args.preset else {}, api_keys=keys,
                            max_upload_mb=args.max_upload_mb, inputs_dir=args.inputs_dir, ui=not args.no_ui,
                            worker_process=not args.thread_worker, ray=args.ray, ray_workers=args.workers,
                            allowed_hosts=tuple(args.allowed_host), max_job_work=args.max_job_work,
                            max_queued_per_key=args.max_queued_per_key)
    line = f"mora serve on http://{args.host}:{args.port}/v1 (jobs in {service.store.db})"
    (announce or logger.info)(line)  # where to reach it is information, not a warning
    try:
        uvicorn.run(service.app, host=args.host, port=args.port, log_level="warning", access_log=False)
    finally:
        service.worker.stop(timeout=1.0)
    return 0

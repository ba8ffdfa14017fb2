"""The two ways Mora's MCP server is reached: stdio (`mora mcp`) and streamable HTTP (`/mcp` on `mora serve`).

stdio: the server runs on the caller's machine, so image and video inputs may be local paths and
videos come back as file URIs. The job store lives in `<out-dir>/mcp.db`; the worker runs jobs in a
child process. The SDK's stdio transport points fd 1 at stderr while it serves (the child inherits
that), so a library that prints cannot corrupt the protocol.

HTTP: `http_app` builds the ASGI app for a store the service owns (the service runs the worker);
inputs are `job:<id>` references and videos come back as the service's URLs. Its session manager
must run for the app's lifetime (`async with mcp_http.lifespan():` in the service's lifespan).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mora.errors import InputError

logger = logging.getLogger(__name__)


def run_stdio(*, out_dir: str | Path, preset: str | None = None, host: dict | None = None) -> None:
    """Serve MCP over stdin/stdout until the client closes stdin (`mora mcp`).

    Args:
        out_dir: jobs go to `<out_dir>/<job id>/`; the store is `<out_dir>/mcp.db`.
        preset: the task tools' default preset.
        host: host-scope options for every job (device, dtype, profile, llm_config, adapter, preset_file).

    Example:
        >>> run_stdio(out_dir="outputs/mcp", preset="tiny")  # doctest: +SKIP
    """
    import anyio
    from mcp.server.stdio import stdio_server

    from mora.mcp.server import MoraMcp, file_links
    from mora.service.store import JobStore
    from mora.service.worker import Worker

    out = Path(out_dir).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--out-dir: {str(out)!r} cannot be created ({type(e).__name__}); pass a writable "
                         "folder") from None
    store = JobStore(out / "mcp.db", out, host=host, defaults={"preset": preset} if preset else None,
                     any_path=True)  # stdio: the caller's machine is this one, its paths are allowed
    store.recover()  # jobs a killed server left running are queued again
    # jobs run in a child process (models warm there): the protocol loop answers at once while a job
    # holds its GIL, and a crash in a model cannot take the server down
    worker = Worker(store, dict(host or {}), process=True)
    server = MoraMcp(store, file_links(out), any_path=True, preset=preset).server()

    async def serve() -> None:
        async with stdio_server() as (read, write):
            worker.start()  # now: fd 1 points at stderr, and the worker's child process inherits that
            await server.run(read, write, server.create_initialization_options())

    logger.info("mora mcp: serving over stdio; jobs in %s", out)
    try:
        anyio.run(serve)
    finally:
        worker.stop()


@dataclass
class McpHttp:
    """The MCP endpoint of the service.

    Attributes:
        app: the ASGI app of the endpoint (mount it at `/mcp`, e.g. `Route("/mcp", endpoint=app)`).
        lifespan: enter for the service's lifetime (runs the SDK's session manager).
    """

    app: Any
    lifespan: Callable[[], AbstractAsyncContextManager[Any]]


def http_app(store: Any, *, base_url: str | None = None, preset: str | None = None) -> McpHttp:
    """The streamable-HTTP MCP endpoint over the service's store (stateless: any request stands alone).

    Args:
        store: the service's `JobStore` (its worker runs the jobs).
        base_url: the service's URL for video links; None: the URL each request came in on.
        preset: the task tools' default preset (shown in the schemas; the store fills it in).

    The SDK's own DNS-rebinding check is off: the service checks Host and Origin of every route,
    `/mcp` included, with one rule (`mora.service.security.HostGate`), and sets each request's owner.

    Example:
        >>> mcp_http = http_app(store, preset="tiny")  # doctest: +SKIP
        >>> app.router.routes.append(Route("/mcp", endpoint=mcp_http.app))  # doctest: +SKIP
    """
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
    from mcp.server.transport_security import TransportSecuritySettings

    from mora.mcp.server import MoraMcp, url_links

    server = MoraMcp(store, url_links(store, base_url), any_path=False, preset=preset).server()
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)  # the service's HostGate does it
    manager = StreamableHTTPSessionManager(app=server, stateless=True, security_settings=security)
    return McpHttp(app=StreamableHTTPASGIApp(manager), lifespan=manager.run)


def mount_mcp(app: Any, store: Any, *, preset: str | None = None, path: str = "/mcp") -> bool:
    """Serve MCP at `path` of a Starlette/FastAPI app, its session manager run by the app's lifespan.

    The app's middleware (the service's Host/Origin check, bearer keys, body limit) applies to it as to
    every route.

    Returns:
        False when the MCP SDK is not installed (the service runs without `/mcp`).

    Example:
        >>> mount_mcp(service.app, service.store, preset="tiny")  # doctest: +SKIP
        True
    """
    import importlib.util

    if importlib.util.find_spec("mcp") is None:
        logger.warning("/mcp is off: the MCP SDK is not installed (pip install -e \".[mcp]\")")
        return False
    from starlette.routing import Route

    endpoint = http_app(store, preset=preset)
    app.router.routes.append(Route(path, endpoint=endpoint.app))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(parent: Any) -> AsyncIterator[Any]:
        async with endpoint.lifespan(), inner(parent) as state:
            yield state

    app.router.lifespan_context = lifespan
    return True

"""Who may call the service, and how much they may send: the gates every request passes first.

Three ASGI middlewares, outermost first (docs/serve.md, "Security", states the model):
- `HostGate`: on a server without keys (one person's machine) or with `--allowed-host`, the Host
  header must name this machine or an allowed host, and an Origin header, when sent, too: a web page
  the user visits cannot post a form to the service, and a DNS-rebinding page cannot read it. The
  same rule covers every route, `/mcp` and `/ui` included.
- `BearerGate`: with `--api-key-file`, every route but /healthz needs a key; the request's
  `state.owner` is that key's id (`owner_of`), "" without keys. Jobs belong to their owner.
- `BodyLimit`: a body is counted as it streams, chunked or not: past `--max-upload-mb` it is a 413
  at once, before the rest is read (a Content-Length over the limit is refused before any byte).

Hand-written as pure ASGI (no BaseHTTPMiddleware): they must see `receive` to count a body, and
they cost microseconds on the submit/status path the p99 goal measures.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from mora.service.http import ApiError, error_response

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
PUBLIC_PATHS = ("/healthz",)  # for load balancers: says nothing about jobs


def owner_of(key: str) -> str:
    """A key's id, the owner of the jobs it makes: stored with jobs instead of the key itself."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def host_name(value: str) -> str:
    """The host of a Host header or an Origin (`[::1]:8000` -> `::1`, `http://localhost:8000` -> `localhost`)."""
    if "://" in value:
        return (urlsplit(value).hostname or "").lower()
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


async def _send_error(scope: dict, send: Any, response: Any) -> None:
    if scope["type"] == "websocket":  # a websocket is refused by closing it (policy violation)
        await send({"type": "websocket.close", "code": 1008})
    else:
        await response(scope, None, send)


class HostGate:
    """Refuse a request whose Host or Origin is not this machine or an allowed host (403).

    Args:
        app: the ASGI app.
        allowed: extra host names (`--allowed-host`, e.g. the name a reverse proxy serves).
        on: check at all (a keyed server without `--allowed-host` is reached under names it cannot know).
    """

    def __init__(self, app: Any, *, allowed: Iterable[str] = (), on: bool = True):
        self.app, self.on = app, on
        self.allowed = frozenset(LOOPBACK_HOSTS) | {host_name(h) for h in allowed}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.on and scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ())
                       if k in (b"host", b"origin")}
            host, origin = headers.get("host", ""), headers.get("origin")
            if host_name(host) not in self.allowed:
                return await _send_error(scope, send, error_response(
                    403, f"host: {host[:80]!r} is not a name of this server; reach it as 127.0.0.1 or localhost, or "
                    "start it with --allowed-host NAME", param="host", code="host_not_allowed"))
            if origin is not None and host_name(origin) not in self.allowed:
                return await _send_error(scope, send, error_response(
                    403, f"origin: {origin[:80]!r} may not call this server (a page of another site); call it from "
                    "its own pages, or start it with --allowed-host for that site", param="origin",
                    code="origin_not_allowed"))
        await self.app(scope, receive, send)


class BearerGate:
    """With keys: every route but /healthz needs `Authorization: Bearer <key>`; sets `state.owner`.

    Args:
        app: the ASGI app.
        keys: the bearer tokens (empty: no auth; every request's owner is "").
    """

    def __init__(self, app: Any, *, keys: frozenset[str]):
        self.app, self.keys = app, [k.encode() for k in keys]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        owner = ""
        if self.keys and scope["path"] not in PUBLIC_PATHS:
            header = dict(scope.get("headers", ())).get(b"authorization", b"")
            token = header[7:].strip() if header[:7].lower() == b"bearer " else b""
            # compare with every key in constant time: no timing hint of how much of a key matched
            if not any(hmac.compare_digest(token, k) for k in self.keys):
                return await _send_error(scope, send, error_response(
                    401, "authorization: missing or unknown API key; send Authorization: Bearer <a key of the "
                    "server's --api-key-file>", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}))
            owner = owner_of(token.decode("latin-1"))
        scope.setdefault("state", {})["owner"] = owner
        await self.app(scope, receive, send)


class BodyTooLarge(ApiError):
    """A request body past the server's limit (raised from `receive`, answered 413)."""

    def __init__(self, size: int, max_bytes: int):
        super().__init__(413, f"body: {size} bytes or more is larger than this server's limit of {max_bytes} bytes; "
                         "send a smaller file (the server's --max-upload-mb)", code="too_large")


class BodyLimit:
    """Count a request's body as it arrives; past `max_bytes`, stop reading and answer 413.

    The route's parser (JSON, multipart) sees the error from `receive` and stops; a multipart
    upload spooled so far is in anonymous temporary files that go when closed.
    """

    def __init__(self, app: Any, *, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", ())).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await _send_error(scope, send, BodyTooLarge(int(length), self.max_bytes).response())
        seen, started = 0, False

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(seen, self.max_bytes)
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as e:  # a sub-app (the page, /mcp) let it through: answer it here
            if started:
                raise
            await _send_error(scope, send, e.response())

"""What every route of the service shares: OpenAI-shaped errors, request bodies, uploads.

Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}` so the `openai`
client raises its usual exceptions (BadRequestError, AuthenticationError, ...) with Mora's
one-line message.
"""

from __future__ import annotations

import json
import math
import mimetypes
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from mora.errors import InputError
from mora.validation import input_error, quote

# Upload types by input kind: a suffix or a content type outside these is 415 (the file itself is
# then checked by the job model's media checks).
UPLOAD_SUFFIXES = {"image": (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"),
                   "video": (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"),
                   "storyboard": (".json",)}
_GENERIC_TYPES = ("application/octet-stream", "")
_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
          404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
          415: "invalid_request_error", 422: "invalid_request_error", 429: "requests", 500: "server_error",
          503: "server_error"}


class ApiError(Exception):
    """An HTTP error in OpenAI's shape.

    Args:
        status: the HTTP status.
        message: one line (Mora's `FIELD: VALUE problem; fix`).
        param: the field at fault, if any.
        code: a machine-readable code (`invalid_value`, `not_found`, ...).
    """

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, param=self.param, code=self.code, headers=self.headers)


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class NoNulInPath:
    """400 for a URL path holding a NUL (`%00`): no job id or file name has one, and the file system
    raises ValueError on it (a 500) wherever a path parameter reaches it. Pure ASGI: no per-request cost
    of BaseHTTPMiddleware on the hot routes."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "\0" in scope.get("path", ""):
            response = error_response(400, "path: holds a NUL character (%00), which no id or file name has; "
                                      "remove it", param="path", code="invalid_value")
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


def from_input_error(e: InputError, status: int = 400, renames: dict[str, str] | None = None) -> ApiError:
    """An InputError as an ApiError naming its field: OpenAI's `param` is the error's own (`e.param`), the
    message names it as a request does (`num_frames: ...`). An error with its own `status`, such as the
    store's `QueueFull` 429 or `IdempotencyConflict` 409, keeps it.

    `renames` maps a job field to the API field behind it (the Videos API's `width` -> `size`): the
    param is the API's and the message opens with it (`size: width: 100 is not a multiple of 16`).
    """
    from mora.service.guards import public_text

    status = getattr(e, "status", status)
    retry = getattr(e, "retry_after", None)
    message = public_text(str(e)) or ""  # the caller learns no server path (a presets folder, a model dir)
    param = e.param
    if renames and param in renames:
        param = renames[param]
        message = f"{param}: {message}"
    return ApiError(status, message, param=param, code=getattr(e, "code", "invalid_value"),
                    headers={"Retry-After": str(retry)} if retry is not None else None)


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, f"{what}: {quote(ident)} is not a {what} of this server; list them with GET /v1/{what}s",
                    param=what, code="not_found")


@dataclass
class Body:
    """A request body, JSON or form: its fields and its uploads (saved to disk, checked for type)."""

    fields: dict[str, Any] = field(default_factory=dict)
    uploads: dict[str, Any] = field(default_factory=dict)  # name -> UploadFile (not yet saved)
    form: bool = False  # a form's fields are text, parsed to their types (`coerce`); JSON's are typed already

    def pop(self, name: str, default: Any = None) -> Any:
        return self.fields.pop(name, default)


async def read_body(request: Request) -> Body:
    """The fields and uploads of a JSON or multipart/form-data body (its size is limited as it streams:
    `mora.service.security.BodyLimit`)."""
    length = request.headers.get("content-length")
    kind = request.headers.get("content-type", "")
    if kind.startswith("application/json"):
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"body: not valid JSON ({e}); send a JSON object", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "body: a JSON object is needed, like {\"prompt\": \"a fox\"}", code="invalid_json")
        return Body(fields=data)
    if kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form(max_files=16, max_fields=200)
        body = Body(form=True)
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                body.uploads[name] = value
            else:
                body.fields[name] = value
        return body
    if not kind and not length:
        return Body()
    raise ApiError(415, f"content-type: {quote(kind)} is not accepted; send application/json or multipart/form-data",
                   param="content-type", code="unsupported_media_type")


def service(request: Request) -> Any:
    """The running service (its store, limits and settings) of a request."""
    return request.app.state.service


def owner(request: Request) -> str:
    """Who calls: the id of the request's key (`mora.service.security.BearerGate`), "" without keys."""
    return getattr(request.state, "owner", "")


def stored_row(request: Request, job_id: str, what: str) -> Any:
    """The caller's row of `job_id`, or a 404 naming it as a `what` (job, video): another key's job
    is not found, exactly as an unknown one."""
    row = service(request).store.get(job_id, owner=owner(request))
    if row is None:
        raise not_found(what, job_id)
    return row


def public_row(request: Request, row: Any) -> dict[str, Any]:
    """A job row as the native API shows it (JSON-ready): no server path (`guards.public`), its
    files as `job:<id>/<name>`."""
    from mora.service.guards import public, public_text

    folder = service(request).store.folder(row.id)
    return {"id": row.id, "object": "job", "status": row.status, "progress": row.progress, "step": row.step,
            "error": public_text(row.error, row.id, folder), "task": row.task,
            "job": public(row.job, row.id, folder), "created_at": row.created_at, "started_at": row.started_at,
            "completed_at": row.completed_at, "manifest": public(row.manifest, row.id, folder),
            "video": row.video is not None, "attempts": row.attempts}


def page_of_rows(request: Request, after: str | None, limit: int, order: str) -> tuple[list, bool]:
    """(up to `limit` rows of the store after `after`, whether more follow) for a list route."""
    if not 1 <= limit <= 100:
        raise ApiError(400, f"limit: {limit} is out of range; pass 1 to 100", param="limit", code="invalid_value")
    try:
        rows = service(request).store.list(after=after, limit=limit + 1, order=order, owner=owner(request))
    except InputError as e:
        raise from_input_error(e) from None
    return rows[:limit], len(rows) > limit


def check_upload(name: str, upload: Any, kind: str) -> str:
    """The suffix to keep for an upload of `kind`, or 415 when its name and type say it is something else."""
    suffix = Path(upload.filename or "").suffix.lower()
    ctype = (upload.content_type or "").split(";")[0].strip().lower()
    if suffix not in UPLOAD_SUFFIXES[kind]:
        suffix = mimetypes.guess_extension(ctype) or "" if ctype not in _GENERIC_TYPES else suffix
        suffix = ".jpg" if suffix == ".jpe" else suffix
    type_ok = ctype in _GENERIC_TYPES or ctype.startswith(kind + "/") or (kind == "storyboard" and "json" in ctype)
    if suffix not in UPLOAD_SUFFIXES[kind] or not type_ok:
        raise ApiError(415, f"{name}: {quote(upload.filename)} ({ctype[:40] or 'no type'}) is not an accepted {kind} upload; "
                       f"send {', '.join(s.lstrip('.') for s in UPLOAD_SUFFIXES[kind])}", param=name,
                       code="unsupported_media_type")
    return suffix


async def save_upload(upload: Any, folder: Path, suffix: str) -> Path:
    """Write an upload to `folder` (its size was limited with the body's: `security.BodyLimit`)."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{uuid.uuid4().hex}{suffix}"
    try:
        with dest.open("wb") as f:
            while chunk := await upload.read(1 << 20):
                f.write(chunk)
    except BaseException:  # a disk error or a cancelled request: no partial file stays
        dest.unlink(missing_ok=True)
        raise
    return dest


def request_body(schema: dict) -> dict:
    """`openapi_extra` giving a route's JSON body `schema` in the OpenAPI document.

    The routes read their bodies by hand (`read_body`: JSON or a form with uploads, size-limited), so
    FastAPI sees no body parameter; this documents it for clients and for the fuzz test. Nested
    models' `$defs` are inlined (a `#/$defs/...` reference would point into the OpenAPI document).
    """
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref[len("#/$defs/"):]])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


# A form's text as a number: plain decimal digits only ("7", "-2", "0.5", "1e3"), so nothing that
# Python's int()/float() would also take ("7_0", " 7", "nan", "inf", "1.0" for a whole number) is
# converted quietly. Bounded length: a 10,000-digit "number" is refused before int() parses it.
_INT_TEXT = re.compile(r"-?[0-9]{1,30}")
_NUMBER_TEXT = re.compile(r"-?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][-+]?[0-9]{1,2})?")
_WORDS = {bool: "true or false", int: "a whole number", float: "a number"}


def parse_text(name: str, value: str, kind: type) -> Any:
    """A form field's text as `kind` (bool, int, float), strictly: `"7"` is 7, `"7.0"` and `"true"` are
    not a whole number, `"1"` is not true, `"nan"` is not a number. 400 naming the field otherwise."""
    parsed: Any = None
    if kind is bool and value in ("true", "false"):
        parsed = value == "true"
    elif kind is int and _INT_TEXT.fullmatch(value):
        parsed = int(value)
    elif kind is float and _NUMBER_TEXT.fullmatch(value) and math.isfinite(float(value)):
        parsed = float(value)
    if parsed is None:
        word = _WORDS[kind]
        raise ApiError(400, f"{name}: {quote(value)} is not {word}; pass {word}", param=name, code="invalid_value")
    return parsed


def coerce(name: str, value: Any) -> Any:
    """A form field's text as the job option's type (`"3"` -> 3 for num_frames, strictly: `parse_text`).
    Only for forms: a JSON value goes as given (the job model takes no text for a number)."""
    from mora.workflows.jobspec import OPTIONS

    option = OPTIONS.get(name)
    if option is None or not isinstance(value, str) or option.kind not in _WORDS:
        return value  # text, choices (the job model checks them)
    return parse_text(name, value, option.kind)


def parse_fields(body: Body, model: type[BaseModel]) -> BaseModel:
    """`model`'s fields taken out of the body and checked (a strict pydantic model: 400 naming the field).

    A form sends an object field as `name[key]` (OpenAI's `input_reference[file_id]`): it is read as
    `{"name": {"key": ...}}`, the same as JSON.
    """
    data = {}
    for name in model.model_fields:
        if name in body.fields:
            data[name] = body.fields.pop(name)
        prefix = f"{name}["
        for key in [k for k in body.fields if k.startswith(prefix) and k.endswith("]")]:
            nested = data.setdefault(name, {})
            if isinstance(nested, dict):
                nested[key[len(prefix):-1]] = body.fields.pop(key)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise from_input_error(input_error(e, model=model)) from None


# Last-Event-ID is an SSE event's `seq` (SQLite INTEGER: 63 bits). Anything else is a client's bug:
# a 400 says so (replaying from the start would hide it; a larger number overflowed SQLite: a 500).
MAX_EVENT_ID = 2**63 - 1


def last_event_id(request: Request) -> int:
    """The `Last-Event-ID` header as the seq to resume after (0 when absent); 400 when not one."""
    text = request.headers.get("last-event-id")
    if text is None or text == "":
        return 0
    if not (_INT_TEXT.fullmatch(text) and 0 <= int(text) <= MAX_EVENT_ID):
        raise ApiError(400, f"last-event-id: {quote(text)} is not an event id; send the id: of the last event "
                       "received, or no header to start from the first", param="last-event-id", code="invalid_value")
    return int(text)


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key, scoped to its route (the store scopes it to the caller too)."""
    key = request.headers.get("idempotency-key")
    return f"{request.url.path}:{key}" if key else None

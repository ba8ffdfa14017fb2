"""Mora's MCP server on the official `mcp` SDK: the tools of `mora.mcp.tools` over a job store.

The low-level `mcp.server.lowlevel.Server` is used (not the decorator API) because the tools'
schemas are generated from the job model rather than from Python signatures. Jobs go through
the service's durable store (`mora.service.store.JobStore`) and its worker, the same queue as
`mora serve`: a task tool submits a job, follows the store's events (one MCP progress
notification per agent step) and returns the video as a resource link with the manifest's
summary as structured content. A bad argument is a tool result with `isError` and the command
line's one-line message; the server keeps serving.

Two transports: `run_stdio` (`mora mcp`: local paths allowed, file URIs) and `http_app`
(`/mcp` on `mora serve`: `job:<id>` inputs only, the service's URLs).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server

from mora import __version__
from mora.errors import InputError, ModelUnavailableError
from mora.mcp import tools as mt
from mora.paths import is_inside
from mora.validation import quote

logger = logging.getLogger(__name__)

POLL_S = 0.2  # how often a waiting tool call reads the store's events (SQLite: cheap)
LISTED = 50  # resources/list: the newest jobs' videos
INSTRUCTIONS = ("Mora makes videos with a team of agents (prompt, text-to-image, image-to-image, image-to-video, "
                "video connection). Call a task tool (text_to_video, image_to_video, extend_video, edit_video, "
                "connect_videos, simulate_world, make_story); it returns the video as a resource link. Pass "
                "job:<id> to use an earlier job's video as an input. list_presets shows the models.")


@dataclass
class Links:
    """How the server names a job's video and back.

    Attributes:
        uri: `(job_id, video path, base URL of the request or None) -> URI`.
        path_of: `(URI, owner) -> the video's path`, None when the URI is not a video of this server (or
            of that owner's jobs).
    """

    uri: Callable[[str, str, str | None], str]
    path_of: Callable[[str, str | None], str | None]


def file_links(out_dir: str | Path) -> Links:
    """stdio: a job's video is its file URI; only files under `out_dir` are served back."""
    root = Path(out_dir).resolve()

    def path_of(uri: str, owner: str | None = None) -> str | None:  # stdio: one caller, its own machine
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            return None
        path = Path(unquote(parsed.path)).resolve()
        return str(path) if is_inside(path, root) and path.is_file() else None

    return Links(uri=lambda job_id, path, base: mt.file_uri(path), path_of=path_of)


def url_links(store: Any, base_url: str | None = None) -> Links:
    """HTTP: a job's video is the service's URL for it (`/v1/jobs/<id>/files/video.mp4`, native API).

    Args:
        store: the service's store (to find a linked job's video again).
        base_url: the service's URL; None: the URL each request came in on (right behind a proxy too).
    """
    from mora.service.store import VIDEO_NAME

    route = f"/v1/jobs/{{id}}/files/{VIDEO_NAME}"
    pattern = re.compile(r"/v1/jobs/([A-Za-z0-9_-]+)/files/" + re.escape(VIDEO_NAME) + "$")

    def uri(job_id: str, path: str, base: str | None) -> str:
        return (base or base_url or "").rstrip("/") + route.format(id=job_id)

    def path_of(link: str, owner: str | None = None) -> str | None:
        found = pattern.search(urlparse(link).path)
        row = store.get(found[1], owner=owner) if found else None
        return row.video if row is not None and row.status == "completed" and row.video else None

    return Links(uri=uri, path_of=path_of)


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


class MoraMcp:
    """The tools over one job store.

    Args:
        store: a `JobStore` (submit, get, list, cancel, events).
        links: how videos are named (`file_links` over stdio, `url_links` over HTTP).
        any_path: inputs may be local paths (stdio: the caller's machine is the server's).
        preset: the default preset of the task tools (None: the job model's).

    Example:
        >>> server = MoraMcp(store, file_links("outputs/mcp"), any_path=True, preset="tiny").server()
    """

    def __init__(self, store: Any, links: Links, *, any_path: bool, preset: str | None = None):
        self.store, self.links, self.any_path, self.preset = store, links, any_path, preset
        self.tools = {t["name"]: t for t in mt.all_tools(preset=preset, any_path=any_path)}
        # (caller, request id) -> the cancel scopes of the task calls waiting under that id (see `cancelled`)
        self._waiting: defaultdict[tuple[str, str], set[anyio.CancelScope]] = defaultdict(set)

    def server(self) -> Server:
        """The SDK's low-level server with Mora's handlers."""
        server = Server("mora", version=__version__, title="Mora", instructions=INSTRUCTIONS,
                        on_list_tools=self.list_tools, on_call_tool=self.call_tool,
                        on_list_resources=self.list_resources, on_read_resource=self.read_resource)
        server.add_notification_handler("notifications/cancelled", types.CancelledNotificationParams, self.cancelled)
        return server

    # --- handlers ---------------------------------------------------------------------------------

    async def cancelled(self, ctx: Any, params: types.CancelledNotificationParams) -> None:
        """`notifications/cancelled`: stop the caller's waiting task call of that request id, and so its job.

        Over stdio the SDK cancels the call itself. Over stateless HTTP the notification comes in a
        POST of its own, whose per-request dispatcher knows no call to cancel (the SDK acknowledges it
        and drops it), so the calls waiting here are found by the caller's credential and the request
        id: nobody cancels another key's call by guessing an id.
        """
        for scope in list(self._waiting.get((_owner(ctx), str(params.request_id)), ())):
            scope.cancel()

    async def list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[self._tool(t) for t in self.tools.values()])

    @staticmethod
    def _tool(t: dict) -> types.Tool:
        read_only = t["name"] in mt.OTHER_TOOLS and mt.OTHER_TOOLS[t["name"]][2]
        return types.Tool(name=t["name"], title=t["title"], description=t["description"],
                          input_schema=t["input_schema"], output_schema=t["output_schema"],
                          annotations=types.ToolAnnotations(title=t["title"], read_only_hint=read_only,
                                                            destructive_hint=False, open_world_hint=False))

    async def call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        name, arguments = params.name, params.arguments or {}
        if name not in self.tools:
            return _error(f"tool: {name!r} is not a tool of Mora; choose one of {', '.join(self.tools)}")
        try:
            if name in mt.TASK_OF_TOOL:
                return await self._run_task(ctx, name, arguments)
            return await getattr(self, f"_{name}")(ctx, mt.other_arguments(name, arguments))
        except (InputError, ModelUnavailableError) as e:  # the command line's one line (its exit 2); serving on
            if self.any_path:
                return _error(str(e))
            from mora.service.guards import public_text  # over HTTP: no server path in the message

            return _error(public_text(str(e)) or "")

    async def list_resources(self, ctx: Any, params: Any) -> types.ListResourcesResult:
        rows = [r for r in self.store.list(limit=LISTED, owner=_owner(ctx)) if r.status == "completed" and r.video]
        base = _base(ctx)
        return types.ListResourcesResult(resources=[
            types.Resource(uri=self.links.uri(r.id, r.video, base), name=f"{r.id}.mp4", mime_type="video/mp4",
                           description=r.job.get("prompt") or r.task) for r in rows])

    async def read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        path = self.links.path_of(str(params.uri), _owner(ctx))
        if path is None:
            from mcp.shared.exceptions import MCPError

            raise MCPError(types.INVALID_PARAMS, f"uri: {params.uri!r} is not a video of this server; pass the "
                           "link a task tool or get_job returned")
        data = await anyio.to_thread.run_sync(Path(path).read_bytes)
        return types.ReadResourceResult(contents=[types.BlobResourceContents(
            uri=str(params.uri), mime_type="video/mp4", blob=base64.b64encode(data).decode("ascii"))])

    # --- tools --------------------------------------------------------------------------------------

    async def _run_task(self, ctx: Any, name: str, arguments: dict) -> types.CallToolResult:
        data, wait = mt.job_arguments(name, arguments)
        owner = _owner(ctx)  # checks files, preset: not instant
        row = await anyio.to_thread.run_sync(lambda: self.store.submit(data, owner=owner))
        logger.info("%s: job %s queued", name, row.id)
        if not wait:
            return self._result(row, ctx)
        job_id, key, done = row.id, (owner, str(ctx.request_id)), False
        try:
            with anyio.CancelScope() as scope:  # cancelled by `cancelled` (notifications/cancelled)
                self._waiting[key].add(scope)
                row = await self._follow(ctx, job_id)
                done = True
        finally:
            self._waiting[key].discard(scope)
            if not self._waiting[key]:
                del self._waiting[key]
            if not done:  # the caller gave up (cancelled, disconnected, gone mid-notification): the job stops too
                logger.info("%s: the call waiting for job %s ended early; cancelling the job", name, job_id)
                with contextlib.suppress(InputError):  # deleted meanwhile: nothing left to cancel
                    self.store.cancel(job_id)
        return self._result(self._row(job_id, owner) if scope.cancelled_caught else row, ctx)

    async def _follow(self, ctx: Any, job_id: str) -> Any:
        """Wait for the job, one progress notification per agent step; returns its final row."""
        seq, last = 0, -1.0
        while True:
            row = self.store.get(job_id)
            if row is None:  # deleted through the service's API while this call waited
                raise InputError(f"{job_id} was deleted while it ran; submit it again", param="job_id")
            events = self.store.events(job_id, after=seq)
            for i, event in enumerate(events):
                seq = event["seq"]
                if event["type"] != "step":
                    continue
                # the store records each step with its progress event right after it
                pct = next((e["data"]["progress"] for e in events[i + 1:] if e["type"] == "progress"), row.progress)
                last = max(float(pct), last + 0.01)  # MCP: progress increases with every notification
                await ctx.session.report_progress(last, 100.0, event["data"].get("step"))
            if row.finished:
                if row.status == "completed" and last < 100.0:  # the last step's notification said its start
                    await ctx.session.report_progress(100.0, 100.0, "done")
                return row
            await anyio.sleep(POLL_S)

    def _result(self, row: Any, ctx: Any) -> types.CallToolResult:
        uri = self.links.uri(row.id, row.video, _base(ctx)) if row.status == "completed" and row.video else None
        rep = mt.report(row, uri)
        if not self.any_path:  # over HTTP a caller sees no server path (stdio: the caller's own machine)
            from mora.service.guards import public_text

            rep.error = public_text(rep.error, row.id, self.store.folder(row.id))
        content: list[Any] = [types.TextContent(text=mt.report_text(rep))]
        if uri is not None:
            content.append(types.ResourceLink(uri=uri, name=f"{row.id}.mp4", title=f"Mora job {row.id}",
                                              mime_type="video/mp4", size=_size(row.video)))
        return types.CallToolResult(content=content, structured_content=rep.model_dump(),
                                    is_error=row.status == "failed")

    async def _get_job(self, ctx: Any, args: mt.JobId) -> types.CallToolResult:
        return self._result(self._row(args.job_id, _owner(ctx)), ctx)

    async def _cancel_job(self, ctx: Any, args: mt.JobId) -> types.CallToolResult:
        self._row(args.job_id, _owner(ctx))
        self.store.cancel(args.job_id, owner=_owner(ctx))
        return self._result(self._row(args.job_id, _owner(ctx)), ctx)

    async def _list_presets(self, ctx: Any, args: Any) -> types.CallToolResult:
        from mora.config import preset_rows

        rows = await anyio.to_thread.run_sync(preset_rows)
        text = "\n".join(f"{r['name']}: {r['description']}" for r in rows)
        return types.CallToolResult(content=[types.TextContent(text=text)], structured_content={"presets": rows})

    async def _score_video(self, ctx: Any, args: mt.VideoRef) -> types.CallToolResult:
        from mora.evaluation import format_table, score_card_for_file

        owner = _owner(ctx)
        path = mt.video_path(args.video, any_path=self.any_path,
                             resolve_job=lambda job_id: self._video_of(job_id, owner))
        card = await anyio.to_thread.run_sync(lambda: score_card_for_file(path, manifest=mt.manifest_beside(path)))
        return types.CallToolResult(content=[types.TextContent(text=format_table(card))], structured_content=card)

    def _row(self, job_id: str, owner: str) -> Any:
        row = self.store.get(job_id, owner=owner)
        if row is None:
            raise InputError(f"{quote(job_id)} is not a job of this server; pass the job_id a task tool returned",
                             param="job_id")
        return row

    def _video_of(self, job_id: str, owner: str) -> str:
        row = self.store.get(job_id, owner=owner)
        if row is None:
            raise InputError(f"{quote('job:' + job_id)} is not a job of this server; pass the id of an earlier job",
                             param="video")
        if row.status != "completed" or not row.video:
            raise InputError(f"job:{job_id} is {row.status}, not completed; wait for it (get_job)", param="video")
        return row.video


def _owner(ctx: Any) -> str:
    """Who calls: the service's key id for the HTTP request (`security.BearerGate`); over stdio the one
    local caller."""
    request = getattr(ctx, "request", None)
    state = getattr(request, "state", None)
    return getattr(state, "owner", "") or ""


def _base(ctx: Any) -> str | None:
    """The service's URL as this request reached it (None over stdio)."""
    request = getattr(ctx, "request", None)
    return str(request.base_url) if request is not None and hasattr(request, "base_url") else None


def _size(path: str | None) -> int | None:
    try:
        return Path(path).stat().st_size if path else None
    except OSError:
        return None

"""The OpenAI Videos API shape (`client.videos` of the `openai` package), mapped onto Mora's tasks.

| OpenAI call                              | Mora job                                                   |
|------------------------------------------|------------------------------------------------------------|
| `videos.create(prompt)`                  | text-to-video (model = the preset)                         |
| `videos.create(prompt, input_reference)` | image-to-video (an uploaded image, or `{"file_id": <id>}`: |
|                                          | the first frame of an earlier video)                       |
| `videos.remix(id, prompt)`               | edit of video `id`, instruction = prompt                   |
| `videos.edit(prompt, video)`             | edit (video: an upload or `{"id": <id>}`)                  |
| `videos.extend(prompt, seconds, video)`  | extend, num_frames = seconds x the video's fps             |
| `retrieve` / `list` / `delete`           | the job's status / every job / forget the job and files   |
| `download_content(variant=...)`          | video.mp4, the first frame (thumbnail), the contact sheet  |

`seconds` and `size` left out take the preset's defaults; a value the preset cannot make, and a
field Mora cannot honour, is a 400 naming the field and what is possible, never changed quietly.
Any job option of the job model (seed, steps, num_frames, ...) may be sent as an extra field
(`extra_body=` in the openai client).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from mora.errors import InputError
from mora.service.http import (
    ApiError,
    Body,
    check_upload,
    coerce,
    from_input_error,
    idempotency_key,
    not_found,
    owner,
    page_of_rows,
    parse_fields,
    parse_text,
    read_body,
    request_body,
    save_upload,
    service,
    stored_row,
)
from mora.service.store import JOB_REF, JobRow
from mora.validation import quote

router = APIRouter(prefix="/v1/videos")
VARIANTS = {"video": "video/mp4", "thumbnail": "image/png", "spritesheet": "image/png"}
STANDARD = ("prompt", "model", "seconds", "size", "input_reference")


# The Videos API's own fields, typed as OpenAI's API types them (text; `seconds` too: "4"). Strict: a
# list for `model` or a number for `file_id` is a 400 naming the field, never a 500 or a conversion.
# A prompt's length and the job options are the job model's to check (`mora.workflows.jobspec`).
class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _FileRef(_Strict):
    file_id: str | None = Field(None, min_length=1, description="the id of an earlier video: its first frame")
    image_url: str | None = Field(None, description="not supported (the server fetches no URLs)")


class _VideoRef(_Strict):
    id: str = Field(min_length=1, description="the id of a completed video")


class VideoFields(_Strict):
    """The fields of `POST /v1/videos` besides the job options (`input_reference` may also be an upload)."""

    prompt: str | None = None
    model: str | None = Field(None, description="the preset (GET /v1/presets lists them)")
    seconds: str | None = Field(None, description="the clip's length, as text (\"4\"); omitted: the preset's",
                                json_schema_extra={"fix": "pass the length as text, like \"4\""})
    size: str | None = Field(None, description="WIDTHxHEIGHT (\"96x64\"); omitted: the preset's",
                             json_schema_extra={"fix": "pass WIDTHxHEIGHT as text, like \"96x64\""})
    input_reference: _FileRef | None = None


class EditFields(_Strict):
    """The fields of `POST /v1/videos/edits` and `/extensions` besides the job options and the upload."""

    prompt: str | None = None
    model: str | None = Field(None, description="the preset; omitted: the source video's")
    seconds: str | None = Field(None, description="extensions: seconds to add, as text (\"2\")",
                                json_schema_extra={"fix": "pass the seconds as text, like \"2\""})
    video: _VideoRef | None = Field(None, description="an earlier video (or upload the file as `video`)")


class RemixFields(_Strict):
    """The fields of `POST /v1/videos/{id}/remix` besides the job options."""

    prompt: str | None = None


def body_schema(fields: type[BaseModel], task: str) -> dict:
    """The JSON schema of a Videos API body: `fields` and the job options of `task` (the job model's)."""
    from mora.workflows.jobspec import job_schema, task_inputs

    schema = fields.model_json_schema()
    options = job_schema(task)["properties"]
    skip = {"task", "preset", *(i.name for i in task_inputs(task))}
    schema["properties"] |= {k: v for k, v in options.items() if k not in skip}
    return schema


def video_object(row: JobRow, request: Request) -> dict[str, Any]:
    """A job as OpenAI's `Video` object (a cancelled job shows as failed with code `cancelled`; no server path)."""
    from mora.service.guards import public_text

    meta, info = row.meta, (row.manifest or {}).get("video") or {}
    status = row.status if row.status != "cancelled" else "failed"
    error = None
    if status == "failed":
        error = {"code": "cancelled" if row.status == "cancelled" else "generation_failed",
                 "message": public_text(row.error, row.id, service(request).store.folder(row.id))
                 or "the job was cancelled"}
    size = f"{info['width']}x{info['height']}" if info else meta.get("size", "")
    seconds = _seconds(info) if info else meta.get("seconds", "")
    return {"id": row.id, "object": "video", "created_at": int(row.created_at),
            "completed_at": int(row.completed_at) if row.completed_at else None, "expires_at": None,
            "model": meta.get("model") or row.job.get("preset", ""), "progress": row.progress,
            "prompt": meta.get("prompt", row.job.get("prompt") or row.job.get("instruction")),
            "remixed_from_video_id": meta.get("remixed_from_video_id"), "seconds": seconds, "size": size,
            "status": status, "error": error}



def _preset(request: Request, model: str | None) -> Any:
    from mora.config import DEFAULT_PRESET, get_preset, load_presets

    svc = service(request)
    name = model or svc.store.defaults.get("preset") or DEFAULT_PRESET
    presets = load_presets(svc.store.host.get("preset_file"))
    if name not in presets:
        raise ApiError(400, f"model: {quote(name)} is not a preset of this server; pass one of {', '.join(presets)}",
                       param="model", code="invalid_value")
    return get_preset(name, svc.store.host.get("preset_file"))


def _size(size: str | None) -> dict:
    """`WIDTHxHEIGHT` as the job's width and height (their range is the job model's to check)."""
    found = re.fullmatch(r"([0-9]+)[xX]([0-9]+)", size) if size is not None else None
    if size is None:
        return {}
    if found is None:
        raise ApiError(400, f"size: {quote(size)} is not WIDTHxHEIGHT; pass e.g. 96x64, or omit it for the "
                       "preset's", param="size", code="invalid_value")
    if max(len(found[1]), len(found[2])) > 9:  # no whole number of thousands of digits to convert
        raise ApiError(400, f"size: {quote(size)} is out of range; pass a size the preset makes, e.g. 96x64",
                       param="size", code="invalid_value")
    return {"width": int(found[1]), "height": int(found[2])}


def _options(body: Body, task: str, route: str) -> dict:
    """The extra fields as job options of `task` (anything else is 400)."""
    from mora.workflows.jobspec import OPTIONS, task_options

    takes = {o.name for o in task_options(task, ("job",))} - {"preset"}
    out = {}
    for name, value in body.fields.items():
        if name not in OPTIONS or name == "preset":  # an option of another scope or task: the job model says why
            raise ApiError(400, f"{name}: {route} has no such field Mora can honour; pass "
                           f"{', '.join(STANDARD)} or a job option ({', '.join(sorted(takes))})", param=name,
                           code="unknown_field")
        out[name] = coerce(name, value) if body.form else value
    return out


def _check_seconds(seconds: str | None, preset: Any, options: dict) -> str:
    """The clip length: omitted, the preset's; given, it must be the length the preset makes."""
    from mora.workflows.prepare import default_seconds

    given = {k: options[k] for k in ("num_frames", "fps") if options.get(k) is not None}
    made = default_seconds(preset, {k: v for k, v in given.items() if type(v) is int})
    allowed = str(max(1, round(made)))
    if seconds is None or str(seconds) == allowed or any(type(v) is not int for v in given.values()):
        return allowed  # (a malformed num_frames or fps: the job model refuses the job, naming that field)
    raise ApiError(400, f"seconds: {quote(seconds)} is not a length preset {preset.name} makes; pass {allowed!r} (its "
                   f"{made:g} s clip) or omit it, or set num_frames and fps for another length", param="seconds",
                   code="invalid_value")


async def _submit(request: Request, job: dict, meta: dict, uploads: dict, renames: dict | None = None) -> dict:
    """Save the uploads, queue the job (400 on any InputError), return the Video object.

    `renames` names the API field behind a job field in errors (width -> size, num_frames -> seconds).
    """
    svc = service(request)
    files: dict[str, Path] = {}
    try:
        for name, (upload, kind, shown) in uploads.items():
            files[name] = await save_upload(upload, svc.upload_dir, check_upload(shown, upload, kind))
        row = await run_in_threadpool(svc.store.submit, job, owner=owner(request),
                                      idempotency_key=idempotency_key(request), files=files, meta=meta)
    except InputError as e:
        raise from_input_error(e, 400, renames) from None
    finally:
        for path in files.values():  # the store moved the ones it kept
            path.unlink(missing_ok=True)
    return video_object(row, request)


@router.post("", openapi_extra=request_body(body_schema(VideoFields, "image-to-video")))
async def create(request: Request) -> dict:
    body = await read_body(request)
    fields = parse_fields(body, VideoFields)
    prompt, model, seconds, size = fields.prompt, fields.model, fields.seconds, fields.size
    reference = fields.input_reference or _FileRef()
    if reference.image_url:
        raise ApiError(400, "input_reference: image_url is not supported (the server fetches no URLs); upload the "
                       "image, or pass {\"file_id\": <id of an earlier video>}", param="input_reference",
                       code="unsupported_value")
    file_id = reference.file_id
    upload = body.uploads.pop("input_reference", None)
    task = "image-to-video" if upload is not None or file_id else "text-to-video"
    preset = _preset(request, model)
    options = _options(body, task, "POST /v1/videos") | _size(size)
    meta = {"model": preset.name, "prompt": prompt, "seconds": _check_seconds(seconds, preset, options),
            "size": size or _default_size(preset)}
    job = {"task": task, "prompt": prompt, "preset": preset.name, **options}
    if file_id:
        job["image"] = JOB_REF + file_id
    uploads = {"image": (upload, "image", "input_reference")} if upload is not None else {}
    return await _submit(request, job, meta, uploads, {"width": "size", "height": "size"})


def _default_size(preset: Any) -> str:
    s = preset.spec("image_to_video").settings
    return f"{s.width}x{s.height}"


@router.get("")  # the read routes are async: a store read, see jobs.py
async def list_videos(request: Request, after: str | None = None, limit: int = 20, order: str = "desc") -> dict:
    rows, more = page_of_rows(request, after, limit, order)
    data = [video_object(r, request) for r in rows]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}



@router.get("/{video_id}")
async def retrieve(request: Request, video_id: str) -> dict:
    return video_object(stored_row(request, video_id, "video"), request)


@router.delete("/{video_id}")
def delete(request: Request, video_id: str) -> dict:
    if not service(request).store.delete(video_id, owner=owner(request)):
        raise not_found("video", video_id)
    return {"id": video_id, "object": "video.deleted", "deleted": True}


@router.get("/{video_id}/content")
def content(request: Request, video_id: str, variant: str = "video") -> FileResponse:
    if variant not in VARIANTS:
        raise ApiError(400, f"variant: {variant!r} is not a variant; pass {', '.join(VARIANTS)}", param="variant",
                       code="invalid_value")
    row = stored_row(request, video_id, "video")
    if row.status != "completed" or not row.video:
        raise ApiError(409, f"video: {video_id} is {row.status}, not completed; poll GET /v1/videos/{video_id} "
                       "until its status is completed", param="video_id", code="video_not_ready")
    path = Path(row.video)
    if variant == "thumbnail":
        path = _derived(path.with_name("thumbnail.png"), lambda p: _thumbnail(row.video, p))
    elif variant == "spritesheet":
        sheet = (row.manifest or {}).get("contact_sheet")
        path = Path(sheet) if sheet and Path(sheet).is_file() else \
            _derived(path.with_name("spritesheet.png"), lambda p: _spritesheet(row.video, p))
    return FileResponse(path, media_type=VARIANTS[variant], filename=f"{video_id}-{variant}{path.suffix}")


def _derived(path: Path, make: Any) -> Path:
    if not path.is_file():  # made on first request, written atomically (media.write_image)
        make(path)
    return path


def _thumbnail(video: str, path: Path) -> None:
    from mora import media

    media.write_image(media.read_frame(video, 0), path)


def _spritesheet(video: str, path: Path) -> None:
    from mora.training.loop import contact_sheet  # the one contact sheet of a video (frames left to right)

    contact_sheet(Path(video), path)


async def _video_input(request: Request, body: Body, fields: EditFields) -> tuple[str | None, dict]:
    """The `video` of edit/extend: `{"id": ...}` (as `job:<id>`) or an upload."""
    ref = fields.video.id if fields.video is not None else None
    upload = body.uploads.pop("video", None)
    if (ref is None) == (upload is None):
        raise ApiError(400, "video: pass either {\"id\": <id of a completed video>} or an uploaded video file",
                       param="video", code="invalid_value")
    return (JOB_REF + ref if ref else None), ({"video": (upload, "video", "video")} if upload is not None else {})


@router.post("/edits", openapi_extra=request_body(body_schema(EditFields, "edit")))
async def edit(request: Request) -> dict:
    body = await read_body(request)
    fields = parse_fields(body, EditFields)
    if fields.seconds is not None:
        raise ApiError(400, "seconds: an edit keeps its source's length; drop seconds (or extend the video)",
                       param="seconds", code="unknown_field")
    prompt, model = fields.prompt, fields.model
    ref, uploads = await _video_input(request, body, fields)
    preset = _preset(request, model or _source_preset(request, ref))
    job = {"task": "edit", "instruction": prompt, "preset": preset.name, **_options(body, "edit", "edits")}
    if ref:
        job["video"] = ref
    return await _submit(request, job, {"model": preset.name, "prompt": prompt, **_source_shape(request, ref)},
                         uploads)


def _seconds(info: dict) -> str:
    """A video's length as the Videos API's text (`"1.14"`, `"2"`) from its manifest's `video` entry."""
    return f"{info['num_frames'] / info['fps']:.2f}".rstrip("0").rstrip(".")


def _source_shape(request: Request, ref: str | None) -> dict:
    """The size and seconds of an earlier video (an edit keeps both, an extension its size); both ""
    for an upload until the job is done."""
    row = service(request).store.get(ref[len(JOB_REF):], owner=owner(request)) if ref else None
    info = (row.manifest or {}).get("video") if row else None
    return {"size": f"{info['width']}x{info['height']}", "seconds": _seconds(info)} if info else \
        {"size": "", "seconds": ""}


def _source_preset(request: Request, ref: str | None) -> str | None:
    row = service(request).store.get(ref[len(JOB_REF):], owner=owner(request)) if ref else None
    return row.job.get("preset") if row else None


@router.post("/extensions", openapi_extra=request_body(body_schema(EditFields, "extend")))
async def extend(request: Request) -> dict:
    body = await read_body(request)
    fields = parse_fields(body, EditFields)
    prompt, model, seconds = fields.prompt, fields.model, fields.seconds
    ref, uploads = await _video_input(request, body, fields)
    preset = _preset(request, model or _source_preset(request, ref))
    options = _options(body, "extend", "extensions")
    if seconds is not None:
        if "num_frames" in options:
            raise ApiError(400, "seconds: pass seconds or num_frames, not both", param="seconds",
                           code="invalid_value")
        options["num_frames"] = _frames_for(request, seconds, ref, uploads)
    job = {"task": "extend", "prompt": prompt, "preset": preset.name, **options}
    if ref:
        job["video"] = ref
    meta = {"model": preset.name, "prompt": prompt, "seconds": str(seconds or ""),
            "size": _source_shape(request, ref)["size"]}
    return await _submit(request, job, meta, uploads, {"num_frames": "seconds"} if seconds is not None else {})


def _frames_for(request: Request, seconds: str, ref: str | None, uploads: dict) -> int:
    """Frames to add for `seconds` (text, like "2") at the source video's frame rate (extend keeps it)."""
    s = parse_text("seconds", seconds, float)
    row = service(request).store.get(ref[len(JOB_REF):], owner=owner(request)) if ref else None
    info = (row.manifest or {}).get("video") if row else None
    fps = info["fps"] if info else None
    if fps is None:  # an upload: its frame rate is known once saved; the preset's meanwhile
        fps = _preset(request, None).spec("extend").settings.fps
    frames = round(s * fps)
    if frames < 1:
        raise ApiError(400, f"seconds: {quote(seconds)} adds no frame at {fps:g} fps; pass at least {1 / fps:.2f}",
                       param="seconds", code="invalid_value")
    return frames


@router.post("/{video_id}/remix", openapi_extra=request_body(body_schema(RemixFields, "edit")))
async def remix(request: Request, video_id: str) -> dict:
    body = await read_body(request)
    prompt = parse_fields(body, RemixFields).prompt
    source = stored_row(request, video_id, "video")
    preset = source.job.get("preset")
    job = {"task": "edit", "video": JOB_REF + video_id, "instruction": prompt, "preset": preset,
           **_options(body, "edit", "remix")}
    meta = {"model": preset, "prompt": prompt, "remixed_from_video_id": video_id,
            **_source_shape(request, JOB_REF + video_id)}
    return await _submit(request, job, meta, {})

"""Mora's MCP tools as data: names, schemas and argument checks, derived from the job model.

No MCP SDK here (`mora.mcp.server` wires these into it), so the tools can be checked without a
server. A task tool's input schema is the task's job schema (`job_schema(task, scopes=("job",))`:
the options any caller may set, with their types, bounds and help) plus `wait`; its arguments are
checked by the job model itself (`parse_job`), so a bad value gets the command line's one-line
message. The other tools' schemas come from the small pydantic models below.

Image and video inputs take a local path (stdio only: the server runs on the caller's machine)
or `job:<id>`, the video of an earlier job of the same store.

Example:
    >>> tool = task_tool("text-to-video", preset="tiny")
    >>> tool["name"], tool["input_schema"]["properties"]["preset"]["default"]
    ('text_to_video', 'tiny')
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mora import media, validation
from mora.errors import InputError
from mora.service.store import JOB_REF  # `job:<id>`: the video of an earlier job of the same store
from mora.workflows.jobspec import JOB_TASKS, job_schema, parse_job, task_inputs
from mora.workflows.tasks import MEDIA_KINDS, STORY, TASK_TABLE

# task -> MCP tool name: the one place these names are written (the tool names read as verbs)
TOOL_NAMES: dict[str, str] = {
    "text-to-video": "text_to_video", "image-to-video": "image_to_video", "extend": "extend_video",
    "edit": "edit_video", "connect": "connect_videos", "simulate": "simulate_world", STORY: "make_story",
}
TASK_OF_TOOL = {name: task for task, name in TOOL_NAMES.items()}
DOOR = "an MCP tool call"
WAIT_HELP = ("wait for the video (default true; progress notifications per agent step); false: return the job id "
             "at once, for get_job")


class JobId(BaseModel):
    """Arguments of get_job and cancel_job."""

    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(min_length=1, description="the job id a task tool returned (job_id)")


class VideoRef(BaseModel):
    """Arguments of score_video."""

    model_config = ConfigDict(extra="forbid")
    video: str = Field(min_length=1, description="the video to score: job:<id> (an earlier job's video) or, over "
                       "stdio, a local path")


class NoArguments(BaseModel):
    """Arguments of list_presets."""

    model_config = ConfigDict(extra="forbid")


class JobReport(BaseModel):
    """What a task tool, get_job and cancel_job return as structured content (the manifest's summary)."""

    job_id: str = Field(description="the job's id (get_job, cancel_job, job:<id> as an input of another job)")
    status: str = Field(description="queued, in_progress, completed, failed or cancelled")
    progress: int = Field(0, description="percent done, 0-100")
    step: str | None = Field(None, description="what the job is doing now (agent: action)")
    error: str | None = Field(None, description="why the job failed (one line)")
    video: str | None = Field(None, description="the video's URI (a file URI over stdio, the service's URL over HTTP)")
    route: list[str] | None = Field(None, description="the agents that acted, in order")
    enhanced_prompt: str | None = Field(None, description="the prompt prompt_agent wrote")
    seconds: float | None = Field(None, description="the video's length in seconds")
    elapsed_s: float | None = Field(None, description="seconds the job took")
    score_card: dict | None = Field(None, description="the score card (mora eval's metrics)")


# --- schemas -------------------------------------------------------------------------------------

def _file_help(kind: str, any_path: bool) -> str:
    own = "an earlier job's video as job:<id>" if kind == "video" else "job:<id> (an earlier job's first frame)"
    return f"; an absolute local path or {own}" if any_path else f"; {own} (a path on the server is refused)"


def tool_schema(task: str, *, preset: str | None = None, any_path: bool = True) -> dict:
    """The input schema of `task`'s tool: its job schema (job-scope options) without `task`, plus `wait`.

    Args:
        task: one of `JOB_TASKS`.
        preset: the server's preset (`mora mcp --preset`), shown as the default.
        any_path: image and video inputs may be local paths (stdio).

    Example:
        >>> tool_schema("extend")["required"]
        ['video']
    """
    schema = copy.deepcopy(job_schema(task, scopes=("job",)))
    schema.pop("title", None)
    props = schema["properties"]
    props.pop("task")
    schema["required"] = [k for k in schema["required"] if k != "task"]
    for item in task_inputs(task):
        if item.kind in MEDIA_KINDS:
            props[item.name]["description"] += _file_help(item.kind, any_path)
        elif item.kind == "storyboard" and not any_path:
            props[item.name]["description"] += " (over HTTP: the storyboard object itself, not a path)"
    if preset is not None:
        props["preset"]["default"] = preset
    props["wait"] = {"type": "boolean", "default": True, "description": WAIT_HELP, "title": "Wait"}
    return schema


def task_tool(task: str, *, preset: str | None = None, any_path: bool = True) -> dict:
    """One task's tool: name, title, description, input and output schemas (see `tool_schema`)."""
    text = TASK_TABLE[task].help
    return {"name": TOOL_NAMES[task], "title": text.split(" (")[0].rstrip("."),
            "description": f"{text} Runs Mora's agents ({task}); returns the video as a resource link and the "
                           "manifest's summary (route, enhanced prompt, seconds, score card).",
            "input_schema": tool_schema(task, preset=preset, any_path=any_path),
            "output_schema": report_schema()}


def report_schema() -> dict:
    return JobReport.model_json_schema()


OTHER_TOOLS: dict[str, tuple[type[BaseModel], str, bool]] = {  # name -> (arguments, description, read-only)
    "get_job": (JobId, "A job's status, progress and, once completed, its video and summary.", True),
    "cancel_job": (JobId, "Cancel a queued or running job (a running job stops at its next agent step).", False),
    "list_presets": (NoArguments, "The presets (models per role): built-in, user files; pass one as preset.", True),
    "score_video": (VideoRef, "The score card of a video (temporal flickering, motion, smoothness, ...), as mora "
                    "eval prints it.", True),
}


def other_tool(name: str) -> dict:
    """get_job, cancel_job, list_presets or score_video: schemas from their pydantic models."""
    model, text, _ = OTHER_TOOLS[name]
    schema = model.model_json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    out = report_schema() if name in ("get_job", "cancel_job") else None
    return {"name": name, "title": name.replace("_", " ").capitalize(), "description": text, "input_schema": schema,
            "output_schema": out}


def all_tools(*, preset: str | None = None, any_path: bool = True) -> list[dict]:
    """Every tool: one per task of the job model, then the others."""
    return [task_tool(t, preset=preset, any_path=any_path) for t in JOB_TASKS] + \
        [other_tool(name) for name in OTHER_TOOLS]


def other_arguments(name: str, arguments: dict | None) -> BaseModel:
    """The arguments of a non-task tool, checked (InputError in Mora's one-line shape)."""
    return validation.validate(OTHER_TOOLS[name][0], arguments or {})


# --- a task tool's arguments -> a job ---------------------------------------------------------------

def job_arguments(tool: str, arguments: dict | None) -> tuple[dict, bool]:
    """(the job as the caller gave it, wait) from a task tool's arguments, checked by the job model.

    The job goes to the store as given (the store fills in the server's defaults, resolves `job:<id>`
    and checks files, preset and options as the command line does, before anything runs).

    Raises:
        InputError: the first problem, as `FIELD: VALUE problem; fix`.

    Example:
        >>> job_arguments("text_to_video", {"prompt": "a fox", "wait": False})
        ({'prompt': 'a fox', 'task': 'text-to-video'}, False)
    """
    task = TASK_OF_TOOL[tool]
    data = {k: v for k, v in (arguments or {}).items() if v is not None}
    wait = data.pop("wait", True)
    if not isinstance(wait, bool):
        raise InputError(f"{wait!r} is not true or false; pass true or false", param="wait")
    if data.get("task", task) != task:
        raise InputError(f"{data['task']!r} is not {tool}'s task; drop it (the tool names the task)", param="task")
    data["task"] = task
    parse_job(data, scopes=("job",), door=DOOR)
    return data, wait


def video_path(value: str, *, any_path: bool, resolve_job: Any) -> str:
    """score_video's input as a path: `job:<id>` through `resolve_job(id)`, else a local path (stdio only)."""
    if value.startswith(JOB_REF):
        return resolve_job(value[len(JOB_REF):].strip())
    if not any_path:
        raise InputError(f"{value!r} is a path on the server, which a request may not name; pass job:<id> "
                         "of an earlier job", param="video")
    return str(media.check_file(value, argument="video", kinds=("video",)))


def manifest_beside(path: str | Path) -> dict | None:
    """The manifest of a Mora video (`<stem>.json`), as `mora eval` reads it (seam scores); None if none."""
    try:
        data = json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# --- results ----------------------------------------------------------------------------------------

def report(row: Any, video_uri: str | None) -> JobReport:
    """A job row of the store as the tools' structured content (the manifest's summary once completed)."""
    manifest = getattr(row, "manifest", None) or {}
    video = manifest.get("video") or {}
    seconds = round(video["num_frames"] / video["fps"], 3) if video.get("num_frames") and video.get("fps") else None
    return JobReport(job_id=row.id, status=row.status, progress=int(row.progress or 0), step=row.step,
                     error=row.error, video=video_uri if row.status == "completed" else None,
                     route=manifest.get("route"), enhanced_prompt=manifest.get("enhanced_prompt"), seconds=seconds,
                     elapsed_s=(manifest.get("timings") or {}).get("total_s"), score_card=manifest.get("metrics"))


def report_text(rep: JobReport) -> str:
    """One or two lines a host can show (the structured content has the rest)."""
    if rep.status == "completed":
        route = " -> ".join(rep.route or ())
        length = f", {rep.seconds:g} s" if rep.seconds is not None else ""
        return f"job {rep.job_id} completed: {rep.video}{length}\nroute: {route}"
    if rep.status == "failed":
        return f"job {rep.job_id} failed: {rep.error}"
    step = f" ({rep.step})" if rep.step else ""
    return f"job {rep.job_id} {rep.status.replace('_', ' ')}, {rep.progress}%{step}; call get_job for more"


def file_uri(path: str | Path) -> str:
    return Path(path).resolve().as_uri()

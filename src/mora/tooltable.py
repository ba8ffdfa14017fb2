"""The tool table: what each of the agents' tools is, once, as plain data (no torch, no autogen).

Beside the task table (`mora.workflows.tasks`), this is the one place that says, per tool:
its name, the preset role whose model it runs (and whose settings bound an LLM's arguments),
the agent that calls it, its arguments that name input files (checked by the job's input
guard), the job options that apply to it, and what its step looks like in progress lines.
Everything else reads it: `mora.limits` (LLM bounds), `mora.workflows.route_run` (pinned options,
the frame tools, the scripted call of each tool: `SCRIPTED_CALLS` there, one function per
tool of this table), `mora.tools.toolset` (the tool methods), `mora.agents.roles` (agent ->
tools), `mora.agents.team` (registration) and `mora.agents.toolcalls` (the LLM's argument model).

It sits at the bottom layer (with `mora.limits` and `mora.config`), so the agent names live here
too; `mora.agents.roles` re-exports them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PROMPT_AGENT_NAME = "prompt_agent"
TEXT_TO_IMAGE_AGENT_NAME = "text_to_image_agent"
IMAGE_TO_IMAGE_AGENT_NAME = "image_to_image_agent"
IMAGE_TO_VIDEO_AGENT_NAME = "image_to_video_agent"
VIDEO_CONNECTION_AGENT_NAME = "video_connection_agent"
CRITIC_AGENT_NAME = "critic_agent"  # picks the best of N candidates (best_of > 1 only)
# the five role agents of the paper (A1-A5), in route order
AGENT_NAMES = (PROMPT_AGENT_NAME, TEXT_TO_IMAGE_AGENT_NAME, IMAGE_TO_IMAGE_AGENT_NAME, IMAGE_TO_VIDEO_AGENT_NAME,
               VIDEO_CONNECTION_AGENT_NAME)


@dataclass(frozen=True)
class Tool:
    """One tool of the agents.

    Args:
        name: the `mora.Toolset` method and the name the LLM calls.
        role: the preset role whose model it runs (`Preset.spec(role)`); its settings bound an LLM's numbers.
        agent: the agent that calls it.
        paths: its arguments that name input files: the job's input guard checks each one.
        options: the job options (`width`, `height`, `steps`, `num_frames`, `fps`) it takes; a user's
            pinned value overrides the scripted call's and the LLM's.
        frame: it makes the route's image (the review gate looks at it; best-of counts candidates by it).
        added_frames: its `num_frames` counts frames added to an input video (any count: the model
            family rounds its own clip), not frames of a clip the model makes whole.
        doing: what its step does, for progress lines.
    """

    name: str
    role: str
    agent: str
    paths: tuple[str, ...]
    options: tuple[str, ...]
    frame: bool = False
    added_frames: bool = False
    doing: str = ""


TOOL_TABLE: dict[str, Tool] = {t.name: t for t in (
    Tool("text_to_image", "text_to_image", TEXT_TO_IMAGE_AGENT_NAME, (), ("width", "height", "steps"), frame=True,
         doing="painting the first frame"),
    Tool("edit_image", "image_to_image", IMAGE_TO_IMAGE_AGENT_NAME, ("image_path",), ("steps",), frame=True,
         doing="editing the image"),
    Tool("image_to_video", "image_to_video", IMAGE_TO_VIDEO_AGENT_NAME, ("image_path",),
         ("width", "height", "steps", "num_frames", "fps"), doing="animating the frame into video"),
    Tool("extend_video", "extend", IMAGE_TO_VIDEO_AGENT_NAME, ("video_path",), ("steps", "num_frames"),
         added_frames=True, doing="extending the video"),
    Tool("connect_videos", "connect", VIDEO_CONNECTION_AGENT_NAME, ("first_video", "second_video"),
         ("steps", "num_frames"), doing="generating the transition between the videos"),
    # whole-clip video-to-video: only presets with the `video-edit` capability have its role
    Tool("edit_video", "edit_video", IMAGE_TO_VIDEO_AGENT_NAME, ("video_path", "image_path"), ("steps",),
         doing="editing the whole video, keeping its motion"),
)}
TOOL_NAMES = tuple(TOOL_TABLE)
TOOL_ROLES = {name: tool.role for name, tool in TOOL_TABLE.items()}  # tool -> preset role
PATH_ARGS = {name: tool.paths for name, tool in TOOL_TABLE.items() if tool.paths}  # tool -> its input-path arguments
FRAME_TOOLS = tuple(name for name, tool in TOOL_TABLE.items() if tool.frame)


def agent_tools(agent: str) -> tuple[str, ...]:
    """The tools `agent` may call, in table order (the prompt agent and the critic answer in text).

    Example:
        >>> agent_tools("image_to_video_agent")
        ('image_to_video', 'extend_video', 'edit_video')
    """
    return tuple(name for name, tool in TOOL_TABLE.items() if tool.agent == agent)


def option_tools(option: str) -> tuple[str, ...]:
    """The tools a job option applies to.

    Example:
        >>> option_tools("fps")
        ('image_to_video',)
    """
    return tuple(name for name, tool in TOOL_TABLE.items() if option in tool.options)


def video_tool(tools: Iterable[str | None]) -> str:
    """The tool that makes a route's video: its last tool (text steps, gates and the critic have none).

    `mora.limits.check_options(..., video_tool=video_tool(s.tool for s in route))` applies that
    tool's frame rules; an option the tool does not take (`fps` for extend_video) is ignored.

    Example:
        >>> video_tool(["text_to_image", None, "image_to_video", None])
        'image_to_video'
    """
    return [t for t in tools if t][-1]

"""The six tasks and their routes, as data (ARCHITECTURE.md, "The six tasks and their routes").

A route is a tuple of `Step`s. A step names the agent that acts and the tool it calls (None for
the prompt agent, which answers in text), or is the review gate. The speaker-selection function
in `mora.agents.team` walks the route; no LLM decides who speaks next.
"""

from __future__ import annotations

from dataclasses import dataclass

PROMPT_AGENT = "prompt_agent"
TEXT_TO_IMAGE_AGENT = "text_to_image_agent"
IMAGE_TO_IMAGE_AGENT = "image_to_image_agent"
IMAGE_TO_VIDEO_AGENT = "image_to_video_agent"
VIDEO_CONNECTION_AGENT = "video_connection_agent"
CRITIC_AGENT = "critic_agent"  # picks the best of N candidates (best_of > 1 only)
AGENT_NAMES = (PROMPT_AGENT, TEXT_TO_IMAGE_AGENT, IMAGE_TO_IMAGE_AGENT, IMAGE_TO_VIDEO_AGENT, VIDEO_CONNECTION_AGENT)
REVIEW = "review"  # the human-in-the-loop gate on the first frame (not an agent)

# agent -> the tools it may call
AGENT_TOOLS = {
    PROMPT_AGENT: (),
    TEXT_TO_IMAGE_AGENT: ("text_to_image",),
    IMAGE_TO_IMAGE_AGENT: ("edit_image",),
    IMAGE_TO_VIDEO_AGENT: ("image_to_video", "extend_video"),
    VIDEO_CONNECTION_AGENT: ("connect_videos",),
    CRITIC_AGENT: (),
}
BEST_OF_TASKS = ("text-to-video", "simulate")
MAX_BEST_OF = 8


@dataclass(frozen=True)
class Step:
    """One step of a route: `agent` acts, calling `tool` (None: a text answer; REVIEW: the gate)."""

    agent: str
    tool: str | None = None


# task -> (required inputs, optional inputs)
TASK_INPUTS = {
    "text-to-video": (("prompt",), ()),
    "image-to-video": (("image", "prompt"), ()),
    "extend": (("video",), ("prompt",)),
    "edit": (("video", "instruction"), ()),
    "connect": (("video_a", "video_b"), ("prompt",)),
    "simulate": (("prompt",), ("image",)),
}
TASKS = tuple(TASK_INPUTS)

_PROMPT = Step(PROMPT_AGENT)
_T2I = Step(TEXT_TO_IMAGE_AGENT, "text_to_image")
_I2I = Step(IMAGE_TO_IMAGE_AGENT, "edit_image")
_I2V = Step(IMAGE_TO_VIDEO_AGENT, "image_to_video")
_EXTEND = Step(IMAGE_TO_VIDEO_AGENT, "extend_video")
_CONNECT = Step(VIDEO_CONNECTION_AGENT, "connect_videos")
_REVIEW = Step(REVIEW)
_CRITIC = Step(CRITIC_AGENT)


def route_for(task: str, inputs: dict, best_of: int = 1) -> tuple[Step, ...]:
    """The steps of `task` for these inputs (optional inputs can add or swap a step).

    With `best_of` N > 1 (text-to-video and simulate), N candidates each get a first frame and a
    video, then critic_agent keeps the best; the reviewer, if any, settles critic disagreements.

    Example:
        >>> [s.agent for s in route_for("extend", {"video": "a.mp4"})]
        ['image_to_video_agent']
    """
    if best_of > 1 and task in BEST_OF_TASKS:
        frame = _I2I if inputs.get("image") else _T2I
        return (_PROMPT, *((frame, _I2V) * best_of), _CRITIC)
    if task == "text-to-video":
        return (_PROMPT, _T2I, _REVIEW, _I2V)
    if task == "image-to-video":
        return (_PROMPT, _I2I, _I2V)
    if task == "extend":
        return ((_PROMPT,) if inputs.get("prompt") else ()) + (_EXTEND,)
    if task == "edit":
        return (_PROMPT, _I2I, _I2V)
    if task == "connect":
        return (_CONNECT,)
    if task == "simulate":
        return (_PROMPT, _I2I if inputs.get("image") else _T2I, _REVIEW, _I2V)
    raise KeyError(task)

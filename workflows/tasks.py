"""The six tasks, as one table: inputs, help text and route (ARCHITECTURE.md, "The six tasks").

Everything that lists tasks is generated from `TASK_TABLE`: the command's subcommands
(`mora.cli`), the web page's tabs (`mora.ui`), the director's `start_task` schema and prompt
(`mora.workflows.chat`) and the input checks of `mora.run`. A route is a tuple of `Step`s: the
agent that acts and the tool it calls (None for a text answer), or the review gate. The route
state machine (`mora.workflows.job.Job`) walks it; no LLM decides who speaks next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mora.agents.roles import (
    CRITIC_AGENT_NAME,
    IMAGE_TO_IMAGE_AGENT_NAME,
    IMAGE_TO_VIDEO_AGENT_NAME,
    PROMPT_AGENT_NAME,
    TEXT_TO_IMAGE_AGENT_NAME,
    VIDEO_CONNECTION_AGENT_NAME,
)

REVIEW = "review"  # the human-in-the-loop gate on a route's image (not an agent)


@dataclass(frozen=True)
class Step:
    """One step of a route: `agent` acts, calling `tool` (None: a text answer; agent REVIEW: the gate)."""

    agent: str
    tool: str | None = None


PROMPT = Step(PROMPT_AGENT_NAME)
TEXT_TO_IMAGE = Step(TEXT_TO_IMAGE_AGENT_NAME, "text_to_image")
EDIT_IMAGE = Step(IMAGE_TO_IMAGE_AGENT_NAME, "edit_image")
IMAGE_TO_VIDEO = Step(IMAGE_TO_VIDEO_AGENT_NAME, "image_to_video")
EXTEND = Step(IMAGE_TO_VIDEO_AGENT_NAME, "extend_video")
CONNECT = Step(VIDEO_CONNECTION_AGENT_NAME, "connect_videos")
EDIT_VIDEO = Step(IMAGE_TO_VIDEO_AGENT_NAME, "edit_video")  # whole-clip video-to-video (capability video-edit)
GATE = Step(REVIEW)
CRITIC = Step(CRITIC_AGENT_NAME)

FILE_KINDS = ("image", "video", "storyboard")  # input kinds that name a file (every other input is text)
# Image and video inputs are media: uploads on the page, `job:<id>` (an earlier job's video) at the service
# and MCP. A storyboard is JSON that a caller may also pass as the object itself, so it is handled apart.
MEDIA_KINDS = tuple(kind for kind in FILE_KINDS if kind != "storyboard")


@dataclass(frozen=True)
class TaskInput:
    """One input of a task.

    Args:
        name: the keyword of `mora.run` and of `start_task` (`prompt`, `image`, `video`, ...).
        kind: `text`, or one of `FILE_KINDS` (files are checked as such before any model loads).
        help: one line for `--help`, the web page and the director's schema.
        required: whether the task needs it.
        option: on the command line a `--name` option rather than a positional argument.
    """

    name: str
    kind: str
    help: str
    required: bool = True
    option: bool = False


@dataclass(frozen=True)
class Task:
    """A task: its name, what it does, its inputs and how its route is built.

    Args:
        name: the CLI subcommand and `mora.run` name.
        help: one line saying what it makes.
        inputs: its inputs, in command-line order.
        route: `(inputs, best_of) -> steps`; optional inputs may add or swap a step.
        review: the route has a review gate (`--review` is refused where it has none).
        critic: `--best-of N` candidates can be judged by critic_agent.
        variants: (capability, route) pairs: a preset with that capability (`mora.config.CAPABILITIES`)
            takes that route instead; the first match wins.
    """

    name: str
    help: str
    inputs: tuple[TaskInput, ...]
    route: Callable[[dict, int], tuple[Step, ...]]
    review: bool = False
    critic: bool = False
    variants: tuple[tuple[str, Callable[[dict, int], tuple[Step, ...]]], ...] = ()

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs if i.required)

    @property
    def optional(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs if not i.required)

    def signature(self) -> str:
        """`prompt` / `video, optional prompt`: the inputs as the director's prompt lists them."""
        return ", ".join(i.name if i.required else f"optional {i.name}" for i in self.inputs)


def _first_frame_then_video(frame: Step) -> Callable[[dict, int], tuple[Step, ...]]:
    def route(inputs: dict, best_of: int) -> tuple[Step, ...]:
        if best_of > 1:  # N candidates each get a frame and a video, then the critic keeps one
            return (PROMPT, *((frame, IMAGE_TO_VIDEO) * best_of), CRITIC)
        return (PROMPT, frame, GATE, IMAGE_TO_VIDEO)

    return route


def _simulate(inputs: dict, best_of: int) -> tuple[Step, ...]:
    return _first_frame_then_video(EDIT_IMAGE if inputs.get("image") else TEXT_TO_IMAGE)(inputs, best_of)


def _animate_as_given(inputs: dict, best_of: int) -> tuple[Step, ...]:
    if inputs.get("instruction"):  # the user asked for a change: the image agent acts, then the gate
        return (PROMPT, EDIT_IMAGE, GATE, IMAGE_TO_VIDEO)
    return (PROMPT, IMAGE_TO_VIDEO)


def _extend(inputs: dict, best_of: int) -> tuple[Step, ...]:
    return ((PROMPT,) if inputs.get("prompt") else ()) + (EXTEND,)


_PROMPT_IN = TaskInput("prompt", "text", "what the video shows")
TASK_TABLE: dict[str, Task] = {t.name: t for t in (
    Task("text-to-video", "Make a video from a text prompt (prompt -> first frame -> video).", (_PROMPT_IN,),
         _first_frame_then_video(TEXT_TO_IMAGE), review=True, critic=True),
    Task("image-to-video", "Animate an image, adapted to a text prompt first.",
         (TaskInput("image", "image", "first frame (PNG, JPEG, WebP, GIF)"),
          TaskInput("prompt", "text", "what should happen"),
          TaskInput("instruction", "text", "change the image first, e.g. 'make it night' (a preset whose video "
                    "model follows the prompt animates the image as given unless this is set)", required=False,
                    option=True)),
         lambda inputs, best_of: (PROMPT, EDIT_IMAGE, GATE, IMAGE_TO_VIDEO), review=True,
         # the video model follows the prompt: the user's image is animated as given, edited only on request
         variants=(("text-motion", _animate_as_given),)),
    Task("extend", "Continue a video (the input's frames, then new ones).",
         (TaskInput("video", "video", "video to continue (MP4, WebM, MOV, GIF)"),
          TaskInput("prompt", "text", "what happens next", required=False)), _extend),
    Task("edit", "Edit a video by instruction (edits the first frame, then re-animates it).",
         (TaskInput("video", "video", "video to edit"),
          TaskInput("instruction", "text", "edit, e.g. 'make it winter'")),
         lambda inputs, best_of: (PROMPT, EDIT_IMAGE, GATE, IMAGE_TO_VIDEO), review=True,
         # the edited first frame guides a video-to-video pass over the whole source clip (motion kept)
         variants=(("video-edit", lambda inputs, best_of: (PROMPT, EDIT_IMAGE, GATE, EDIT_VIDEO)),)),
    Task("connect", "Join two videos with a generated transition.",
         (TaskInput("video_a", "video", "video that plays first"), TaskInput("video_b", "video", "video that plays last"),
          TaskInput("prompt", "text", "what the transition shows", required=False)),
         lambda inputs, best_of: (CONNECT,)),
    Task("simulate", "Make a 'digital world' (video game style) video from a prompt, optionally from an image.",
         (TaskInput("prompt", "text", "the world to simulate"),
          TaskInput("image", "image", "start from this image instead of generating one", required=False, option=True)),
         _simulate, review=True, critic=True),
)}
TASKS = tuple(TASK_TABLE)
INPUT_NAMES = ("prompt", "image", "video", "instruction", "video_a", "video_b")  # every task input, once


def route_for(task: str, inputs: dict, best_of: int = 1, capabilities: frozenset | set = frozenset()) -> tuple[Step, ...]:
    """The steps of `task` for these inputs and the preset's capabilities (`Preset.capabilities`).

    Example:
        >>> [s.agent for s in route_for("extend", {"video": "a.mp4"})]
        ['image_to_video_agent']
        >>> [s.tool for s in route_for("edit", {}, capabilities={"video-edit"})][-1]
        'edit_video'
    """
    spec = TASK_TABLE[task]
    route = next((r for capability, r in spec.variants if capability in capabilities), spec.route)
    return route(inputs, best_of)


def input_help(name: str) -> str:
    """What an input means across tasks, for the director's `start_task` schema."""
    uses = [f"{t.name}{'' if i.required else ' (optional)'}" for t in TASK_TABLE.values() for i in t.inputs
            if i.name == name]
    kind = next(i.kind for t in TASK_TABLE.values() for i in t.inputs if i.name == name)
    what = {"text": "text", "image": "path of an image the user gave", "video": "path of a video the user gave"}[kind]
    return f"{name.replace('_', ' ')}: {what}; for {', '.join(uses)}"


def director_task_list() -> str:
    """`text-to-video (prompt), image-to-video (image, prompt), ...` for the director's system message."""
    return ", ".join(f"{t.name} ({t.signature()})" for t in TASK_TABLE.values())

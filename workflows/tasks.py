"""The tasks, as one table: inputs, help text and route (ARCHITECTURE.md, "The six tasks").

`TASK_TABLE` holds the paper's six tasks (`TASKS`) and `story`, the multi-shot film, whose route
is a `Film`: storyboard_agent, then each shot's steps, then the transitions between shots.
Everything that lists tasks is generated from it: the job model (`mora.workflows.jobspec`), the
command's subcommands (`mora.cli`), the web page's tabs (`mora.ui`), the MCP tools, the director's
`start_task` schema and prompt (`mora.workflows.chat`: the six only) and the input checks of
`mora.run`. A route is a tuple of `Step`s: the agent that acts and the tool it calls (None for a
text answer), or the review gate. The route state machine (`mora.workflows.route_run.RouteRun`) walks it; no
LLM decides who speaks next. A prepared job's route (`Prepared.route`, a story's included) is
what its progress counts and what the service's work budget measures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mora.agents.roles import (
    CRITIC_AGENT_NAME,
    IMAGE_TO_IMAGE_AGENT_NAME,
    IMAGE_TO_VIDEO_AGENT_NAME,
    PROMPT_AGENT_NAME,
    STORYBOARD_AGENT_NAME,
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
STORYBOARD = Step(STORYBOARD_AGENT_NAME)  # writes a film's storyboard (a text answer)
STORY = "story"  # the multi-shot film's task name (`mora.story`)

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


Route = Callable[[dict, int], tuple[Step, ...]]  # (inputs, best_of) -> the steps of one task's route


@dataclass(frozen=True)
class Film:
    """The route of a multi-shot task (`story`, run by `mora.workflows.story`), as data: storyboard_agent
    writes the storyboard, each shot runs its steps, a generated transition joins two shots (or a cut).

    Args:
        storyboard: the step that writes the storyboard (none when the user gives one).
        frame: a shot's first frame.
        keyframe: a later shot's first frame with keyframe continuity (an edit of the previous shot's last frame).
        video: animates the first frame: the shot's video tool (its frame rules bound every shot).
        extend: chained until the shot lasts its seconds.
        transition: a generated transition between two shots (a `connect` boundary; a `cut` has none).
    """

    storyboard: Step
    frame: Step
    keyframe: Step
    video: Step
    extend: Step
    transition: Step

    def shot(self, k: int, extends: int, keyframe: bool) -> tuple[Step, ...]:
        """The steps of shot k (0-based): its first frame, the video, `extends` extends."""
        return (self.keyframe if k > 0 and keyframe else self.frame, self.video, *([self.extend] * extends))

    def route(self, extends: Sequence[int], joins: Sequence[bool], keyframe: bool,
              storyboard: bool = True) -> tuple[Step, ...]:
        """The film's steps in the order they run: the storyboard, each shot, each transition after the shot
        it leads into.

        Args:
            extends: per shot, the extends that make it last its seconds.
            joins: per boundary (shot k into k+1), whether a generated transition joins them (else a cut).
            keyframe: keyframe continuity (later shots start from an edit of the previous one's last frame).
            storyboard: storyboard_agent writes the storyboard (False: the user gave one).

        Example:
            >>> [s.agent for s in TASK_TABLE["story"].film.route([0, 0], [True], keyframe=True)]
            ['storyboard_agent', 'text_to_image_agent', 'image_to_video_agent', 'image_to_image_agent',
             'image_to_video_agent', 'video_connection_agent']
        """
        steps = [self.storyboard] if storyboard else []
        for k, n in enumerate(extends):
            steps += self.shot(k, n, keyframe)
            steps += [self.transition] if k and joins[k - 1] else []
        return tuple(steps)

    def tools(self, keyframe: bool = True) -> tuple[str, ...]:
        """Every tool its steps may call, the shots' video tool last (`mora.tooltable.video_tool`: the job's
        pinned options are checked against its frame rules)."""
        steps = (self.frame, *((self.keyframe,) if keyframe else ()), self.extend, self.transition, self.video)
        return tuple(dict.fromkeys(s.tool for s in steps if s.tool))

    def shots(self, route: Sequence[Step]) -> int:
        """How many shots a film's route makes (each animates its first frame once)."""
        return sum(1 for s in route if s == self.video)


@dataclass(frozen=True)
class Task:
    """A task: its name, what it does, its inputs and how its route is built.

    Args:
        name: the CLI subcommand and `mora.run` name.
        help: one line saying what it makes.
        inputs: its inputs, in command-line order.
        route: `(inputs, best_of) -> steps`, optional inputs may add or swap a step; or a `Film` (a
            multi-shot task: its steps are known once its storyboard is, `mora.workflows.prepare.film_route`).
        review: the route has a review gate (`--review` is refused where it has none).
        critic: `--best-of N` candidates can be judged by critic_agent.
        variants: (capability, route) pairs: a preset with that capability (`mora.config.CAPABILITIES`)
            takes that route instead; the first match wins.
        about: a longer description for the command's `--help` (default: `help`).
    """

    name: str
    help: str
    inputs: tuple[TaskInput, ...]
    route: Route | Film
    review: bool = False
    critic: bool = False
    variants: tuple[tuple[str, Route], ...] = ()
    about: str = ""

    @property
    def film(self) -> Film | None:
        """The film its route is, for a multi-shot task (None for the six)."""
        return self.route if isinstance(self.route, Film) else None

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
    Task(STORY, "Make a multi-shot film from a story: storyboard_agent, then each shot through the agents.",
         (TaskInput("story", "text", "the story (optional with --storyboard)", required=False),
          TaskInput("storyboard", "storyboard", "run this (edited) storyboard JSON file instead of writing one",
                    required=False, option=True)),
         Film(STORYBOARD, TEXT_TO_IMAGE, EDIT_IMAGE, IMAGE_TO_VIDEO, EXTEND, CONNECT),
         about="storyboard_agent writes a storyboard (<out stem>_storyboard.json), then each shot runs through the "
               "agents and the shots are joined by transitions into one film."),
)}
TASKS = tuple(name for name, t in TASK_TABLE.items() if t.film is None)  # the paper's six, one clip each
FILMS = tuple(name for name, t in TASK_TABLE.items() if t.film is not None)  # the multi-shot tasks (story)
INPUT_NAMES = ("prompt", "image", "video", "instruction", "video_a", "video_b")  # every input of the six, once


def route_for(task: str, inputs: dict, best_of: int = 1, capabilities: frozenset | set = frozenset()) -> tuple[Step, ...]:
    """The steps of `task` for these inputs and the preset's capabilities (`Preset.capabilities`).

    Example:
        >>> [s.agent for s in route_for("extend", {"video": "a.mp4"})]
        ['image_to_video_agent']
        >>> [s.tool for s in route_for("edit", {}, capabilities={"video-edit"})][-1]
        'edit_video'
    """
    spec = TASK_TABLE[task]
    if isinstance(spec.route, Film):
        raise ValueError(f"{task}'s route is a film's, known once its storyboard is; use "
                         "mora.workflows.prepare.film_route")
    route = next((r for capability, r in spec.variants if capability in capabilities), spec.route)
    return route(inputs, best_of)


def input_help(name: str) -> str:
    """What an input means across the six tasks, for the director's `start_task` schema."""
    tasks = [TASK_TABLE[t] for t in TASKS]
    uses = [f"{t.name}{'' if i.required else ' (optional)'}" for t in tasks for i in t.inputs if i.name == name]
    kind = next(i.kind for t in tasks for i in t.inputs if i.name == name)
    what = {"text": "text", "image": "path of an image the user gave", "video": "path of a video the user gave"}[kind]
    return f"{name.replace('_', ' ')}: {what}; for {', '.join(uses)}"


def director_task_list() -> str:
    """`text-to-video (prompt), image-to-video (image, prompt), ...` (the six) for the director's system message."""
    return ", ".join(f"{t.name} ({t.signature()})" for t in (TASK_TABLE[name] for name in TASKS))

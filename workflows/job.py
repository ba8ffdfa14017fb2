"""The state of one job as its route runs: inputs, pinned options, artifacts, the acting agents.

The job decides the scripted tool call of each step (used without an LLM, and as the fallback
when the LLM's call is unusable), guards input paths (only this job's inputs and artifacts), and
records what the manifest reports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from mora.agents.enhance import SIMULATE_NEGATIVE, edit_instruction, enhance_prompt
from mora.errors import InputError
from mora.workflows.routes import Step

logger = logging.getLogger(__name__)

# option -> the tools that take it
_OPTION_TOOLS = {
    "width": ("text_to_image", "image_to_video"),
    "height": ("text_to_image", "image_to_video"),
    "steps": ("text_to_image", "edit_image", "image_to_video", "extend_video", "connect_videos"),
    "num_frames": ("image_to_video", "extend_video", "connect_videos"),
    "fps": ("image_to_video",),
}
PATH_ARGS = {
    "edit_image": ("image_path",),
    "image_to_video": ("image_path",),
    "extend_video": ("video_path",),
    "connect_videos": ("first_video", "second_video"),
}


@dataclass
class Job:
    """One run of a task through its route.

    Args:
        task: the task name.
        inputs: the user's inputs as given (`prompt`, `image`, `video`, `instruction`, `video_a`, `video_b`).
        options: options the user pinned (`width`, `height`, `steps`, `num_frames`, `fps`); None = model default.
        seed: the job's seed; regenerating the first frame uses seed + 1, + 2, ...
        steps: the route; the review gate may insert steps.
        artifacts_dir: where tools write; input paths are accepted only from here and `inputs`.
    """

    task: str
    inputs: dict
    options: dict
    seed: int
    steps: list[Step]
    artifacts_dir: Path
    enhanced_prompt: str | None = None
    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    acted: list[str] = field(default_factory=list)
    review: list[dict] = field(default_factory=list)
    fallbacks: int = 0
    llm_faults: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    error: BaseException | None = None
    position: int = 0
    active: Step | None = None
    image_seed_offset: int = 0
    pending_instruction: str | None = None
    turns: int = 0
    best_of: int = 1  # candidates for the critic (text-to-video, simulate)
    candidate: int = 0  # index of the candidate being made (0 when best_of is 1)
    candidates: list[dict] = field(default_factory=list)
    critic: dict | None = None
    call_origin: str = "scripted"  # where the pending tool call came from: "scripted" or "llm"
    _allowed: set = field(default_factory=set)

    def allow(self, path: str | Path) -> None:
        """Accept `path` as an input of later tool calls (an input file or an artifact)."""
        self._allowed.add(Path(path).resolve())

    def guard(self, path: str, argument: str) -> Path:
        """The Toolset's input guard: only this job's inputs and artifacts, never elsewhere on disk."""
        resolved = Path(path).expanduser().resolve()
        if resolved not in self._allowed:
            raise InputError(
                f"{argument}: {path!r} is not an input or artifact of this job; use one of "
                f"{', '.join(sorted(repr(str(p)) for p in self._allowed)) or 'the job inputs'}"
            )
        return resolved

    def pinned(self, tool: str) -> dict:
        """The user's options that apply to `tool` (they override an LLM's choices)."""
        return {k: v for k, v in self.options.items() if v is not None and tool in _OPTION_TOOLS.get(k, ())}

    @property
    def prompt(self) -> str | None:
        return self.enhanced_prompt or self.inputs.get("prompt")

    def default_enhancement(self) -> str:
        """The prompt agent's deterministic answer."""
        text = self.inputs.get("prompt") or self.inputs.get("instruction") or ""
        return enhance_prompt(text, task=self.task)

    def scripted_call(self, tool: str) -> dict:
        """The arguments of `tool` for the current step, from the job's state."""
        seed = self.seed + self.candidate  # candidate k of best_of uses seed + k
        if tool == "text_to_image":
            args = dict(prompt=self.prompt, seed=seed + self.image_seed_offset,
                        negative_prompt=SIMULATE_NEGATIVE if self.task == "simulate" else "")
        elif tool == "edit_image":
            # The route's own edit starts from the job's source image; a reviewer's edit, from the latest frame.
            source = self.images[-1] if self.pending_instruction else self.images[0]
            args = dict(image_path=source, instruction=self.edit_instruction(), seed=seed + self.image_seed_offset)
        elif tool == "image_to_video":
            args = dict(image_path=self.images[-1], prompt=self.prompt, seed=seed)
        elif tool == "extend_video":
            args = dict(video_path=self.videos[-1], prompt=self.enhanced_prompt, seed=seed)
        elif tool == "connect_videos":
            args = dict(first_video=self.videos[0], second_video=self.videos[1], prompt=self.inputs.get("prompt"),
                        seed=seed)
        else:  # pragma: no cover - routes only name the tools above
            raise KeyError(tool)
        return {**args, **self.pinned(tool)}

    def edit_instruction(self) -> str:
        if self.pending_instruction:
            return self.pending_instruction
        if self.task == "edit":
            return self.inputs["instruction"]
        return edit_instruction(self.inputs.get("prompt", ""), task=self.task)

    def next_step(self) -> Step | None:
        if self.position >= len(self.steps):
            return None
        step = self.steps[self.position]
        self.position += 1
        return step

    def insert_next(self, *steps: Step) -> None:
        """Run `steps` next (the review gate uses this for regenerate and edit)."""
        self.steps[self.position:self.position] = list(steps)

    def record_output(self, tool: str, path: str) -> None:
        (self.videos if path.endswith(".mp4") else self.images).append(path)
        self.allow(path)
        if self.best_of > 1 and tool == "image_to_video":
            self.candidates.append({"index": self.candidate, "seed": self.seed + self.candidate,
                                    "image": self.images[-1], "video": path})

    def time(self, label: str, seconds: float) -> None:
        self.timings[label] = round(self.timings.get(label, 0.0) + seconds, 3)

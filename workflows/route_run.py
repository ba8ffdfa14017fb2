"""The route state machine: one job's route, walked step by step, with its state and transitions.

`RouteRun` holds everything a route needs and decides: the cursor over the steps, the review gate
(approve, regenerate, edit, abort), best-of candidates and the critic's choice, the scripted tool
call of each step (used without an LLM, and as the fallback when the LLM's call is unusable), the
input-path guard (only this job's inputs and artifacts) and what the manifest reports.

Transitions, each one method:
- `advance()`: the active step is done; run review gates; return the next acting step (or None).
- `record_output(tool, path)`: a tool call wrote `path`.
- `review_gate()`: ask the reviewer about the latest image; may insert steps (regenerate, edit).
- `choose_candidate(...)`: settle the critic's rankings (the reviewer breaks a disagreement).
The AutoGen adapter (`mora.agents.team.Team`) only asks `advance()` who speaks next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mora.agents.enhance import SIMULATE_NEGATIVE, edit_instruction, enhance_prompt
from mora.errors import InputError, ReviewAborted
from mora.evaluation.critic import choose
from mora.limits import check_text, derive_seed
from mora.tooltable import FRAME_TOOLS, TOOL_TABLE
from mora.workflows.tasks import EDIT_IMAGE, GATE, REVIEW, Step

logger = logging.getLogger(__name__)

MAX_REVIEW_ROUNDS = 10


@dataclass
class RouteRun:
    """One run of a task through its route.

    Args:
        task: the task name.
        inputs: the user's inputs as given (`prompt`, `image`, `video`, `instruction`, `video_a`, `video_b`).
        options: options the user pinned (`width`, `height`, `steps`, `num_frames`, `fps`); None = model default.
        seed: the job's seed; regenerating a reviewed image uses seed + 1, + 2, ...
            (`mora.limits.derive_seed`: wrapped to stay a valid seed)
        route: the steps of the task's route; the review gate may insert steps.
        artifacts_dir: where tools write; input paths are accepted only from here and `inputs`.
        best_of: candidates for the critic (text-to-video, simulate).
        reviewer: `(image_path, info) -> decision` at review gates and critic disagreements (None: no review).

    Example:
        >>> job = RouteRun("extend", {"video": "a.mp4"}, {}, 0, list(route_for("extend", {"video": "a.mp4"})), Path("a"))
        >>> job.advance().tool
        'extend_video'
    """

    task: str
    inputs: dict
    options: dict
    seed: int
    route: list[Step]
    artifacts_dir: Path
    best_of: int = 1
    reviewer: Callable[[str, dict], Any] | None = None
    enhanced_prompt: str | None = None
    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    acted: list[str] = field(default_factory=list)
    review: list[dict] = field(default_factory=list)
    llm_steps: list[dict] = field(default_factory=list)  # {"agent", "answer": "llm"|"fallback"} per LLM step
    llm_faults: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    error: BaseException | None = None
    position: int = 0
    active: Step | None = None
    image_seed_offset: int = 0
    pending_instruction: str | None = None
    turns: int = 0
    candidate: int = 0  # index of the candidate being made (0 when best_of is 1)
    candidates: list[dict] = field(default_factory=list)
    critic: dict | None = None
    _frames_started: int = 0
    _allowed: set = field(default_factory=set)

    # --- inputs and paths -------------------------------------------------------------------------

    def allow(self, path: str | Path) -> None:
        """Accept `path` as an input of later tool calls (an input file or an artifact)."""
        self._allowed.add(Path(path).resolve())

    def guard(self, path: str, argument: str) -> Path:
        """The Toolset's input guard: only this job's inputs and artifacts, never elsewhere on disk."""
        resolved = Path(path).expanduser().resolve()
        if resolved not in self._allowed:
            raise InputError(
                f"{path!r} is not an input or artifact of this job; use one of "
                f"{', '.join(sorted(repr(str(p)) for p in self._allowed)) or 'the job inputs'}", param=argument
            )
        return resolved

    def pinned(self, tool: str) -> dict:
        """The user's options that apply to `tool` (they override an LLM's choices)."""
        takes = TOOL_TABLE[tool].options
        return {k: v for k, v in self.options.items() if v is not None and k in takes}

    @property
    def prompt(self) -> str | None:
        return self.enhanced_prompt or self.inputs.get("prompt")

    @property
    def gated(self) -> bool:
        """Whether review gates act (only with a reviewer)."""
        return self.reviewer is not None

    def default_enhancement(self) -> str:
        """The prompt agent's deterministic answer."""
        text = self.inputs.get("prompt") or self.inputs.get("instruction") or ""
        return enhance_prompt(text, task=self.task)

    # --- the scripted call of each step -----------------------------------------------------------

    def scripted_call(self, tool: str) -> dict:
        """The arguments of `tool` for the current step, from the job's state (`SCRIPTED_CALLS`)."""
        return {**SCRIPTED_CALLS[tool](self), **self.pinned(tool)}

    @property
    def call_seed(self) -> int:
        """The seed of the current candidate's calls: candidate k of best_of uses seed + k."""
        return derive_seed(self.seed, self.candidate)

    def edit_instruction(self) -> str:
        if self.pending_instruction:
            return self.pending_instruction
        if self.inputs.get("instruction"):  # edit's instruction, or image-to-video's requested change
            return self.inputs["instruction"]
        return edit_instruction(self.inputs.get("prompt", ""), task=self.task)

    # --- transitions ------------------------------------------------------------------------------

    def advance(self) -> Step | None:
        """Finish the active step, pass any review gates, and start the next acting step (None: done)."""
        self.active = None
        while self.position < len(self.route):
            step = self.route[self.position]
            self.position += 1
            if step.agent == REVIEW:
                self.review_gate()
                continue
            if self.best_of > 1 and step.tool in FRAME_TOOLS and not self.pending_instruction:
                self.candidate, self._frames_started = self._frames_started, self._frames_started + 1
            self.active = step
            self.acted.append(step.agent)
            return step
        return None

    def remaining(self) -> list[str]:
        """Agents of the steps not started yet."""
        return [s.agent for s in self.route[self.position:]]

    def remaining_roles(self) -> list[str]:
        """Preset roles whose models the steps not started yet run (the memory policy keeps those)."""
        return [TOOL_TABLE[s.tool].role for s in self.route[self.position:] if s.tool]

    def record_output(self, tool: str, path: str) -> None:
        """A tool call of the active step wrote `path`: later steps may read it."""
        (self.videos if path.endswith(".mp4") else self.images).append(path)
        self.allow(path)
        if self.best_of > 1 and tool == "image_to_video":
            self.candidates.append({"index": self.candidate, "seed": self.call_seed,
                                    "image": self.images[-1], "video": path})

    def review_gate(self) -> None:
        """Ask the reviewer about the latest image; regenerate and edit insert the steps that redo it."""
        if self.reviewer is None:
            return
        frame_step = next(s for s in reversed(self.route[:self.position]) if s.tool in FRAME_TOOLS)
        if len(self.review) >= MAX_REVIEW_ROUNDS:
            raise InputError(f"review: more than {MAX_REVIEW_ROUNDS} rounds without approval; approve or abort")
        image = self.images[-1]
        action, instruction = normalize_decision(self.reviewer(image, {"task": self.task, "prompt": self.prompt,
                                                                        "round": len(self.review) + 1}))
        self.review.append({"image": image, "decision": action, **({"instruction": instruction} if instruction else {})})
        logger.info("review of %s: %s%s", image, action, f" ({instruction})" if instruction else "")
        if action == "approve":
            return
        if action == "abort":
            raise ReviewAborted("review: aborted by the reviewer; nothing was written at the output path")
        if action == "regenerate":
            # Remake the reviewed image with the next seed, from the same source: only the reviewed
            # image is dropped, so after an edit the edit is redone (same instruction) on its input.
            self.image_seed_offset += 1
            if frame_step.tool != "edit_image":
                self.pending_instruction = None
            self.images.pop()
            self._insert_next(frame_step, GATE)
        else:  # edit
            self.pending_instruction = instruction
            self._insert_next(EDIT_IMAGE, GATE)

    def choose_candidate(self, by_scores: list[int], judge_choice: int | str | None, judge_error: str | None) -> dict:
        """Keep one candidate: the judge's choice is the score card's best, or the reviewer settles it, or the
        score card decides (`judge_choice`: a candidate index, "none", or None without a judge). Returns the
        decision (`critic` of the manifest: `winner`, `reason`, ...)."""
        reviewer_pick = None
        if isinstance(judge_choice, int) and judge_choice != by_scores[0] and self.reviewer is not None:
            pick = self.candidates[judge_choice]
            action, _ = normalize_decision(self.reviewer(pick["image"], {
                "task": self.task, "prompt": self.prompt, "critic": "the vision judge prefers this first frame; "
                "approve to keep it, anything else keeps the score card's choice"}))
            reviewer_pick = judge_choice if action == "approve" else by_scores[0]
        best, reason = choose(by_scores, judge_choice, reviewer_pick)
        decision = {"winner": best, "reason": reason, "score_ranking": by_scores, "judge_choice": judge_choice,
                    **({"judge_error": judge_error} if judge_error else {})}
        self.critic = decision
        self.videos.append(self.candidates[best]["video"])
        return decision

    def _insert_next(self, *steps: Step) -> None:
        self.route[self.position:self.position] = list(steps)

    def time(self, label: str, seconds: float) -> None:
        self.timings[label] = round(self.timings.get(label, 0.0) + seconds, 3)


# --- the scripted call of each tool (one function per tool of `mora.tooltable.TOOL_TABLE`) ----------

def _text_to_image_call(job: RouteRun) -> dict:
    return dict(prompt=job.prompt, seed=derive_seed(job.call_seed, job.image_seed_offset),
                negative_prompt=SIMULATE_NEGATIVE if job.task == "simulate" else "")


def _edit_image_call(job: RouteRun) -> dict:
    # The route's own edit starts from the job's source image; a reviewer's edit, from the latest frame.
    source = job.images[-1] if job.pending_instruction else job.images[0]
    return dict(image_path=source, instruction=job.edit_instruction(), seed=derive_seed(job.call_seed, job.image_seed_offset))


def _image_to_video_call(job: RouteRun) -> dict:
    return dict(image_path=job.images[-1], prompt=job.prompt, seed=job.call_seed)


def _extend_video_call(job: RouteRun) -> dict:
    return dict(video_path=job.videos[-1], prompt=job.enhanced_prompt, seed=job.call_seed)


def _edit_video_call(job: RouteRun) -> dict:  # the whole source clip, guided by the edited first frame
    return dict(video_path=job.videos[0], image_path=job.images[-1], prompt=job.prompt, seed=job.call_seed)


def _connect_videos_call(job: RouteRun) -> dict:
    return dict(first_video=job.videos[0], second_video=job.videos[1], prompt=job.inputs.get("prompt"),
                seed=job.call_seed)


# tool -> (job -> the tool's arguments): used without an LLM, and as the fallback of an unusable LLM call
SCRIPTED_CALLS: dict[str, Callable[[RouteRun], dict]] = {
    "text_to_image": _text_to_image_call,
    "edit_image": _edit_image_call,
    "image_to_video": _image_to_video_call,
    "extend_video": _extend_video_call,
    "connect_videos": _connect_videos_call,
    "edit_video": _edit_video_call,
}


def normalize_decision(decision: Any) -> tuple[str, str | None]:
    """A review answer as (action, instruction). Accepts 'approve', 'regenerate', 'abort',
    ('edit', 'instruction'), {'action': ..., 'instruction': ...} or an object with those attributes.

    Example:
        >>> normalize_decision(("edit", "make it snowy"))
        ('edit', 'make it snowy')
    """
    if isinstance(decision, str):
        action, instruction = decision, None
    elif isinstance(decision, (tuple, list)) and decision:
        action, instruction = decision[0], (decision[1] if len(decision) > 1 else None)
    elif isinstance(decision, dict):
        action, instruction = decision.get("action"), decision.get("instruction")
    else:
        action, instruction = getattr(decision, "action", None), getattr(decision, "instruction", None)
    action = str(action or "").strip().lower()
    if action not in ("approve", "regenerate", "edit", "abort"):
        raise InputError(f"review: {decision!r} is not a decision; answer approve, regenerate, ('edit', text) or abort")
    if action == "edit":
        instruction = check_text(instruction, "review edit instruction")
    return action, instruction

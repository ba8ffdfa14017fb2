"""The team: five role agents, a user proxy that executes tools, and a route-following group chat.

Wiring (classic AutoGen): each role agent is a `ConversableAgent` with its system message; tools
are registered for execution on the user proxy (`code_execution_config=False`, always) and, when
an LLM is configured, for LLM use on the agent that calls them, so the LLM sees their typed
schemas. A `GroupChatManager` runs the chat; speaker selection walks the task's route (data in
`mora.workflows.routes`), so the order never depends on an LLM.

Without an LLM the prompt agent answers with the deterministic enhancer and tool agents emit
scripted tool calls. With one, their answers come from the LLM, are validated as untrusted input
(`mora.agents.toolcalls`), retried a bounded number of times, and fall back to the scripted answer
with a warning counted in `manifest.llm.fallbacks`.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
import typing
from collections.abc import Callable
from typing import Any

import autogen
from autogen.io import IOStream

from mora.agents import prompts
from mora.agents.llm import scrub
from mora.agents.toolcalls import ToolCallFault, extract_call, validate_args
from mora.errors import InputError, ReviewAborted
from mora.tools.toolset import Toolset, check_text
from mora.workflows.job import Job
from mora.workflows.routes import (
    AGENT_NAMES,
    AGENT_TOOLS,
    CRITIC_AGENT,
    IMAGE_TO_IMAGE_AGENT,
    PROMPT_AGENT,
    REVIEW,
    Step,
)

logger = logging.getLogger(__name__)

USER_PROXY = "user_proxy"
LLM_ATTEMPTS = 3  # one try and two retries per step, then the scripted fallback
MAX_REVIEW_ROUNDS = 10
MAX_PROMPT_WORDS = 200


class LoggingIOStream:
    """AutoGen's output stream, sent to our logger: library code does not print."""

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        logger.debug("autogen: %s", sep.join(map(str, objects)).rstrip())

    def send(self, message: Any) -> None:
        logger.debug("autogen event: %s", type(message).__name__)

    def input(self, prompt: str = "", *, password: bool = False) -> str:  # pragma: no cover - never asked
        raise RuntimeError("Mora's agents never ask for console input (human_input_mode='NEVER')")


def autogen_llm_config(config_list: list[dict] | None) -> dict | bool:
    """AutoGen's llm_config for a config list (False: no LLM). No disk cache: answers differ per job.

    Entries without a `price` get `[0, 0]`: AutoGen warns on stdout, through its own handler, for
    every answer of a model missing from its price table (any local model), which would corrupt
    `mora ... --json`; Mora does not report costs.
    """
    if not config_list:
        return False
    return {"config_list": [{"price": [0.0, 0.0], **entry} for entry in config_list], "cache_seed": None}


class Team:
    """Mora's agents for one job.

    Args:
        job: the job's state (route, inputs, artifacts).
        tools: the Toolset whose methods the agents call.
        config_list: OpenAI-compatible model entries, or None for no LLM.
        review: optional callback `(image_path, info) -> decision` at review gates.
        on_step: optional callback `(agent_name, what_it_does)` when an agent starts its step.

    Example:
        >>> team = Team(job, tools, config_list=None)
        >>> team.run()
        >>> [m["name"] for m in team.groupchat.messages]
    """

    def __init__(
        self, job: Job, tools: Toolset, config_list: list[dict] | None = None,
        review: Callable[..., Any] | None = None, on_step: Callable[[str, str], None] | None = None,
    ):
        self.job, self.tools, self.config_list = job, tools, config_list
        self.review, self.on_step = review, on_step
        self._calls_at_step = 0  # len(tools.calls) when the current tool step started
        self.llm_config = autogen_llm_config(config_list)
        self.user_proxy = autogen.ConversableAgent(
            USER_PROXY, system_message=prompts.USER_PROXY, human_input_mode="NEVER", llm_config=False,
            code_execution_config=False, default_auto_reply="",
            description="Executes the tool calls of the other agents.",
        )
        self.agents: dict[str, autogen.ConversableAgent] = {}
        for name in AGENT_NAMES:
            agent = autogen.ConversableAgent(
                name, system_message=prompts.SYSTEM_MESSAGES[name], description=prompts.DESCRIPTIONS[name],
                llm_config=self.llm_config, human_input_mode="NEVER", code_execution_config=False,
            )
            reply = self._prompt_reply if name == PROMPT_AGENT else self._tool_reply
            agent.register_reply(trigger=[autogen.Agent, None], reply_func=reply, position=0)
            self.agents[name] = agent
            for tool in AGENT_TOOLS[name]:
                function = self._executable(tool)
                if self.llm_config:  # the LLM sees the typed schema; the proxy executes
                    description = inspect.getdoc(getattr(Toolset, tool)).split("\n\n")[0]
                    autogen.register_function(
                        function, caller=agent, executor=self.user_proxy, name=tool, description=description
                    )
                else:
                    self.user_proxy.register_for_execution(name=tool)(function)
        if job.best_of > 1:  # critic_agent joins only when there are candidates to judge
            from mora.agents.critic import make_critic

            critic = make_critic(config_list)
            critic.register_reply(trigger=[autogen.Agent, None], reply_func=self._critic_reply, position=0)
            self.agents[CRITIC_AGENT] = critic
        self._frames_started = 0
        self.groupchat = autogen.GroupChat(
            agents=[self.user_proxy, *self.agents.values()], messages=[], max_round=100,
            speaker_selection_method=self._select, allow_repeat_speaker=True, admin_name="(none)",
            send_introductions=False,
        )
        self.manager = autogen.GroupChatManager(
            groupchat=self.groupchat, llm_config=False, human_input_mode="NEVER", code_execution_config=False,
            is_termination_msg=lambda m: False,
        )

    # --- running -------------------------------------------------------------------------------

    def run(self) -> None:
        """Run the route to its end; raises the first tool error or ReviewAborted."""
        with IOStream.set_default(LoggingIOStream()):
            self.user_proxy.initiate_chat(self.manager, message=self._task_message(), silent=True)
        if self.job.error is not None:  # a failure in the last step, after the final selection
            raise self.job.error
        missing = [s.agent for s in self.job.steps[self.job.position:]]
        if missing or self.job.active is not None:
            raise RuntimeError(f"the group chat ended before the route finished (left: {missing})")

    def _task_message(self) -> str:
        job = self.job
        lines = [f"Task: {job.task}."]
        for key, value in job.inputs.items():
            if value is not None:
                lines.append(f"{key}: {value}")
        gates = self.review is not None  # the review gate acts only with a reviewer
        lines.append("Route: " + " -> ".join(s.agent for s in job.steps if gates or s.agent != REVIEW))
        return "\n".join(lines)

    # --- speaker selection: the route, as data --------------------------------------------------

    def _select(self, last_speaker: autogen.Agent, groupchat: autogen.GroupChat) -> autogen.Agent | None:
        job = self.job
        job.turns += 1
        if job.error is not None:
            raise job.error
        message = groupchat.messages[-1] if groupchat.messages else {}
        active = job.active
        if active is not None and active.tool:
            if message.get("tool_calls") and last_speaker is not self.user_proxy:
                return self.user_proxy  # the executor runs the requested call
            if len(self.tools.calls) == self._calls_at_step:
                # AutoGen answers a call it could not make (e.g. arguments not matching the signature)
                # with an error text instead of raising: stop here, not at a later step missing its input.
                raise RuntimeError(f"{active.agent}: the {active.tool} call was not executed: "
                                   f"{str(message.get('content'))[:300]}")
            job.active = None
        elif active is not None:  # the prompt agent answered
            job.active = None
        while (step := job.next_step()) is not None:
            if step.agent == REVIEW:
                self._review_gate()
                continue
            job.active = step
            if job.best_of > 1 and step.tool in ("text_to_image", "edit_image") and not job.pending_instruction:
                job.candidate, self._frames_started = self._frames_started, self._frames_started + 1
            self._calls_at_step = len(self.tools.calls)
            job.acted.append(step.agent)
            if self.on_step:
                self.on_step(step.agent, _describe(step))
            logger.info("%s: %s", step.agent, _describe(step))
            return self.agents[step.agent]
        return None  # route done: the manager ends the chat

    def _review_gate(self) -> None:
        job = self.job
        if self.review is None:
            return
        frame_step = next(s for s in reversed(job.steps[:job.position]) if s.tool in ("text_to_image", "edit_image"))
        if len(job.review) >= MAX_REVIEW_ROUNDS:
            raise InputError(f"review: more than {MAX_REVIEW_ROUNDS} rounds without approval; approve or abort")
        image = job.images[-1]
        action, instruction = normalize_decision(self.review(image, {"task": job.task, "prompt": job.prompt,
                                                                      "round": len(job.review) + 1}))
        job.review.append({"image": image, "decision": action, **({"instruction": instruction} if instruction else {})})
        logger.info("review of %s: %s%s", image, action, f" ({instruction})" if instruction else "")
        if action == "approve":
            return
        if action == "abort":
            raise ReviewAborted("review: aborted by the reviewer; nothing was written at the output path")
        if action == "regenerate":
            # Remake the reviewed frame with the next seed, from the same source: only the reviewed
            # image is dropped, so after an edit the edit is redone (same instruction) on its input.
            job.image_seed_offset += 1
            if frame_step.tool != "edit_image":
                job.pending_instruction = None
            job.images.pop()
            job.insert_next(frame_step, Step(REVIEW))
        else:  # edit
            job.pending_instruction = instruction
            job.insert_next(Step(IMAGE_TO_IMAGE_AGENT, "edit_image"), Step(REVIEW))

    # --- replies ---------------------------------------------------------------------------------

    def _critic_reply(self, recipient, messages=None, sender=None, config=None) -> tuple[bool, str]:
        """Score every candidate, ask the vision judge if one is configured, keep the best."""
        from mora import media
        from mora.agents.critic import judge, vision_config
        from mora.evaluation import score_video
        from mora.evaluation.critic import choose, quality, rank_by_scores

        job = self.job
        cards = []
        for candidate in job.candidates:
            video = media.read_video(candidate["video"], argument="video")
            card = score_video(video.frames, fps=video.fps)
            candidate.update(scores=card, quality=quality(card))
            cards.append(card)
        by_scores = rank_by_scores(cards)
        by_judge, judge_error = None, None
        if vision_config(self.config_list):
            try:
                by_judge = judge(recipient, [c["image"] for c in job.candidates], job.prompt)
            except Exception as e:  # any judge fault: the score card decides
                judge_error = _reason(e)
                self._fault(recipient.name, 1, e)
                self._fallback(recipient.name)
        reviewer_pick = None
        if by_judge is not None and by_judge[0] != by_scores[0] and self.review is not None:
            pick = job.candidates[by_judge[0]]
            action, _ = normalize_decision(self.review(pick["image"], {
                "task": job.task, "prompt": job.prompt, "critic": "the vision judge prefers this first frame; "
                "approve to keep it, anything else keeps the score card's choice"}))
            reviewer_pick = by_judge[0] if action == "approve" else by_scores[0]
        best, reason = choose(by_scores, by_judge, reviewer_pick)
        job.critic = {"winner": best, "reason": reason, "score_ranking": by_scores, "judge_ranking": by_judge,
                      **({"judge_error": judge_error} if judge_error else {})}
        job.videos.append(job.candidates[best]["video"])
        logger.info("critic_agent: candidate %d of %d wins (%s)", best, len(cards), reason)
        return True, json.dumps({"winner": best, "reason": reason,
                                 "quality": [c["quality"] for c in job.candidates]})

    def _prompt_reply(self, recipient, messages=None, sender=None, config=None) -> tuple[bool, str]:
        job = self.job
        text = None
        if self.llm_config:
            for attempt in range(1, LLM_ATTEMPTS + 1):
                try:
                    answer = self._ask_llm(recipient, messages, sender)
                    content = answer.get("content") if isinstance(answer, dict) else answer
                    text = check_text(content, "prompt_agent answer")
                    if len(text.split()) > MAX_PROMPT_WORDS:
                        raise InputError(f"answer has {len(text.split())} words; at most {MAX_PROMPT_WORDS}")
                    break
                except Exception as e:  # any LLM fault: HTTP, timeout, empty or unusable answer
                    self._fault(recipient.name, attempt, e)
                    text = None
            if text is None:
                self._fallback(recipient.name)
        job.enhanced_prompt = text or job.default_enhancement()
        return True, job.enhanced_prompt

    def _tool_reply(self, recipient, messages=None, sender=None, config=None) -> tuple[bool, dict]:
        job = self.job
        tool = job.active.tool
        args, call_id, origin = job.scripted_call(tool), f"call_{job.turns}", "scripted"
        if self.llm_config:
            hint = {"role": "user", "content": self._llm_hint(tool)}
            for attempt in range(1, LLM_ATTEMPTS + 1):
                try:
                    answer = self._ask_llm(recipient, [*messages, hint], sender)
                    call_id, raw = extract_call(answer, tool)
                    # The job's seed and the user's pinned options always win over the LLM's values; the
                    # scripted call fills what the LLM left out (e.g. simulate's negative prompt).
                    args = {**args, **validate_args(tool, raw, job), **_always_scripted(args), **job.pinned(tool)}
                    origin = "llm"
                    break
                except Exception as e:
                    reason = self._fault(recipient.name, attempt, e)
                    hint = {"role": "user", "content": f"That answer was unusable: {reason}. " + self._llm_hint(tool)}
            if origin != "llm":
                self._fallback(recipient.name)
        job.call_origin = origin
        return True, {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": call_id, "type": "function",
                            "function": {"name": tool, "arguments": json.dumps(args)}}],
        }

    def _llm_hint(self, tool: str) -> str:
        files = ", ".join(repr(p) for p in [*self.job.images, *self.job.videos]) or "none"
        prompt = f" Enhanced prompt: {self.job.prompt!r}." if self.job.prompt else ""
        instruction = f" Edit instruction: {self.job.edit_instruction()!r}." if tool == "edit_image" else ""
        return f"Call `{tool}` now with one tool call. Files of this job: {files}.{prompt}{instruction}"

    def _ask_llm(self, agent: autogen.ConversableAgent, messages, sender) -> Any:
        started = time.perf_counter()
        try:
            ok, answer = agent.generate_oai_reply(messages=messages, sender=sender)
        finally:
            self.job.time("llm", time.perf_counter() - started)
        if not ok:
            raise ToolCallFault("the LLM gave no answer")
        return answer

    def _fault(self, agent: str, attempt: int, error: BaseException) -> str:
        """Record an unusable answer; returns the reason, safe to log and to show the LLM."""
        reason = scrub(_reason(error), self.config_list)  # an endpoint's error text may echo the key
        self.job.llm_faults.append(f"{agent} try {attempt}: {reason}")
        logger.debug("%s: LLM answer %d/%d unusable: %s", agent, attempt, LLM_ATTEMPTS, reason)
        return reason

    def _fallback(self, agent: str) -> None:
        self.job.fallbacks += 1
        last = self.job.llm_faults[-1] if self.job.llm_faults else "unknown"
        logger.warning("%s: no usable LLM answer after %d tries (%s); using the scripted answer", agent,
                       LLM_ATTEMPTS, last)

    # --- tool execution ----------------------------------------------------------------------------

    def _executable(self, tool: str) -> Callable[..., str]:
        """The tool as the user proxy runs it: timed, recorded in the job, errors kept for the route."""
        method = getattr(self.tools, tool)
        job = self.job

        @functools.wraps(method)
        def run_tool(**kwargs: Any) -> str:
            started = time.perf_counter()
            try:
                try:
                    path = method(**kwargs)
                except InputError as e:
                    if getattr(job, "call_origin", "scripted") != "llm":
                        raise
                    # The LLM's values passed our checks but not the model's (e.g. a size multiple).
                    self._fault(job.active.agent, LLM_ATTEMPTS, e)
                    self._fallback(job.active.agent)
                    path = method(**job.scripted_call(tool))
                job.record_output(tool, path)
                return path
            except BaseException as e:
                job.error = e  # AutoGen turns exceptions into text; the route re-raises this one
                raise
            finally:
                job.time(f"tool:{tool}", time.perf_counter() - started)

        # AutoGen builds the JSON schema from the signature: give it the evaluated annotations.
        hints = typing.get_type_hints(method, include_extras=True)
        signature = inspect.signature(method)
        run_tool.__signature__ = signature.replace(
            parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()],
            return_annotation=hints.get("return", str),
        )
        run_tool.__annotations__ = hints
        return run_tool


def _always_scripted(args: dict) -> dict:
    return {k: args[k] for k in ("seed",) if k in args}


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text[:200]}" if not isinstance(error, ToolCallFault) else text[:200]


def _describe(step: Step) -> str:
    if step.agent == CRITIC_AGENT:
        return "scoring the candidates and keeping the best"
    return {
        None: "writing the detailed prompt",
        "text_to_image": "painting the first frame",
        "edit_image": "editing the image",
        "image_to_video": "animating the frame into video",
        "extend_video": "extending the video",
        "connect_videos": "generating the transition between the videos",
    }[step.tool]


def normalize_decision(decision: Any) -> tuple[str, str | None]:
    """A review answer as (action, instruction). Accepts 'approve', 'regenerate', 'abort',
    ('edit', 'instruction'), {'action': ..., 'instruction': ...} or an object with those attributes."""
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

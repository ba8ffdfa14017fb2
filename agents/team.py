"""The team: five role agents, a user proxy that executes tools, and a route-following group chat.

Wiring (classic AutoGen, docs/ARCHITECTURE.md "Inside the team"): each role agent is a
`ConversableAgent` with its system message and a reply function (`register_reply`, position 0);
tools are registered with `register_for_execution` on the user proxy (`code_execution_config=False`,
always) and, when an LLM is configured, with `register_for_llm` on the agent that calls them, so the
LLM sees their typed schemas with the preset's bounds (`mora.agents.toolcalls.llm_function`). A
`GroupChatManager` runs the chat; speaker selection (`Team._select`) walks the job's route (data in
`mora.workflows.tasks`), so the order never depends on an LLM.

Without an LLM the prompt agent answers with the deterministic enhancer and tool agents emit
scripted tool calls. With one, their answers come from the LLM, are validated as untrusted input
(`mora.agents.toolcalls`), retried with the reason by `mora.agents.asking.ask` (the one retry
loop), and fall back to the scripted answer with a warning; each step that asked the LLM is
recorded in `job.llm_steps` (`manifest.llm.steps`: its answer used, or fallen back). Mora's tries are the one retry layer: at most
`LLM_ATTEMPTS` requests per step, each bounded by the entry's `timeout` (the openai client's own
retries are off, `mora.agents.llm`).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
import typing
from collections.abc import Callable
from typing import Any, Protocol

import autogen
from autogen.io import IOStream

from mora.agents import roles
from mora.agents.asking import Retry, ask, reason
from mora.agents.llm import LLM_ATTEMPTS, autogen_llm_config
from mora.agents.toolcalls import ToolCallFault, extract_call, llm_function, validate_args
from mora.errors import InputError
from mora.limits import check_text, llm_bounds
from mora.tools.toolset import Toolset
from mora.tooltable import FRAME_TOOLS, TOOL_TABLE

logger = logging.getLogger(__name__)

USER_PROXY = "user_proxy"
MAX_PROMPT_WORDS = 200


class Route(Protocol):
    """What the team reads and sets of a job's route state machine (`mora.workflows.route_run.RouteRun` implements it).

    Exactly the attributes this module uses on a job (tests/test_team_wiring.py checks it).
    """

    task: str
    inputs: dict
    active: Any  # the acting step: `.agent`, `.tool`
    turns: int
    error: BaseException | None
    images: list[str]
    videos: list[str]
    candidates: list[dict]
    enhanced_prompt: str | None
    prompt: str | None
    gated: bool
    best_of: int
    candidate: int  # index of the candidate being made (the step lines number it)
    llm_steps: list[dict]
    llm_faults: list[str]

    def advance(self) -> Any: ...
    def remaining(self) -> list[str]: ...
    def scripted_call(self, tool: str) -> dict: ...
    def pinned(self, tool: str) -> dict: ...
    def guard(self, path: str, argument: str) -> Any: ...
    def edit_instruction(self) -> str: ...
    def default_enhancement(self) -> str: ...
    def record_output(self, tool: str, path: str) -> None: ...
    def choose_candidate(self, by_scores: list[int], judge_choice: int | str | None, judge_error: str | None) -> dict: ...
    def time(self, label: str, seconds: float) -> None: ...


class LoggingIOStream:
    """AutoGen's output stream, sent to our logger: library code does not print."""

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", flush: bool = False) -> None:
        logger.debug("autogen: %s", sep.join(map(str, objects)).rstrip())

    def send(self, message: Any) -> None:
        logger.debug("autogen event: %s", type(message).__name__)

    def input(self, prompt: str = "", *, password: bool = False) -> str:  # pragma: no cover - never asked
        raise RuntimeError("Mora's agents never ask for console input (human_input_mode='NEVER')")


class Team:
    """Mora's agents for one job: the AutoGen adapter of the job's route.

    Args:
        job: the job's route state machine (`mora.workflows.route_run.RouteRun`): who acts next, scripted
            calls, the input guard, review gates and the critic's choice all live there.
        tools: the Toolset whose methods the agents call.
        config_list: OpenAI-compatible model entries, or None for no LLM.
        on_step: optional callback `(agent_name, what_it_does)` when an agent starts its step.

    Example:
        >>> team = Team(job, tools, config_list=None)
        >>> team.run()
        >>> [m["name"] for m in team.groupchat.messages]
    """

    def __init__(
        self, job: Route, tools: Toolset, config_list: list[dict] | None = None,
        on_step: Callable[[str, str], None] | None = None,
    ):
        self.job, self.tools, self.config_list, self.on_step = job, tools, config_list, on_step
        self._calls_at_step = 0  # len(tools.calls) when the current tool step started
        self._call_origin = "scripted"  # where the pending tool call came from: "scripted" or "llm"
        self.llm_config = autogen_llm_config(config_list)
        self.user_proxy = autogen.ConversableAgent(
            USER_PROXY, system_message=roles.USER_PROXY, human_input_mode="NEVER", llm_config=False,
            code_execution_config=False, default_auto_reply="",
            description="Executes the tool calls of the other agents.",
        )
        self.agents: dict[str, autogen.ConversableAgent] = {name: self._role_agent(name) for name in roles.AGENT_NAMES}
        if job.best_of > 1:  # critic_agent joins only when there are candidates to judge
            from mora.agents.critic import make_critic

            critic = make_critic(config_list)
            critic.register_reply(trigger=[autogen.Agent, None], reply_func=self._critic_reply, position=0)
            self.agents[roles.CRITIC_AGENT_NAME] = critic
        self.groupchat = autogen.GroupChat(
            agents=[self.user_proxy, *self.agents.values()], messages=[], max_round=100,
            speaker_selection_method=self._select, allow_repeat_speaker=True, admin_name="(none)",
            send_introductions=False,
        )
        self.manager = autogen.GroupChatManager(
            groupchat=self.groupchat, llm_config=False, human_input_mode="NEVER", code_execution_config=False,
            is_termination_msg=lambda m: False,
        )

    def _role_agent(self, name: str) -> autogen.ConversableAgent:
        """One role agent with its system message, its reply function and its tools registered."""
        agent = autogen.ConversableAgent(
            name, system_message=roles.SYSTEM_MESSAGES[name], description=roles.DESCRIPTIONS[name],
            llm_config=self.llm_config, human_input_mode="NEVER", code_execution_config=False,
        )
        reply = self._prompt_reply if name == roles.PROMPT_AGENT_NAME else self._tool_reply
        agent.register_reply(trigger=[autogen.Agent, None], reply_func=reply, position=0)
        for tool in roles.AGENT_TOOLS[name]:
            if TOOL_TABLE[tool].role not in self.tools.preset.roles:  # e.g. edit_video: only presets with a video editor
                continue
            # Not `autogen.register_function(f, caller=agent, executor=user_proxy)` with one `f`: AutoGen's
            # executor validates a call against the registered function's signature, and the executor also
            # runs scripted calls, whose values (the user's options, e.g. steps=100) may exceed what an LLM
            # may ask for. So the LLM sees a function carrying the LLM's bounds; the executor runs the tool.
            self.user_proxy.register_for_execution(name=tool)(self._executable(tool))
            if self.llm_config:
                description = inspect.getdoc(getattr(Toolset, tool)).split("\n\n")[0]
                agent.register_for_llm(name=tool, description=description)(
                    llm_function(tool, llm_bounds(self.tools.preset, tool)))
        return agent

    # --- running -------------------------------------------------------------------------------

    def run(self) -> None:
        """Run the route to its end; raises the first tool error or ReviewAborted."""
        with IOStream.set_default(LoggingIOStream()):
            self.user_proxy.initiate_chat(self.manager, message=self._task_message(), silent=True)
        if self.job.error is not None:  # a failure in the last step, after the final selection
            raise self.job.error
        missing = self.job.remaining()
        if missing or self.job.active is not None:
            raise RuntimeError(f"the group chat ended before the route finished (left: {missing})")

    def _task_message(self) -> str:
        job = self.job
        lines = [f"Task: {job.task}."]
        lines += [f"{key}: {value}" for key, value in job.inputs.items() if value is not None]
        agents = [a for a in job.remaining() if a in self.agents or job.gated]  # gates act only with a reviewer
        lines.append("Route: " + " -> ".join(agents))
        return "\n".join(lines)

    # --- speaker selection: the route state machine decides ----------------------------------------

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
        step = job.advance()
        if step is None:
            return None  # route done: the manager ends the chat
        self._calls_at_step = len(self.tools.calls)
        if self.on_step:
            self.on_step(step.agent, _describe(step, job))
        logger.info("%s: %s", step.agent, _describe(step, job))
        return self.agents[step.agent]

    # --- replies ---------------------------------------------------------------------------------

    def _critic_reply(self, recipient, messages=None, sender=None, config=None) -> tuple[bool, str]:
        """Score every candidate, ask the vision judge if one is configured; the route keeps the best."""
        from mora.agents.critic import rank_candidates

        job = self.job
        by_scores, judged = rank_candidates(recipient, job.candidates, job.prompt, self.config_list)
        if judged is not None:  # the judge was asked: its answer ("none" too: it chose to abstain) or a fallback
            judged.record(job.llm_steps, job.llm_faults)
        choice = judged.value if judged is not None and judged.used else None
        error = judged.reason if judged is not None and not judged.used else None
        decision = job.choose_candidate(by_scores, choice, error)
        logger.info("critic_agent: candidate %d of %d wins (%s)", decision["winner"], len(job.candidates),
                    decision["reason"])
        return True, json.dumps({"winner": decision["winner"], "reason": decision["reason"],
                                 "quality": [c["quality"] for c in job.candidates]})

    def _prompt_reply(self, recipient, messages=None, sender=None, config=None) -> tuple[bool, str]:
        job = self.job
        text = None
        if self.llm_config:
            def ask_once(retry: Retry | None) -> Any:
                again = [] if retry is None else [{"role": "user", "content": (
                    f"That answer was unusable: {retry.reason}. Answer with the detailed prompt only.")}]
                return self._ask_llm(recipient, [*messages, *again], sender)

            def valid(answer: Any) -> str:
                text = check_text(answer.get("content") if isinstance(answer, dict) else answer, "prompt_agent answer")
                if len(text.split()) > MAX_PROMPT_WORDS:
                    raise InputError(f"answer has {len(text.split())} words; at most {MAX_PROMPT_WORDS}")
                return text

            answer = ask(ask_once, valid, agent=recipient.name, config_list=self.config_list)
            answer.record(job.llm_steps, job.llm_faults)
            text = answer.value
        job.enhanced_prompt = text or job.default_enhancement()
        return True, job.enhanced_prompt

    def _tool_reply(self, recipient, messages=None, sender=None, config=None) -> tuple[bool, dict]:
        job = self.job
        tool = job.active.tool
        args, call_id, origin = job.scripted_call(tool), f"call_{job.turns}", "scripted"
        if self.llm_config:
            args, call_id, origin = self._llm_call(recipient, messages, sender, tool, args, call_id)
        self._call_origin = origin
        return True, {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": call_id, "type": "function",
                            "function": {"name": tool, "arguments": json.dumps(args)}}],
        }

    def _llm_call(self, agent, messages, sender, tool: str, scripted: dict, call_id: str) -> tuple[dict, str, str]:
        """The LLM's call of `tool`, validated, retried; the scripted call when no answer is usable."""
        job = self.job
        bounds = llm_bounds(self.tools.preset, tool)

        def ask_once(retry: Retry | None) -> Any:
            unusable = "" if retry is None else f"That answer was unusable: {retry.reason}. "
            return self._ask_llm(agent, [*messages, {"role": "user", "content": unusable + self._llm_hint(tool)}],
                                 sender)

        def valid(answer: Any) -> tuple[dict, str]:
            llm_id, raw = extract_call(answer, tool)
            # The job's seed and the user's pinned options always win over the LLM's values; the
            # scripted call fills what the LLM left out (e.g. simulate's negative prompt).
            return {**scripted, **validate_args(tool, raw, job.guard, bounds), **_always_scripted(scripted),
                    **job.pinned(tool)}, llm_id

        answer = ask(ask_once, valid, agent=agent.name, config_list=self.config_list)
        answer.record(job.llm_steps, job.llm_faults)
        if answer.value is None:
            return scripted, call_id, "scripted"
        args, llm_id = answer.value
        return args, llm_id, "llm"

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

    def _refused(self, agent: str, error: InputError) -> None:
        """The step's LLM call, recorded as used, passed our checks but the tool refused it (e.g. a
        size multiple): the step falls back after all, so its one record changes to a fallback."""
        why = reason(error, self.config_list)
        self.job.llm_faults.append(f"{agent} try {LLM_ATTEMPTS}: {why}")
        self.job.llm_steps.pop()
        self.job.llm_steps.append({"agent": agent, "answer": "fallback"})
        logger.warning("%s: the tool refused the LLM's call (%s); using the scripted answer", agent, why)

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
                    if self._call_origin != "llm":
                        raise
                    # The LLM's values passed our checks but not the model's (e.g. a size multiple).
                    self._refused(job.active.agent, e)
                    path = method(**job.scripted_call(tool))
                job.record_output(tool, path)
                return path
            except BaseException as e:
                job.error = e  # AutoGen turns exceptions into text; the route re-raises this one
                raise
            finally:
                job.time(f"tool:{tool}", time.perf_counter() - started)

        # AutoGen's executor checks a call against the signature: give it the evaluated types. Without
        # their descriptions: AutoGen rewrites `Annotated[T, "text"]` in place, and typing shares those
        # objects with the Toolset's own signatures (where `args_model` reads the descriptions).
        hints = typing.get_type_hints(method)
        signature = inspect.signature(method)
        run_tool.__signature__ = signature.replace(
            parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()],
            return_annotation=hints.get("return", str),
        )
        run_tool.__annotations__ = hints
        return run_tool


def _always_scripted(args: dict) -> dict:
    return {k: args[k] for k in ("seed",) if k in args}


def _describe(step: Any, job: Route) -> str:
    if step.agent == roles.CRITIC_AGENT_NAME:
        return "scoring the candidates and keeping the best"
    doing = TOOL_TABLE[step.tool].doing if step.tool else "writing the detailed prompt"
    if job.best_of > 1 and step.tool in (*FRAME_TOOLS, "image_to_video"):  # the steps each candidate repeats
        doing += f" (candidate {job.candidate + 1} of {job.best_of})"
    return doing

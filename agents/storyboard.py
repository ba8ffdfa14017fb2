"""storyboard_agent: the AutoGen agent that turns a story into a storyboard (`mora story`).

With an LLM, its answer is untrusted JSON: parsed (never evaluated), checked by the caller's
validator (`mora.workflows.storyboard.validate_storyboard`, passed in so imports flow one way) and
retried with the reason (`mora.agents.asking.ask`); after `LLM_ATTEMPTS` unusable answers the
deterministic storyboard is used and counted as a fallback. Without an LLM the agent answers with
the deterministic storyboard.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import autogen

from mora.agents.asking import Retry, ask
from mora.agents.llm import autogen_llm_config
from mora.agents.roles import DESCRIPTIONS, STORYBOARD_AGENT, STORYBOARD_AGENT_NAME
from mora.errors import InputError

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 200_000


@dataclass
class StoryboardAnswer:
    """What storyboard_agent decided: the storyboard and how it came about (for the manifest's `llm`)."""

    storyboard: dict
    source: str  # "llm" or "deterministic"
    fallbacks: int = 0
    faults: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def steps(self) -> list[dict]:
        """The manifest's `llm.steps` for this answer (`mora.agents.asking.Answer.step`): none when no LLM was asked."""
        if self.source == "llm" or self.fallbacks:
            return [{"agent": STORYBOARD_AGENT_NAME, "answer": "fallback" if self.fallbacks else "llm"}]
        return []


def make_storyboard_agent(config_list: list[dict] | None) -> autogen.ConversableAgent:
    """storyboard_agent with its role system message (an LLM agent when a config list is given)."""
    return autogen.ConversableAgent(
        STORYBOARD_AGENT_NAME, system_message=STORYBOARD_AGENT, llm_config=autogen_llm_config(config_list),
        human_input_mode="NEVER", code_execution_config=False, description=DESCRIPTIONS[STORYBOARD_AGENT_NAME],
    )


def parse_json_answer(answer: Any) -> Any:
    """The JSON object of an LLM answer (a bare object or one in a ```json fence); InputError if none."""
    content = answer.get("content") if isinstance(answer, dict) else answer
    if not isinstance(content, str) or not content.strip():
        raise InputError("storyboard_agent answer: empty; answer with the storyboard JSON")
    if len(content) > MAX_ANSWER_CHARS:
        raise InputError(f"storyboard_agent answer: {len(content)} characters; at most {MAX_ANSWER_CHARS}")
    fenced = re.search(r"```(?:json)?\s*(.*?)```", content, re.S)
    text = fenced.group(1) if fenced else content
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"storyboard_agent answer: not valid JSON ({e.msg} at line {e.lineno}); "
                         "answer with JSON only") from None


def write_storyboard(story: str, shots: int, seconds: float, *, config_list: list[dict] | None,
                     validate: Callable[[Any], dict], fallback: Callable[[], dict]) -> StoryboardAnswer:
    """Ask storyboard_agent for the storyboard of `story`.

    Args:
        story: the user's story.
        shots, seconds: how many shots and how long each (told to the LLM; the validator enforces them).
        config_list: OpenAI-compatible entries, or None (deterministic storyboard, no LLM call).
        validate: `data -> clean storyboard`, raising InputError naming the problem.
        fallback: the deterministic storyboard.

    Example:
        >>> write_storyboard("A fox wakes.", 1, 1.0, config_list=None, validate=dict,
        ...                  fallback=lambda: {"shots": []}).source
        'deterministic'
    """
    if not config_list:
        return StoryboardAnswer(fallback(), "deterministic")
    agent = make_storyboard_agent(config_list)
    request = (f"Story: {story}\nShots: exactly {shots}. Seconds per shot: {seconds:g}.\n"
               "Answer with the storyboard JSON only.")

    def ask_once(retry: Retry | None) -> Any:
        messages = [{"role": "user", "content": request}]
        if retry is not None:
            messages.append({"role": "user", "content": f"That answer was unusable: {retry.reason}. {request}"})
        ok, answer = agent.generate_oai_reply(messages=messages, sender=None)
        if not ok:
            raise InputError("storyboard_agent answer: none")
        return answer

    def valid(answer: Any) -> dict:
        board = validate(parse_json_answer(answer))
        if len(board["shots"]) != shots:
            raise InputError(f"shots: {len(board['shots'])} shots; write exactly {shots}")
        return board

    asked = ask(ask_once, valid, agent=STORYBOARD_AGENT_NAME, config_list=config_list,
                fallback="using the deterministic storyboard")
    if asked.value is None:
        return StoryboardAnswer(fallback(), "deterministic", 1, asked.faults, asked.seconds)
    logger.info("storyboard_agent: LLM storyboard %r, %d shots", asked.value["title"], len(asked.value["shots"]))
    return StoryboardAnswer(asked.value, "llm", 0, asked.faults, asked.seconds)

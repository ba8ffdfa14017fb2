"""Asking an LLM for an answer Mora can use: the one "ask, validate, retry, else fall back" loop.

Every LLM step goes through `ask`: the team's prompt and tool steps, the critic's vision judge
(best-of and the training filter's vote), storyboard_agent and the chat's director. It makes at
most `LLM_ATTEMPTS` requests (shared out over the config's entries, `step_attempts`); an answer the
caller's validator refuses, or a failing endpoint, is a fault, whose reason goes back to the LLM
on the next try. The outcome is an `Answer`: the value, or "fell back" with every fault, in the
record shape the manifest counts (`Answer.step`, `mora.workflows.manifest.llm_record`).

A fault's reason is masked of every key in the config *before* it is shortened: an endpoint may
echo the key, and a cut through it would leave the key's first part in logs and manifests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from mora.agents.llm import llm_errors, scrub, step_attempts
from mora.agents.toolcalls import ToolCallFault
from mora.errors import one_line

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_REASON_CHARS = 200  # a fault's reason in logs, manifests and the retry message
# What a validator raises for an unusable answer (InputError and pydantic's errors are ValueErrors).
ANSWER_FAULTS: tuple[type[BaseException], ...] = (ValueError, ToolCallFault)


@dataclass(frozen=True)
class Retry:
    """What `ask` tells `ask_once` before a retry: why the last unusable answer was refused, and that
    raw answer (None when there was none). The reason is masked and shortened, safe to send."""

    reason: str
    answer: Any = None


@dataclass
class Answer(Generic[T]):
    """The outcome of one LLM step.

    Attributes:
        agent: who asked (the step's record names it).
        value: the validated answer, or None when the step fell back.
        used: True when the LLM's answer is used; False: every try failed, the caller falls back.
        reasons: why each failed try failed, keys masked (`faults` names the agent and the try).
        tries: tries made (a try asks each config entry in turn until one answers).
        seconds: time spent asking.
        endpoint_failed: the last failed try's endpoint failed (HTTP, timeout), rather than its answer.
    """

    agent: str
    value: T | None = None
    used: bool = False
    reasons: list[str] = field(default_factory=list)
    tries: int = 0
    seconds: float = 0.0
    endpoint_failed: bool = False

    @property
    def faults(self) -> list[str]:
        """`"AGENT try N: REASON"` per failed try, as the manifest's `llm.faults` lists them."""
        return [f"{self.agent} try {n}: {why}" for n, why in enumerate(self.reasons, start=1)]

    @property
    def step(self) -> dict:
        """The step's record, as `llm_record` counts it: `{"agent", "answer": "llm" | "fallback"}`."""
        return {"agent": self.agent, "answer": "llm" if self.used else "fallback"}

    @property
    def reason(self) -> str | None:
        """The last failed try's reason, or None."""
        return self.reasons[-1] if self.reasons else None

    def record(self, steps: list[dict], faults: list[str]) -> None:
        """Add this step to a job's record (`RouteRun.llm_steps`, `RouteRun.llm_faults`)."""
        steps.append(self.step)
        faults.extend(self.faults)


def reason(error: BaseException, config_list: list[dict] | None) -> str:
    """`error` as one line, keys masked first and then shortened to `MAX_REASON_CHARS`.

    An unusable answer's reason is its message (written for the LLM); an endpoint's error is
    prefixed with its type (`InternalServerError: ...`, `APITimeoutError: ...`).

    Example:
        >>> reason(ValueError("bad key sk-abc123 " + "x" * 300), [{"model": "m", "api_key": "sk-abc123"}])[:12]
        'bad key *** '
    """
    # masked, then cut; an answer's fault is its message alone (it was written for the LLM)
    return one_line(error, limit=MAX_REASON_CHARS, mask=lambda t: scrub(t, config_list),
                    typed=False if isinstance(error, ANSWER_FAULTS) else None)


def ask(ask_once: Callable[[Retry | None], Any], validate: Callable[[Any], T], *, agent: str,
        config_list: list[dict] | None, attempts: int | None = None,
        fallback: str = "using the scripted answer") -> Answer[T]:
    """Ask, validate, retry with the reason; the value, or "fell back" with every fault.

    Args:
        ask_once: makes one request; gets None the first time, then the `Retry` of the last
            unusable answer (None again after endpoint failures only: the same request is resent).
            It raises an `llm_errors()` error when the endpoint fails.
        validate: `raw answer -> value`; raises a ValueError (InputError) or ToolCallFault naming
            what is wrong with an unusable answer. Any other exception is a bug and propagates.
        agent: the asking agent's name (records and logs).
        config_list: the entries whose keys are masked from every reason.
        attempts: tries at most; default `step_attempts(config_list)`, i.e. `LLM_ATTEMPTS` requests.
        fallback: what the caller does when no answer is usable (for the warning).

    Example:
        >>> ask(lambda retry: "4" if retry else "four", int, agent="a", config_list=None).value
        4
    """
    attempts = step_attempts(config_list) if attempts is None else attempts
    answer: Answer[T] = Answer(agent)
    retry: Retry | None = None
    started = time.perf_counter()
    try:
        for attempt in range(1, attempts + 1):
            raw = None
            answer.tries = attempt
            try:
                raw = ask_once(retry)
                answer.value, answer.used = validate(raw), True
                return answer
            except (*ANSWER_FAULTS, *llm_errors()) as e:  # HTTP, timeout, empty or unusable answer
                why = reason(e, config_list)
                answer.reasons.append(why)
                answer.endpoint_failed = isinstance(e, llm_errors())
                logger.debug("%s: LLM answer %d/%d unusable: %s", agent, attempt, attempts, why)
                if not answer.endpoint_failed:  # an endpoint failure says nothing about the LLM's answers
                    retry = Retry(why, raw)
        logger.warning("%s: no usable LLM answer after %d tries (%s); %s", agent, attempts,
                       answer.reason or "no try", fallback)
        return answer
    finally:
        answer.seconds = round(time.perf_counter() - started, 3)

"""The critic's vision judge: an LLM that sees the candidates' first frames and ranks them.

The paper filters generated data with a multimodal LLM; here the judge is used only when an
entry of the LLM config is tagged "vision" (`"tags": ["vision"]`), since nothing else says which
models accept images. Its answer is untrusted: it must be a JSON ranking that is a permutation of
the candidate indices, else the score card alone decides.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import autogen

from mora.agents.team import autogen_llm_config

logger = logging.getLogger(__name__)

CRITIC_SYSTEM_MESSAGE = """You are critic_agent, the quality judge of Mora. You receive N candidate first frames of
a video and the prompt they were made for. Rank them by how well they match the prompt, their visual quality and how
good a starting frame they make for animation. Answer with JSON only: {"ranking": [best index, ..., worst index]}
using the 0-based candidate indices, each exactly once. Never add prose, never invent candidates."""


def vision_config(config_list: list[dict] | None) -> list[dict] | None:
    """The config entries tagged "vision", or None when no entry says it accepts images."""
    entries = [e for e in (config_list or []) if "vision" in (e.get("tags") or [])]
    return entries or None


def make_critic(config_list: list[dict] | None) -> autogen.ConversableAgent:
    """critic_agent: a vision LLM judge when a vision entry exists, else a score-card-only critic."""
    vision = vision_config(config_list)
    return autogen.ConversableAgent(
        "critic_agent", system_message=CRITIC_SYSTEM_MESSAGE, llm_config=autogen_llm_config(vision),
        human_input_mode="NEVER", code_execution_config=False,
        description="Scores candidate videos and keeps the best (score card, optional vision judge).",
    )


def _data_uri(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def parse_ranking(answer: object, count: int) -> list[int]:
    """A ranking from the judge's answer; ValueError unless it is a permutation of range(count)."""
    text = answer.get("content") if isinstance(answer, dict) else answer
    if not isinstance(text, str):
        raise ValueError("no text answer")
    match = re.search(r"\{.*\}", text, re.S)
    if not match:
        raise ValueError("no JSON object in the answer")
    ranking = json.loads(match.group(0)).get("ranking")
    if not isinstance(ranking, list) or sorted(ranking) != list(range(count)) or any(
        isinstance(i, bool) for i in ranking
    ):
        raise ValueError(f"ranking {ranking!r} is not a permutation of 0..{count - 1}")
    return [int(i) for i in ranking]


def judge(critic: autogen.ConversableAgent, image_paths: list[str], prompt: str | None) -> list[int]:
    """Ask the vision LLM to rank the first frames; raises on any fault (the caller falls back)."""
    content: list[dict] = [{"type": "text", "text": f"Prompt: {prompt or '(none)'}. {len(image_paths)} candidates:"}]
    for i, path in enumerate(image_paths):
        content += [{"type": "text", "text": f"Candidate {i}:"},
                    {"type": "image_url", "image_url": {"url": _data_uri(path)}}]
    ok, answer = critic.generate_oai_reply(messages=[{"role": "user", "content": content}])
    if not ok:
        raise ValueError("the vision judge gave no answer")
    return parse_ranking(answer, len(image_paths))

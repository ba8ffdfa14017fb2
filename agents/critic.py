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
from typing import Any

import autogen

from mora.agents.llm import autogen_llm_config
from mora.agents.roles import CRITIC, CRITIC_AGENT_NAME
from mora.errors import one_line

logger = logging.getLogger(__name__)


def vision_config(config_list: list[dict] | None) -> list[dict] | None:
    """The config entries tagged "vision", or None when no entry says it accepts images."""
    entries = [e for e in (config_list or []) if "vision" in (e.get("tags") or [])]
    return entries or None


def make_critic(config_list: list[dict] | None) -> autogen.ConversableAgent:
    """critic_agent: a vision LLM judge when a vision entry exists, else a score-card-only critic."""
    vision = vision_config(config_list)
    return autogen.ConversableAgent(
        CRITIC_AGENT_NAME, system_message=CRITIC, llm_config=autogen_llm_config(vision),
        human_input_mode="NEVER", code_execution_config=False,
        description="Scores candidate videos and keeps the best (score card, optional vision judge).",
    )


def _data_uri(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _json_object(answer: object, pattern: str) -> Any:
    """The JSON object in a judge's answer (a reply dict or its text); ValueError when there is none."""
    text = answer.get("content") if isinstance(answer, dict) else answer
    if not isinstance(text, str):
        raise ValueError("no text answer")
    match = re.search(pattern, text, re.S)
    if not match:
        raise ValueError("no JSON object in the answer")
    try:
        return json.loads(match.group(0))
    except json.JSONDecodeError as e:
        raise ValueError(f"the JSON object is malformed ({e.msg})") from None


def parse_ranking(answer: object, count: int) -> list[int]:
    """A ranking from the judge's answer; ValueError unless it is a permutation of range(count)."""
    data = _json_object(answer, r"\{.*\}")
    ranking = data.get("ranking") if isinstance(data, dict) else None
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


def rank_candidates(
    critic: autogen.ConversableAgent, candidates: list[dict], prompt: str | None, config_list: list[dict] | None,
) -> tuple[list[int], list[int] | None, str | None]:
    """Score every candidate video (adds `scores` and `quality` to each) and ask the vision judge.

    Returns (ranking by the score card, ranking by the judge or None, the judge's error or None).
    A judge that fails (HTTP error, unusable answer) abstains: its error, scrubbed of API keys,
    is returned for the manifest and the score card decides.
    """
    from mora import media
    from mora.agents.llm import llm_errors, scrub
    from mora.evaluation import score_video
    from mora.evaluation.critic import quality, rank_by_scores

    cards = []
    for candidate in candidates:
        video = media.read_video(candidate["video"], argument="video")
        card = score_video(video.frames, fps=video.fps)
        candidate.update(scores=card, quality=quality(card))
        cards.append(card)
    by_judge, judge_error = None, None
    if vision_config(config_list):
        try:
            by_judge = judge(critic, [c["image"] for c in candidates], prompt)
        except (ValueError, *llm_errors()) as e:
            judge_error = scrub(one_line(e, limit=200), config_list)
            logger.warning("critic_agent: the vision judge abstains (%s); the score card decides", judge_error)
    return rank_by_scores(cards), by_judge, judge_error


# --- the data-free loop's filter: every vision LLM votes for one candidate (or none) --------------

VOTE_RETRIES = 2  # an answer that is not a valid choice is asked again this many times, then abstains
VOTE_INSTRUCTION = (
    "You are a strict judge of generated training videos. Each candidate below is shown as a contact "
    "sheet of frames in time order, left to right. Pick the one candidate that best matches the prompt "
    "with a coherent subject and smooth, plausible motion, or none if no candidate is usable. Answer "
    'with JSON only: {"choice": N} with N a candidate number, or {"choice": "none"}.'
)


def vision_judges(config_list: list[dict] | None) -> list[tuple[str, dict]]:
    """(judge name, config entry) for every entry tagged "vision"; names are the model names, made unique."""
    judges: list[tuple[str, dict]] = []
    for entry in vision_config(config_list) or []:
        name, n = f"llm:{entry['model']}", 2
        while any(name == j for j, _ in judges):
            name, n = f"llm:{entry['model']}#{n}", n + 1
        judges.append((name, entry))
    return judges


def parse_choice(answer: object, count: int) -> int | str:
    """A validated vote: a candidate number in 1..count or "none"; ValueError for anything else.

    Example:
        >>> parse_choice('{"choice": 2}', 3), parse_choice('sure: {"choice": "none"}', 3)
        (2, 'none')
    """
    data = _json_object(answer, r"\{.*?\}")
    choice = data.get("choice") if isinstance(data, dict) else None
    if isinstance(choice, str) and choice.strip().lower() == "none":
        return "none"
    if isinstance(choice, int) and not isinstance(choice, bool) and 1 <= choice <= count:
        return choice
    raise ValueError(f"choice {choice!r} is neither a candidate number 1..{count} nor \"none\"")


def _vote_request(sheets: list[str], prompt: str | None) -> list[dict]:
    content: list[dict] = [{"type": "text", "text": f"{VOTE_INSTRUCTION}\nPrompt: {prompt or '(none)'}. "
                                                    f"{len(sheets)} candidates:"}]
    for i, path in enumerate(sheets, start=1):
        content += [{"type": "text", "text": f"Candidate {i}:"},
                    {"type": "image_url", "image_url": {"url": _data_uri(path)}}]
    return [{"role": "user", "content": content}]


def vote(entry: dict, sheets: list[str], prompt: str | None, config_list: list[dict] | None = None,
         retries: int = VOTE_RETRIES) -> tuple[int | str | None, str | None]:
    """One vision LLM's vote on candidates shown as contact sheets (several frames each).

    Returns (choice, error): choice is a candidate number (1-based), "none", or None when the judge
    abstains (an HTTP error, or no valid choice after `retries` corrections); error is why, scrubbed
    of every key in `config_list` (and `entry`), for the record. Never raises for the judge's faults.
    """
    from mora.agents.llm import llm_errors, scrub

    secrets = [entry, *(config_list or [])]
    agent = autogen.ConversableAgent("vision_judge", system_message=CRITIC, llm_config=autogen_llm_config([entry]),
                                     human_input_mode="NEVER", code_execution_config=False)
    messages = _vote_request(sheets, prompt)
    error = None
    for _attempt in range(retries + 1):
        ok, answer = False, None
        try:
            ok, answer = agent.generate_oai_reply(messages=messages)
            if not ok:
                raise ValueError("the judge gave no answer")
            return parse_choice(answer, len(sheets)), None
        except ValueError as e:
            error = f"invalid answer: {e}"
            text = answer.get("content") if isinstance(answer, dict) else answer
            messages = [*messages, {"role": "assistant", "content": str(text)[:2000]},
                        {"role": "user", "content": 'Answer with JSON only: {"choice": N} (a candidate number) '
                                                    'or {"choice": "none"}.'}]
        except llm_errors() as e:
            error = one_line(e, limit=200)
            break
    error = scrub(error or "no answer", secrets)
    logger.warning("vision judge %s abstains: %s", entry.get("model"), error)
    return None, error

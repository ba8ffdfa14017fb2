"""The critic's vision judge: an LLM that sees the candidates and picks the best (or none).

The paper filters generated data with a multimodal LLM; here the judge is used only when an
entry of the LLM config is tagged "vision" (`"tags": ["vision"]`), since nothing else says which
models accept images. It judges for best-of (the candidates' first frames) and for the training
filter (contact sheets), always in one answer format (`mora.agents.roles.JUDGE_ANSWER`, quoted by
the system message and every request) read by one function (`parse_choice`). Its answer is
untrusted: anything but a valid choice is a fault, and the score card alone decides.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import autogen

from mora.agents.asking import Answer, Retry, ask
from mora.agents.llm import autogen_llm_config, step_attempts
from mora.agents.roles import CRITIC, CRITIC_AGENT_NAME, JUDGE_ANSWER

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


def parse_choice(answer: object, count: int) -> int | str:
    """The judge's answer (`JUDGE_ANSWER`) read: the chosen candidate's index (0-based, in the order shown)
    or "none"; ValueError for anything else. The one reader of the judge's answers.

    Example:
        >>> parse_choice('{"choice": 2}', 3), parse_choice('sure: {"choice": "none"}', 3)
        (1, 'none')
    """
    data = _json_object(answer, r"\{.*?\}")
    choice = data.get("choice") if isinstance(data, dict) else None
    if isinstance(choice, str) and choice.strip().lower() == "none":
        return "none"
    if isinstance(choice, int) and not isinstance(choice, bool) and 1 <= choice <= count:
        return choice - 1  # the judge names candidates as labelled, from 1
    raise ValueError(f"choice {choice!r} is neither a candidate number 1..{count} nor \"none\"")


def judge_request(images: list[str], prompt: str | None, shown: str) -> list[dict]:
    """The user message to the judge: the prompt, each image labelled "Candidate N" (from 1), the answer format."""
    content: list[dict] = [{"type": "text", "text": f"Prompt: {prompt or '(none)'}. {len(images)} candidates, "
                                                    f"{shown}:"}]
    for number, path in enumerate(images, start=1):
        content += [{"type": "text", "text": f"Candidate {number}:"},
                    {"type": "image_url", "image_url": {"url": _data_uri(path)}}]
    content.append({"type": "text", "text": f"Answer with {JUDGE_ANSWER}."})
    return [{"role": "user", "content": content}]


def _judge_asking(agent: autogen.ConversableAgent, images: list[str], prompt: str | None, shown: str
                  ) -> Callable[[Retry | None], Any]:
    """`ask_once` for the judge: the request, and on a retry its unusable answer and the reason."""
    request = judge_request(images, prompt, shown)

    def ask_once(retry: Retry | None) -> Any:
        again = []
        if retry is not None:
            if retry.answer is not None:
                text = retry.answer.get("content") if isinstance(retry.answer, dict) else retry.answer
                again.append({"role": "assistant", "content": str(text)[:2000]})
            again.append({"role": "user", "content": f"That answer was unusable: {retry.reason}. "
                                                     f"Answer with {JUDGE_ANSWER}."})
        ok, answer = agent.generate_oai_reply(messages=[*request, *again])
        if not ok:
            raise ValueError("the vision judge gave no answer")
        return answer

    return ask_once


def rank_candidates(
    critic: autogen.ConversableAgent, candidates: list[dict], prompt: str | None, config_list: list[dict] | None,
) -> tuple[list[int], Answer[int | str] | None]:
    """Score every candidate video (adds `scores` and `quality` to each) and ask the vision judge.

    Returns (ranking by the score card, the judge's `Answer`: its value an index or "none"; None
    when there is no judge). A judge that fails (HTTP errors, unusable answers, `LLM_ATTEMPTS`
    requests) abstains: its faults, keys masked, go to the manifest and the score card decides.
    """
    from mora import media
    from mora.evaluation import score_video
    from mora.evaluation.critic import quality, rank_by_scores

    cards = []
    for candidate in candidates:
        video = media.read_video(candidate["video"], argument="video")
        card = score_video(video.frames, fps=video.fps)
        candidate.update(scores=card, quality=quality(card))
        cards.append(card)
    vision = vision_config(config_list)
    judged = None
    if vision:
        images = [c["image"] for c in candidates]
        judged = ask(_judge_asking(critic, images, prompt, "each shown by its first frame"),
                     lambda answer: parse_choice(answer, len(images)), agent=critic.name,
                     config_list=config_list, attempts=step_attempts(vision),
                     fallback="the vision judge abstains; the score card decides")
    return rank_by_scores(cards), judged


# --- the data-free loop's filter: every vision LLM votes for one candidate (or none) --------------

VOTE_SHOWN = ("each shown as a contact sheet of frames in time order, left to right; be strict: these are training "
              "videos")


def vision_judges(config_list: list[dict] | None) -> list[tuple[str, dict]]:
    """(judge name, config entry) for every entry tagged "vision"; names are the model names, made unique."""
    judges: list[tuple[str, dict]] = []
    for entry in vision_config(config_list) or []:
        name, n = f"llm:{entry['model']}", 2
        while any(name == j for j, _ in judges):
            name, n = f"llm:{entry['model']}#{n}", n + 1
        judges.append((name, entry))
    return judges


def vote(entry: dict, sheets: list[str], prompt: str | None, config_list: list[dict] | None = None,
         ) -> tuple[int | str | None, str | None]:
    """One vision LLM's vote on candidates shown as contact sheets (several frames each).

    Returns (choice, error): choice is the chosen sheet's index (0-based), "none", or None when the judge
    abstains (no valid choice in `LLM_ATTEMPTS` requests: HTTP errors or invalid answers); error is
    the last fault's reason, keys of `config_list` (and `entry`) masked, for the record. Never raises
    for the judge's faults.
    """
    agent = autogen.ConversableAgent("vision_judge", system_message=CRITIC, llm_config=autogen_llm_config([entry]),
                                     human_input_mode="NEVER", code_execution_config=False)

    def valid(answer: Any) -> int | str:
        try:
            return parse_choice(answer, len(sheets))
        except ValueError as e:
            raise ValueError(f"invalid answer: {e}") from None

    judged = ask(_judge_asking(agent, sheets, prompt, VOTE_SHOWN), valid, agent=f"vision judge {entry.get('model')}",
                 config_list=[entry, *(config_list or [])], attempts=step_attempts([entry]),
                 fallback="it abstains")
    return (judged.value, None) if judged.used else (None, judged.reason)

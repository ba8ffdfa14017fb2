"""The critic's arithmetic: one quality number per score card, and how candidates are chosen.

`quality` is the mean of the score card's [0, 1] quality dimensions (subject and background
consistency, motion smoothness, temporal flickering, imaging quality), with a 0.1 weight on
dynamic degree so that a frozen video does not win on consistency alone (VBench's quality score
likewise mixes consistency with dynamics). The vision judge (an LLM that sees the first frames and
picks one) lives in `mora.agents.critic`; this module only decides between the two.
"""

from __future__ import annotations

from typing import Any

QUALITY_KEYS = ("subject_consistency", "background_consistency", "motion_smoothness", "temporal_flickering",
                "imaging_quality")
DYNAMIC_WEIGHT = 0.1


def quality(card: dict[str, Any]) -> float:
    """One number in [0, 1] from a score card (higher is better).

    Example:
        >>> quality({"subject_consistency": 1, "background_consistency": 1, "motion_smoothness": 1,
        ...          "temporal_flickering": 1, "imaging_quality": 1, "dynamic_degree": 0})
        0.9
    """
    values = [float(card[k]) for k in QUALITY_KEYS if card.get(k) is not None]
    base = sum(values) / len(values) if values else 0.0
    return round((1 - DYNAMIC_WEIGHT) * base + DYNAMIC_WEIGHT * float(card.get("dynamic_degree") or 0), 4)


def rank_by_scores(cards: list[dict[str, Any]]) -> list[int]:
    """Candidate indices, best first, by `quality` (ties keep the earlier candidate first)."""
    return sorted(range(len(cards)), key=lambda i: (-quality(cards[i]), i))


def choose(score_ranking: list[int], judge_choice: int | str | None, reviewer_pick: int | None = None
           ) -> tuple[int, str]:
    """The winner and why: score card alone, judge and score card agreeing, or a disagreement settled
    by the reviewer (when there is one) or else by the score card.

    `judge_choice` is the vision judge's pick (a candidate index), "none" (it found none usable: a
    candidate must still be kept), or None (no judge, or it failed)."""
    best = score_ranking[0]
    if judge_choice is None:
        return best, "score card"
    if judge_choice == "none":
        return best, "the vision judge found no candidate usable; the score card decides"
    if judge_choice == best:
        return best, "score card and vision judge agree"
    if reviewer_pick is not None:
        return reviewer_pick, "vision judge and score card disagree; the reviewer chose"
    return best, "vision judge and score card disagree; the score card decides"

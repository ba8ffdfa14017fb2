"""The critic: best-of-N candidates judged by the score card and, with a vision LLM, by the judge."""

from __future__ import annotations

import json

import pytest

import mora
from mora.agents.critic import parse_ranking, vision_config
from mora.errors import InputError
from mora.evaluation.critic import choose, quality, rank_by_scores

PERFECT = dict(subject_consistency=1.0, background_consistency=1.0, motion_smoothness=1.0, temporal_flickering=1.0,
               imaging_quality=1.0)


def test_quality_rewards_motion_and_stays_in_range():
    assert quality({**PERFECT, "dynamic_degree": 1}) == 1.0
    assert quality({**PERFECT, "dynamic_degree": 0}) == 0.9  # a frozen clip cannot win on consistency alone
    assert quality({k: 0.0 for k in PERFECT} | {"dynamic_degree": 0}) == 0.0
    # a missing metric (e.g. motion smoothness of a 2-frame clip) is left out, not counted as 0
    assert quality({**PERFECT, "motion_smoothness": None, "dynamic_degree": 1}) == 1.0


def test_ranking_and_choice_rules():
    cards = [{**PERFECT, "imaging_quality": 0.2}, {**PERFECT}, {**PERFECT, "imaging_quality": 0.2}]
    assert rank_by_scores(cards) == [1, 0, 2]  # ties keep the earlier candidate first
    assert choose([1, 0, 2], None) == (1, "score card")
    assert choose([1, 0, 2], [1, 2, 0])[0] == 1
    assert choose([1, 0, 2], [2, 1, 0]) == (1, "vision judge and score card disagree; the score card decides")
    assert choose([1, 0, 2], [2, 1, 0], reviewer_pick=2)[0] == 2


@pytest.mark.parametrize("answer", [
    "no json here", '{"ranking": [0, 0, 1]}', '{"ranking": [0, 1]}', '{"ranking": [0, 1, 3]}',
    '{"ranking": "0,1,2"}', '{"ranking": [true, 0, 1]}', {"content": None},
])
def test_judge_answers_that_are_not_a_permutation_are_rejected(answer):
    with pytest.raises(ValueError):
        parse_ranking(answer, 3)


def test_judge_answer_in_a_code_fence_is_read():
    assert parse_ranking('```json\n{"ranking": [2, 0, 1]}\n```', 3) == [2, 0, 1]


def test_only_entries_tagged_vision_judge():
    assert vision_config([{"model": "m"}]) is None
    assert vision_config([{"model": "m"}, {"model": "v", "tags": ["vision"]}]) == [{"model": "v", "tags": ["vision"]}]


PROMPT = "a red fox running through snow"


def _run(tmp_path, **kwargs):
    options = dict(preset="tiny", device="cpu", progress=False, seed=3, out=tmp_path / "best.mp4")
    return mora.run("text-to-video", prompt=PROMPT, **{**options, **kwargs})


def test_best_of_keeps_the_best_candidate_by_the_score_card(tmp_path):
    result = _run(tmp_path, best_of=3)
    m = result.manifest
    assert m["route"] == ["prompt_agent", *["text_to_image_agent", "image_to_video_agent"] * 3, "critic_agent"]
    candidates = m["candidates"]
    assert [c["seed"] for c in candidates] == [3, 4, 5]
    assert len({c["video"] for c in candidates}) == 3
    qualities = [c["quality"] for c in candidates]
    assert m["critic"]["winner"] == max(range(3), key=lambda i: (qualities[i], -i))
    assert m["critic"]["score_ranking"][0] == m["critic"]["winner"]
    assert m["critic"]["judge_ranking"] is None  # no LLM: the score card alone decides
    winner = candidates[m["critic"]["winner"]]
    assert result.video_path.read_bytes() == open(winner["video"], "rb").read()
    assert all(0.0 <= c["scores"]["temporal_flickering"] <= 1.0 for c in candidates)
    on_disk = json.loads(result.manifest_path.read_text())
    assert on_disk["candidates"] == json.loads(json.dumps(candidates))


def test_best_of_only_for_text_to_video_and_simulate(tmp_path):
    from conftest import gradient_frames

    from mora import media

    video = media.write_video(gradient_frames(3, 32, 32), tmp_path / "clip.mp4", fps=8)
    with pytest.raises(InputError, match="^best_of: 2 is not an input or option of connect; it is for text-to-video"):
        mora.run("connect", video_a=video, video_b=video, preset="tiny", best_of=2)
    with pytest.raises(InputError, match="^best_of: 9 is out of range; pass a number <= 8"):
        _run(tmp_path, best_of=9)


def _vision_server(fake, ranking):
    """Answer the judge's request (the one with images) with `ranking`; others get the default text.

    The prompt agent is scripted to answer the deterministic enhancement, and the tool agents fall
    back to their scripted calls, so the candidates equal those of a run without an LLM.
    """
    from mora.agents.enhance import enhance_prompt

    fake.push_text(enhance_prompt(PROMPT))
    original = fake._next

    def respond(body, headers):
        spec = original(body, headers)
        has_images = any(isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
                         for m in body.get("messages", []))
        if has_images:
            return {"kind": "text", "content": ranking}
        return spec

    fake._next = respond
    return [{**fake.config_list[0], "tags": ["vision"]}]


def _judge_requests(fake):
    return [r for r in fake.requests
            if any(isinstance(m.get("content"), list) for m in r.get("messages", []))]


def test_vision_judge_disagreeing_without_reviewer_leaves_it_to_the_score_card(tmp_path, fake_openai):
    # Same seeds give the same candidates: the judge is scripted to reverse the score card's ranking.
    baseline = _run(tmp_path / "a", best_of=2).manifest["critic"]["score_ranking"]
    config = _vision_server(fake_openai, json.dumps({"ranking": list(reversed(baseline))}))
    m = _run(tmp_path / "b", best_of=2, llm_config=config).manifest
    assert len(_judge_requests(fake_openai)) == 1
    images = [p for p in _judge_requests(fake_openai)[0]["messages"][-1]["content"] if p["type"] == "image_url"]
    assert len(images) == 2 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert m["critic"]["judge_ranking"] == list(reversed(baseline))
    assert m["critic"]["winner"] == m["critic"]["score_ranking"][0]
    assert {"agent": "critic_agent", "answer": "llm"} in m["llm"]["steps"]
    assert "score card decides" in m["critic"]["reason"]


def test_reviewer_settles_a_disagreement(tmp_path, fake_openai):
    baseline = _run(tmp_path / "a", best_of=2).manifest["critic"]["score_ranking"]
    config = _vision_server(fake_openai, json.dumps({"ranking": list(reversed(baseline))}))
    asked = []

    def review(image, info):
        if "critic" in info:
            asked.append(image)
        return "approve"

    m = _run(tmp_path / "b", best_of=2, llm_config=config, review=review).manifest
    judge_pick = baseline[-1]
    assert asked == [m["candidates"][judge_pick]["image"]]
    assert m["critic"]["winner"] == judge_pick
    assert "reviewer chose" in m["critic"]["reason"]


def test_malformed_judge_answer_falls_back_to_the_score_card(tmp_path, fake_openai):
    config = _vision_server(fake_openai, "I like the second one best!")
    m = _run(tmp_path, best_of=2, llm_config=config).manifest
    assert m["critic"]["judge_ranking"] is None
    assert "judge_error" in m["critic"]
    assert m["critic"]["winner"] == m["critic"]["score_ranking"][0]
    assert any(f.startswith("critic_agent") for f in m["llm"]["faults"])
    assert {"agent": "critic_agent", "answer": "fallback"} in m["llm"]["steps"]

"""The critic: best-of-N candidates judged by the score card and, with a vision LLM, by the judge
(one answer format, `JUDGE_ANSWER`, for best-of and the training filter)."""

from __future__ import annotations

import json

import pytest

import mora
from mora.agents.critic import parse_choice, vision_config, vote
from mora.agents.roles import CRITIC, JUDGE_ANSWER
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
    assert choose([1, 0, 2], 1) == (1, "score card and vision judge agree")
    assert choose([1, 0, 2], 2) == (1, "vision judge and score card disagree; the score card decides")
    assert choose([1, 0, 2], 2, reviewer_pick=2)[0] == 2
    assert choose([1, 0, 2], "none") == (1, "the vision judge found no candidate usable; the score card decides")


@pytest.mark.parametrize("answer", [
    "no json here", '{"ranking": [0, 1, 2]}', '{"choice": 0}', '{"choice": 4}', '{"choice": "2"}',
    '{"choice": true}', '{"choice": [1]}', {"content": None},
])
def test_judge_answers_that_are_not_a_choice_are_rejected(answer):
    with pytest.raises(ValueError):
        parse_choice(answer, 3)


def test_judge_answer_is_read_as_labelled():
    assert parse_choice('```json\n{"choice": 3}\n```', 3) == 2  # "Candidate 3" is the third: index 2
    assert parse_choice('{"choice": 1}', 3) == 0 and parse_choice('{"choice": "None"}', 3) == "none"


def test_system_and_user_messages_name_the_one_format():
    assert JUDGE_ANSWER in CRITIC and "ranking" not in CRITIC and "0-based" not in CRITIC


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
    assert m["critic"]["judge_choice"] is None  # no LLM: the score card alone decides
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


def _vision_server(fake, answer):
    """Answer the judge's request (the one with images) with `answer`; others get the default text.

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
            return {"kind": "text", "content": answer}
        return spec

    fake._next = respond
    return [{**fake.config_list[0], "tags": ["vision"]}]


def _judge_requests(fake):
    return [r for r in fake.requests
            if any(isinstance(m.get("content"), list) for m in r.get("messages", []))]


def _says_the_format(request: dict) -> None:
    """The request's system message and its user message both state JUDGE_ANSWER, and no other format."""
    system = [m["content"] for m in request["messages"] if m["role"] == "system"]
    user = " ".join(p["text"] for m in request["messages"] if m["role"] == "user" and isinstance(m["content"], list)
                    for p in m["content"] if p["type"] == "text")
    assert len(system) == 1 and JUDGE_ANSWER in system[0] and JUDGE_ANSWER in user
    assert "ranking" not in system[0] + user and "Candidate 1:" in user and "Candidate 0:" not in user


def _choice(index: int) -> str:
    """The judge's answer picking the candidate at `index` (labelled index + 1)."""
    return json.dumps({"choice": index + 1})


def test_vision_judge_disagreeing_without_reviewer_leaves_it_to_the_score_card(tmp_path, fake_openai):
    # Same seeds give the same candidates: the judge is scripted to pick the score card's last.
    baseline = _run(tmp_path / "a", best_of=2).manifest["critic"]["score_ranking"]
    config = _vision_server(fake_openai, _choice(baseline[-1]))
    m = _run(tmp_path / "b", best_of=2, llm_config=config).manifest
    assert len(_judge_requests(fake_openai)) == 1
    _says_the_format(_judge_requests(fake_openai)[0])
    images = [p for p in _judge_requests(fake_openai)[0]["messages"][-1]["content"] if p["type"] == "image_url"]
    assert len(images) == 2 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert m["critic"]["judge_choice"] == baseline[-1]
    assert m["critic"]["winner"] == m["critic"]["score_ranking"][0]
    assert {"agent": "critic_agent", "answer": "llm"} in m["llm"]["steps"]
    assert "score card decides" in m["critic"]["reason"]


def test_reviewer_settles_a_disagreement(tmp_path, fake_openai):
    baseline = _run(tmp_path / "a", best_of=2).manifest["critic"]["score_ranking"]
    config = _vision_server(fake_openai, _choice(baseline[-1]))
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
    assert m["critic"]["judge_choice"] is None
    assert "judge_error" in m["critic"]
    assert m["critic"]["winner"] == m["critic"]["score_ranking"][0]
    assert any(f.startswith("critic_agent") for f in m["llm"]["faults"])
    assert {"agent": "critic_agent", "answer": "fallback"} in m["llm"]["steps"]


def test_training_filter_vote_uses_the_same_format_and_picks_the_intended_sheet(tmp_path, fake_openai):
    from PIL import Image

    sheets = []
    for n in range(3):
        sheets.append(str(tmp_path / f"s{n}.png"))
        Image.new("RGB", (8, 8), (80 * n, 0, 0)).save(sheets[-1])
    fake_openai.push_text('{"choice": 3}')
    entry = {**fake_openai.config_list[0], "tags": ["vision"]}
    assert vote(entry, sheets, "a fox", [entry]) == (2, None)  # "Candidate 3": the third sheet
    _says_the_format(fake_openai.requests[-1])

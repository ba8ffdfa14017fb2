"""mora story on the tiny preset: storyboard, shots, transitions, continuity, resume, LLM storyboard, bad input."""

from __future__ import annotations

import json

import pytest

from mora import media
from mora.errors import InputError
from mora.workflows.story import story
from mora.workflows.storyboard import split_story, validate_storyboard

STORY = "A red fox wakes in a snowy forest. The fox runs across a frozen river. The fox sleeps under a pine tree."
OPTS = dict(preset="tiny", device="cpu", progress=False)


@pytest.fixture(scope="module")
def film(tmp_path_factory):
    out = tmp_path_factory.mktemp("story") / "film.mp4"
    return story(STORY, shots=3, seed=0, out=out, **OPTS)


def test_three_shot_film(film):
    m = film.manifest
    shots, transitions = m["shots"], m["transitions"]
    assert len(shots) == 3 and len(transitions) == 2
    assert m["video"]["num_frames"] == sum(s["frames"] for s in shots) + sum(t["frames"] for t in transitions)
    assert media.probe_video(film.video_path)[3] == m["video"]["num_frames"]
    board = json.loads(film.video_path.with_name("film_storyboard.json").read_text())
    assert len(validate_storyboard(board)["shots"]) == 3
    assert m["route"].count("storyboard_agent") == 1 and m["route"][0] == "storyboard_agent"
    assert m["route"][1:] == ["text_to_image_agent", "image_to_video_agent", "image_to_video_agent",
                              "image_to_image_agent", "image_to_video_agent", "image_to_video_agent",
                              "video_connection_agent",
                              "image_to_image_agent", "image_to_video_agent", "image_to_video_agent",
                              "video_connection_agent"]
    assert [s["where"] for s in m["steps"]][:4] == ["storyboard", "shot-01", "shot-01", "shot-01"]
    sheet = media.read_image(m["contact_sheet"])
    assert sheet.width == 3 * m["video"]["width"]  # 3 panels side by side
    assert len(m["metrics"]["seam_continuity"]) == 4 and m["metrics"]["cuts"]["intended"] == []
    assert all(s["metrics"] and s["seed"] == i for i, s in enumerate(shots))
    assert (film.artifacts_dir / "shot-02" / "shot.json").is_file()


def test_keyframe_continuity_edits_previous_last_frame(film):
    shots = film.manifest["shots"]
    first_call = shots[1]["tool_calls"][0]
    assert first_call["tool"] == "edit_image"
    assert first_call["args"]["image_path"] == shots[0]["last_frame"]
    assert all(c["peak_memory"]["bytes"] > 0 for s in shots for c in s["tool_calls"])  # as in a job's manifest


def test_prompt_continuity_and_cut(tmp_path):
    r = story(STORY, shots=2, shot_seconds=0.6, seed=3, continuity="prompt", transition="cut",
              out=tmp_path / "p.mp4", **OPTS)
    m = r.manifest
    assert "video_connection_agent" not in m["route"] and "image_to_image_agent" not in m["route"]
    assert m["video"]["num_frames"] == sum(s["frames"] for s in m["shots"])
    assert m["metrics"]["cuts"]["intended"] == [m["shots"][0]["frames"]]
    prompt = m["shots"][1]["tool_calls"][0]["args"]["prompt"]
    assert "cinematic" in prompt and m["shots"][1]["seed"] == 4


def test_resume_after_interrupt_reruns_nothing_of_shot_1(tmp_path):
    out = tmp_path / "r.mp4"

    def stop(agent, doing):
        if doing.startswith("shot 2/") and agent == "image_to_video_agent":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        story(STORY, shots=2, shot_seconds=0.6, seed=1, out=out, on_step=stop, **OPTS)
    assert not out.exists() and (tmp_path / "r_artifacts" / "shot-01" / "shot.json").is_file()
    steps = []
    r = story(STORY, shots=2, shot_seconds=0.6, out=out, resume=True, on_step=lambda a, d: steps.append(d), **OPTS)
    assert not any(d.startswith("shot 1/") for d in steps)
    assert [s["resumed"] for s in r.manifest["shots"]] == [True, False] and r.manifest["seed"] == 1
    with pytest.raises(InputError, match="--resume"):
        story(STORY + " Then it snows.", shots=2, shot_seconds=0.6, seed=1, out=out, resume=True,
              storyboard=split_story("Other. Story.", 2, 0.6), **OPTS)


def _board(shots=2):
    return {"title": "Fox", "style": "watercolor", "characters": [{"name": "fox", "description": "a red fox"}],
            "shots": [{"prompt": f"the fox, shot {i}", "seconds": 0.6, "camera": "wide", "transition": "cut"}
                      for i in range(shots)]}


def test_llm_storyboard_retry_then_valid(tmp_path, fake_openai):
    fake_openai.push_text("not json {")
    fake_openai.push_text(json.dumps(_board()))
    r = story(STORY, shots=2, shot_seconds=0.6, storyboard_only=True, out=tmp_path / "l.mp4",
              llm_config=fake_openai.config_list, **OPTS)
    assert r.manifest["style"] == "watercolor" and r.video_path is None
    assert json.loads((tmp_path / "l_storyboard.json").read_text())["title"] == "Fox"
    assert "storyboard_agent" in fake_openai.requests[0]["messages"][0]["content"]


def test_llm_storyboard_bad_three_times_falls_back(tmp_path, fake_openai):
    for _ in range(3):
        fake_openai.push_text("```json\n{broken\n```")
    r = story(STORY, shots=2, shot_seconds=0.6, seed=0, out=tmp_path / "f.mp4", llm_config=fake_openai.config_list,
              **OPTS)
    assert r.manifest["llm"]["fallbacks"] == 1 and r.manifest["llm"]["storyboard"] == "deterministic"
    assert r.manifest["llm"]["used"] is False  # its one LLM step fell back
    assert r.manifest["shots"][0]["prompt"].startswith("A red fox wakes")
    assert "SECRET" not in json.dumps(r.manifest)


@pytest.mark.parametrize("kwargs, match", [
    (dict(story="  "), "story"),
    (dict(shots=0), "^shots: 0 is out of range"),  # from Python, the keyword; the command line says --shots
    (dict(shots=65), "^shots: 65 is out of range"),
    (dict(shot_seconds=99), "^shot_seconds: 99.0 is outside"),
    (dict(transition="fade"), "^transition: 'fade' is not allowed"),
    (dict(storyboard={"shots": [{"seconds": "two"}]}), r"shots\[0\] \(shot 1\)\.prompt: missing.*seconds"),
])
def test_bad_input_writes_nothing(tmp_path, kwargs, match):
    args = {"story": STORY, "out": tmp_path / "b.mp4", **OPTS, **kwargs}
    with pytest.raises(InputError, match=match):
        story(args.pop("story"), **args)
    assert list(tmp_path.iterdir()) == []


def test_cli_story_only_and_bad_storyboard(tmp_path, capsys):
    from mora.cli import main

    assert main(["story", STORY, "--shots", "2", "--storyboard-only", "--preset", "tiny",
                 "--out", str(tmp_path / "s.mp4")]) == 0
    board = tmp_path / "s_storyboard.json"
    assert len(json.loads(board.read_text())["shots"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"shots": [{"prompt": "x", "seconds": 1, "transition": "fade"}]}))
    assert main(["story", "--storyboard", str(bad), "--preset", "tiny", "--out", str(tmp_path / "t.mp4")]) == 2
    assert "shots[0] (shot 1).transition" in capsys.readouterr().err


def test_splitter_without_llm_keeps_each_shot_to_its_own_sentence():
    """Issue 20 item 10: each shot is its own sentence, the style and the recurring noun; no other sentence's words."""
    told = ["The fox sleeps under a pine", "At dawn the fox wakes in the snowy forest",
            "Then the fox runs across a frozen lake"]
    board = split_story(". ".join(told) + ".", 3, 1.0)
    assert [c["name"] for c in board["characters"]] == ["fox"]
    own = [{"sleeps", "pine"}, {"dawn", "wakes", "snowy", "forest"}, {"runs", "across", "frozen", "lake"}]
    for k, shot in enumerate(board["shots"]):
        prompt = shot["prompt"]
        assert prompt.startswith(told[k]) and "fox" in prompt and board["style"] in prompt
        words = set(prompt.lower().replace(",", " ").split())
        others = set().union(*(own[j] for j in range(3) if j != k))
        assert not words & others, (k, words & others)
    assert split_story("A lighthouse at dusk. Waves roll in.", 2, 1.0)["characters"] == []  # nothing recurs


@pytest.mark.parametrize("board, match", [
    ({"shots": [{"prompt": "a fox", "seconds": 1, "lens": "35mm"}]},
     r"^storyboard: shots\[0\] \(shot 1\)\.lens: '35mm' is not a known field; remove it"),
    ({"shots": [{"prompt": "a fox", "seconds": 9}]}, r"shots\[0\] \(shot 1\)\.seconds: 9 is outside .*use 0.5 to 4$"),
    ({"shots": [{"prompt": "a fox", "seconds": True}]}, r"seconds: True is not a number; write the shot's length"),
    ({"characters": [{"name": 3, "description": "red"}], "shots": [{"prompt": "a", "seconds": 1}]},
     r"^storyboard: characters\[0\]\.name: 3 is not text; write a short text$"),
    ({"shots": []}, r"^storyboard: shots: \[\] .*; write 1 to 64 shots$"),
])
def test_storyboard_model_names_the_field_the_shot_and_the_fix(board, match):
    """The storyboard is a pydantic model (extra fields refused); its errors are mora.validation's lines."""
    with pytest.raises(InputError, match=match):
        validate_storyboard(board, seconds_range=(0.5, 4))
    ok = validate_storyboard({"title": " Fox ", "shots": [{"prompt": " a fox ", "seconds": 1, "camera": None}]})
    assert ok == {"title": "Fox", "style": "", "characters": [],
                  "shots": [{"prompt": "a fox", "seconds": 1, "camera": "", "transition": "connect"}]}

"""Failure paths that hold, and what a new user hits (each test failed before its fix)."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import gradient_frames
from test_cli import _one_error_line, mora

import mora as mora_api
from mora import media
from mora.errors import InputError, ModelUnavailableError
from mora.workflows.prepare import default_out

FOX = "a red fox running through snow"


def _run(tmp_path, task="text-to-video", name="x.mp4", **kwargs):
    if task == "text-to-video":
        kwargs.setdefault("prompt", FOX)
    options = dict(preset="tiny", device="cpu", progress=False, seed=0, out=tmp_path / name, metrics=False)
    return mora_api.run(task, **{**options, **kwargs})


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "clip.mp4"
    media.write_video(gradient_frames(5, 96, 64), path, fps=8)
    return path


# --- the vision judge's errors are scrubbed of the API key -----------------------------------------


def test_vision_judge_that_echoes_the_key_on_401_leaves_no_key_anywhere(tmp_path, fake_openai, caplog):
    from fake_openai import API_KEY

    original = fake_openai._next

    def respond(body, headers):
        spec = original(body, headers)
        if any(isinstance(m.get("content"), list) for m in body.get("messages", [])):  # the judge's request
            return {"kind": "error", "status": 401, "message": f"Incorrect API key provided: {API_KEY}"}
        return spec

    fake_openai._next = respond
    config = [{**fake_openai.config_list[0], "tags": ["vision"]}]
    with caplog.at_level("DEBUG", logger="mora"):
        result = _run(tmp_path, best_of=2, llm_config=config)
    m = result.manifest
    assert m["critic"]["judge_choice"] is None and "judge_error" in m["critic"]
    assert "***" in m["critic"]["judge_error"] and "401" in m["critic"]["judge_error"] + str(m["llm"]["faults"])
    on_disk = result.manifest_path.read_text()
    assert API_KEY not in on_disk and API_KEY not in json.dumps(m)
    assert API_KEY not in caplog.text


# --- --review where the route has no gate ---------------------------------------------------------


@pytest.mark.parametrize("task, inputs", [("extend", {}), ("connect", {})])
def test_review_on_a_route_without_a_gate_is_refused(tmp_path, clip, task, inputs):
    given = {"video": clip} if task == "extend" else {"video_a": clip, "video_b": clip}
    with pytest.raises(InputError, match=f"^review: {task} animates no image of its own .*; drop --review"):
        _run(tmp_path, task, **given, review=lambda image, info: "approve")
    assert not (tmp_path / "x_artifacts").exists()


def test_review_without_a_gate_is_exit_2_on_the_command_line(tmp_path, clip):
    proc = mora("extend", str(clip), "--preset", "tiny", "--review", cwd=tmp_path)
    assert proc.returncode == 2
    line = _one_error_line(proc)  # the reason, not argparse's "unrecognized arguments"
    assert line.startswith("mora: error: --review: extend animates no image of its own") and "unrecognized" not in line


@pytest.mark.parametrize("task", ["edit", "image-to-video"])
def test_review_gates_the_edited_image(tmp_path, clip, task):
    seen = []

    def reviewer(image, info):
        seen.append(image)
        return "approve"

    inputs = ({"video": clip, "instruction": "make it snowy"} if task == "edit"
              else {"image": media.write_image(media.read_frame(clip), tmp_path / "in.png"), "prompt": FOX})
    result = _run(tmp_path, task, **inputs, review=reviewer)
    edited = next(c["output"] for c in result.manifest["tool_calls"] if c["tool"] == "edit_image")
    assert seen == [edited]  # the reviewer saw the edited image, before it was animated
    assert result.manifest["review"] == [{"image": edited, "decision": "approve"}]


# --- narrow excepts: a bug is a bug, not "download the model" or "an LLM fault" ---------------------


def test_a_bug_while_loading_is_not_reported_as_a_missing_model(tmp_path, monkeypatch):
    from diffusers import StableDiffusionXLPipeline

    def broken(*args, **kwargs):
        raise TypeError("a bug in a pipeline class")

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_pretrained", broken)
    from mora.tools import runtime

    runtime.release()
    with pytest.raises(TypeError, match="a bug in a pipeline class"):
        _run(tmp_path)
    runtime.release()


def test_a_bug_in_the_prompt_reply_is_not_counted_as_an_llm_fault(tmp_path, fake_openai, monkeypatch):
    from mora.agents import team

    def broken(*args, **kwargs):
        raise KeyError("a bug of ours")

    monkeypatch.setattr(team, "check_text", broken)
    fake_openai.push_text("a fox, detailed")
    with pytest.raises(KeyError, match="a bug of ours"):
        _run(tmp_path, llm_config=fake_openai.config_list)


# --- outputs: unique default paths, artifacts owned by one job, settings per step --------------------


def test_default_out_never_collides_within_a_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = default_out("text-to-video")
    first.parent.mkdir(parents=True)
    first.write_bytes(b"x")
    second = default_out("text-to-video")
    assert first != second and not second.exists()
    assert re.fullmatch(r"text-to-video-\d{8}-\d{6}-\d{6}(-\d+)?\.mp4", second.name)


def test_a_second_job_at_the_same_out_needs_overwrite_and_then_starts_clean(tmp_path):
    first = _run(tmp_path, name="same.mp4")
    stale = first.artifacts_dir / "text_to_image-001.png"
    assert stale.is_file()
    with pytest.raises(InputError, match="--overwrite"):
        _run(tmp_path, name="same.mp4", seed=1)
    second = _run(tmp_path, name="same.mp4", seed=1, overwrite=True, task="simulate", prompt="a blocky village")
    on_disk = sorted(str(p) for p in second.artifacts_dir.iterdir())
    assert on_disk == sorted(second.manifest["artifacts"])  # nothing of the first job is left beside them


def test_manifest_settings_and_timings_are_per_step(tmp_path):
    answers = iter(["regenerate", "approve"])
    m = _run(tmp_path, review=lambda image, info: next(answers)).manifest
    t2i = [s for s in m["settings"] if s["tool"] == "text_to_image"]
    assert len(t2i) == 2  # the regenerated frame's call did not overwrite the first one's
    assert [c["seed"] for c in m["tool_calls"] if c["tool"] == "text_to_image"] == [0, 1]
    assert [t["tool"] for t in m["timings"]["per_step"]] == ["text_to_image", "text_to_image", "image_to_video"]


# --- prompts longer than CLIP's window -------------------------------------------------------------


def test_long_prompts_are_encoded_in_chunks_and_the_manifest_says_so(tmp_path):
    m = _run(tmp_path).manifest
    tokens = next(c["prompt_tokens"] for c in m["tool_calls"] if c["tool"] == "text_to_image")
    assert tokens["tokens"] > 75 and tokens["chunks"] == -(-tokens["tokens"] // 75)
    assert tokens["truncated"] is False


def test_short_prompt_embeddings_equal_diffusers_own(tmp_path):
    import torch

    from mora.config import get_preset
    from mora.tools import clip_text, sdxl
    from mora.tools.runtime import Runtime

    base, _ = sdxl.load(get_preset("tiny").spec("text_to_image"), Runtime(device="cpu", progress=False))
    ours, tokens = clip_text.sdxl_embeds(base, "a fox", "")
    theirs = base.encode_prompt("a fox", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True)
    assert tokens.chunks == 1
    for mine, reference in zip(("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                                "negative_pooled_prompt_embeds"), theirs, strict=True):
        assert torch.equal(ours[mine], reference), mine


# --- missing models are found before the first step -------------------------------------------------


def test_missing_models_fail_before_anything_runs_in_one_line(tmp_path):
    started = time.perf_counter()
    proc = mora("text-to-video", FOX, "--out", "fox.mp4", cwd=tmp_path)  # preset mora, offline, no weights
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "stabilityai/stable-diffusion-xl-base-1.0" in line and "stable-video-diffusion-img2vid-xt" in line
    assert "hf download" in line and "huggingface-cli" not in line
    assert "[1]" not in proc.stderr  # no agent step started
    assert list(tmp_path.iterdir()) == []  # no artifacts folder, nothing at all
    assert time.perf_counter() - started < 120


def test_missing_model_check_names_only_the_models_the_route_needs(monkeypatch):
    from mora.tools import weights

    monkeypatch.setattr(weights, "model_available", lambda model: model.startswith("tiny/"))
    with pytest.raises(ModelUnavailableError) as info:
        weights.check_models(["tiny/svd", "org/missing", "org/missing"], "custom")
    assert str(info.value).count("org/missing") == 2  # named once in the list, once in its `hf download`


# --- a plain run prints progress and the result, nothing else ---------------------------------------


def test_a_plain_tiny_run_prints_only_progress_and_the_result(tmp_path):
    proc = mora("connect", *(str(media.write_video(gradient_frames(5, 96, 64, shift=s), tmp_path / f"{s}.mp4", fps=8))
                             for s in (1, 2)), "--preset", "tiny", "--out", "c.mp4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line.strip() for line in re.split(r"[\r\n]", proc.stderr) if line.strip()]
    allowed = re.compile(r"^(\[\d+\] [a-z_]+_agent: .+|route: .+|note: tiny preset.+|\s*\d+%\|.*)$")
    noise = [line for line in lines if not allowed.match(line)]
    assert noise == [], noise


# --- an LLM's numbers are bounded by the preset, not by global maxima --------------------------------


def test_llm_tool_arguments_are_bounded_by_twice_the_preset():
    from mora.agents.toolcalls import ToolCallFault, validate_args
    from mora.config import get_preset
    from mora.limits import llm_bounds

    mora_preset = get_preset("mora")
    bounds = llm_bounds(mora_preset, "image_to_video")
    assert bounds["steps"] == (1, 50) and bounds["num_frames"] == (2, 25) and bounds["segments"] == (1, 6)
    assert bounds["width"] == (8, 2048)
    ok = validate_args("image_to_video", {"image_path": "f.png", "steps": 50}, lambda p, a: p, bounds)
    assert ok["steps"] == 50
    for key, value in (("steps", 51), ("segments", 16), ("num_frames", 60), ("width", 4096)):
        with pytest.raises(ToolCallFault, match=key):
            validate_args("image_to_video", {"image_path": "f.png", key: value}, lambda p, a: p, bounds)
    assert llm_bounds(get_preset("tiny"), "text_to_image")["steps"] == (1, 4)  # tiny: 2 steps, so at most 4


def test_review_on_a_capability_route_without_a_gate_is_refused(tmp_path):
    """tiny-modern animates the user's image as given (no image step, so no gate): --review is refused."""
    image = media.write_image(media.read_frame(media.write_video(gradient_frames(5, 96, 64), tmp_path / "c.mp4", fps=8)),
                              tmp_path / "in.png")
    with pytest.raises(InputError, match="^review: image-to-video has no image to review with preset tiny-modern"):
        _run(tmp_path, "image-to-video", image=image, prompt=FOX, preset="tiny-modern",
             review=lambda image, info: "approve")
    assert not (tmp_path / "x_artifacts").exists()

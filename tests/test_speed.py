"""Step caches and attention backends (`--cache`, `--attention`; `mora.tools.speed`) on tiny models (CPU)."""

from __future__ import annotations

import json
import typing

import numpy as np
import pytest

from mora import cli, media
from mora.config import ATTENTION_BACKENDS, CACHES
from mora.tools import runtime, speed
from mora.tools.toolset import Toolset
from mora.workflows.jobspec import OPTIONS, job_problems


def _block_work(tools: Toolset, family: str, **call) -> int:
    """Sub-module calls inside the denoiser's transformer blocks over one `text_to_image` (a skipped block
    is still called, by the cache's hook, but runs none of its layers)."""
    tools.text_to_image("a fox", seed=1, **call)  # loads the pipeline (and its hooks)
    key = tools.runtime.profile + tools.runtime.speed.key
    pipe = next(p for k, p in runtime._CACHE.items() if k[0] == family and k[4] == key)
    blocks = pipe.transformer.transformer_blocks
    count = [0]
    hooks = [child.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
             for block in blocks for child in block.children()]
    try:
        tools.text_to_image("a fox", seed=1, **call)
    finally:
        for hook in hooks:
            hook.remove()
    return count[0]


def test_first_block_cache_is_attached_and_skips_block_work(tmp_path):
    plain = Toolset(preset="tiny-modern", device="cpu", output_dir=tmp_path, progress=False)
    cached = Toolset(preset="tiny-modern", device="cpu", output_dir=tmp_path, progress=False, cache="first-block",
                     cache_threshold=5.0)  # far above the toy model's step-to-step change: every later step reuses
    full, skipped = _block_work(plain, "qwen-image", steps=4), _block_work(cached, "qwen-image", steps=4)
    assert 0 < skipped < full
    assert cached.calls[-1]["cache"] == "first-block@5" and plain.calls[-1]["cache"] == "none"


def test_cache_none_and_sdpa_change_no_byte(tmp_path):
    before = Toolset(preset="tiny-modern", device="cpu", output_dir=tmp_path / "a", progress=False)
    after = Toolset(preset="tiny-modern", device="cpu", output_dir=tmp_path / "b", progress=False, cache="none",
                    attention="sdpa")
    a, b = before.text_to_image("a fox", seed=3), after.text_to_image("a fox", seed=3)
    assert open(a, "rb").read() == open(b, "rb").read()
    assert after.calls[-1]["cache"] == "none" and after.calls[-1]["attention"] == "sdpa"


def test_a_run_records_the_cache_and_backend_and_none_is_todays_output(tmp_path, monkeypatch):
    import mora

    encoded: list[np.ndarray] = []  # the frames each job hands the encoder (x264 itself varies now and then)
    write = media.write_video
    monkeypatch.setattr(media, "write_video", lambda frames, *a, **k: encoded.append(np.array(frames)) or
                        write(frames, *a, **k))
    common = dict(preset="tiny-modern", device="cpu", seed=2, metrics=False, progress=False, steps=2)
    mora.run("text-to-video", prompt="a fox", out=tmp_path / "a.mp4", **common)
    today, encoded[:] = list(encoded), []
    none = mora.run("text-to-video", prompt="a fox", out=tmp_path / "b.mp4", cache="none", attention="auto", **common)
    assert len(today) == len(encoded) >= 1 and all(np.array_equal(a, b) for a, b in zip(today, encoded, strict=True))
    manifest = none.manifest
    assert (manifest["cache"], manifest["attention"]) == ("none", "sdpa")  # auto on a CPU: torch's SDPA (native)
    assert [(c["cache"], c["attention"]) for c in manifest["tool_calls"]] == [("none", "sdpa")] * 2


def _cli_error(capsys, *args: str) -> str:
    assert cli.main([*args, "--device", "cpu", "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_unet_family_refuses_a_cache_in_one_line(capsys, tmp_path):
    line = _cli_error(capsys, "text-to-video", "a fox", "--preset", "tiny", "--cache", "first-block",
                      "--out", str(tmp_path / "a.mp4"))
    assert "--cache" in line and "first-block" in line and "UNet" in line and "--cache none" in line
    assert not (tmp_path / "a.mp4").exists()


def test_flash_attention_on_a_cpu_is_refused_in_one_line(capsys, tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr(runtime, "get_pipeline", lambda *a: loads.append(a))
    line = _cli_error(capsys, "text-to-video", "a fox", "--preset", "tiny-modern", "--attention", "flash",
                      "--out", str(tmp_path / "a.mp4"))
    assert line.startswith("mora: error: --attention: 'flash'") and "CUDA" in line and "--attention auto" in line
    assert not loads  # checked before anything loads


@pytest.mark.parametrize("options, param, words", [
    ({"cache": "mag"}, "cache", "ratios"),
    ({"cache": "taylor", "cache_threshold": 0.1}, "cache_threshold", "no threshold"),
    ({"cache_threshold": 0.1}, "cache_threshold", "--cache first-block"),  # balanced: no cache to take it
    ({"cache": "first-block", "preset": "tiny-modern", "task": "edit"}, "cache", "control hints"),  # Wan VACE
    ({"attention": "sage", "preset": "tiny"}, "attention", "UNet"),
])
def test_bad_choices_are_one_line_naming_the_option(options, param, words):
    job = {"task": "text-to-video", "prompt": "a fox", "preset": "tiny-modern", **options}
    if job["task"] == "edit":
        job = {k: v for k, v in job.items() if k != "prompt"} | {"video": "clip.mp4", "instruction": "snow"}
    from mora.workflows.prepare import prepare

    with pytest.raises(Exception) as error:
        prepare(job, files=False)
    assert getattr(error.value, "param", None) == param and words in str(error.value)
    assert "\n" not in str(error.value)


def test_the_fast_profile_turns_on_the_cache_where_a_family_takes_it():
    fast = speed.resolve(None, None, "auto", "fast", "cpu")
    assert (fast.cache, fast.threshold, fast.explicit) == (speed.FAST_CACHE, speed.THRESHOLDS["first-block"], False)
    assert speed.applied(fast, "wan22")["cache"] == "first-block@0.05"
    assert speed.applied(fast, "svd")["cache"] == "none"  # the profile's cache where a family allows, no refusal
    assert speed.resolve(None, None, "auto", "balanced", "cpu").cache == "none"


def test_the_options_are_derived_into_every_door(capsys):
    assert typing.get_args(OPTIONS["cache"].kind) == CACHES
    assert typing.get_args(OPTIONS["attention"].kind) == ATTENTION_BACKENDS
    with pytest.raises(SystemExit):
        cli.main(["text-to-video", "--help"])
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in ("--cache {" + ",".join(CACHES) + "}", "--cache-threshold T",
                                              "--attention {" + ",".join(ATTENTION_BACKENDS) + "}"))
    from mora.mcp import tools as mt

    props = mt.tool_schema("text-to-video")["properties"]
    assert {"cache", "cache_threshold", "attention"} <= set(props)
    assert props["attention"]["enum"] == list(ATTENTION_BACKENDS)
    assert job_problems({"task": "connect", "video_a": "a.mp4", "video_b": "b.mp4", "attention": "xformers"})


def test_the_service_schema_offers_them(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mora.service.app import build_service

    service = build_service(db=tmp_path / "jobs.db", out_dir=tmp_path / "out", defaults={"preset": "tiny"},
                            host={"device": "cpu"}, start_worker=False)
    try:
        paths = TestClient(service.app, base_url="http://127.0.0.1").get("/openapi.json").json()["paths"]
    finally:
        service.store.close()
    body = json.dumps(paths["/v1/jobs"]["post"])
    assert '"cache_threshold"' in body and all(f'"{name}"' in body for name in (*CACHES, *ATTENTION_BACKENDS))


def test_a_one_block_toy_model_refuses_an_explicit_first_block_and_skips_the_profiles(tmp_path):
    """FirstBlockCache needs blocks after the first (diffusers fails on tiny-ltx's one block with an IndexError)."""
    from conftest import gradient_frames

    from mora.errors import InputError

    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    media.write_video(gradient_frames(5, 96, 64), a, fps=8)
    media.write_video(gradient_frames(5, 96, 64, shift=9), b, fps=8)
    videos = dict(first_video=str(a), second_video=str(b), seed=1, steps=2, num_frames=5)
    explicit = Toolset(preset="tiny", device="cpu", output_dir=tmp_path, progress=False, cache="first-block")
    with pytest.raises(InputError, match="has 1; use --cache none or taylor"):
        explicit.connect_videos(**videos)
    fast = Toolset(preset="tiny", device="cpu", output_dir=tmp_path, progress=False, profile="fast")
    fast.connect_videos(**videos)
    assert fast.calls[-1]["cache"] == "none"  # recorded as run, not as asked


def test_a_call_stopped_half_way_leaves_no_cache_state_for_the_next(tmp_path):
    """diffusers resets a cache's state at the end of a completed call only: a cancelled one must not leak it."""
    from mora.errors import Cancelled

    def tools(cancelled=None) -> Toolset:
        return Toolset(preset="tiny-modern", device="cpu", output_dir=tmp_path, progress=False, cache="first-block",
                       cache_threshold=5.0, cancelled=cancelled)

    runtime.release()
    clean = open(tools().text_to_image("a fox", seed=4, steps=4), "rb").read()
    runtime.release()
    steps = [0]
    stopping = tools(cancelled=lambda: steps.__setitem__(0, steps[0] + 1) or steps[0] >= 2)
    with pytest.raises(Cancelled):
        stopping.text_to_image("a fox", seed=9, steps=4)  # stops after its second step, cache state filled
    after = open(tools().text_to_image("a fox", seed=4, steps=4), "rb").read()  # the same cached pipeline
    assert after == clean

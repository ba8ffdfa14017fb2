"""Score-card metrics on videos synthesised in numpy: each metric must point the right way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mora.errors import InputError
from mora.evaluation import METRIC_INFO, format_table, score_card_for_file, score_video, seams
from mora.evaluation import metrics as m
from mora.evaluation.optional import optional_metrics

H, W, T = 96, 160, 12
UNIT_METRICS = (
    "temporal_flickering",
    "motion_smoothness",
    "subject_consistency",
    "background_consistency",
    "imaging_quality",
    "tmean",
)


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A natural-ish RGB image: 1/f noise (like photographs' spectra) plus sharp-edged rectangles."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    img = np.fft.irfft2((rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f, s=(h, w))
    img = (img - img.mean()) / img.std() * 30 + 128
    for _ in range(12):
        y, x = rng.integers(0, h), rng.integers(0, w)
        img[y : y + rng.integers(10, h // 3), x : x + rng.integers(10, w // 3)] = rng.integers(0, 255)
    rgb = np.stack([img, np.roll(img, 7, axis=1) * 0.8 + 30, 255 - 0.6 * img], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def pan(num_frames: int, speed: int, seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """A textured scene seen by a camera moving `speed` pixels per frame to the right."""
    scene = texture(h, w + speed * num_frames, seed)
    return np.stack([scene[:, speed * t : speed * t + w] for t in range(num_frames)])


def static() -> np.ndarray:
    return np.repeat(texture(H, W)[None], T, axis=0)


def noise(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def flicker() -> np.ndarray:
    base = texture(H, W).astype(np.int16)
    return np.stack([np.clip(base + (20 if t % 2 else -20), 0, 255).astype(np.uint8) for t in range(T)])


def cut() -> np.ndarray:
    return np.concatenate([pan(6, 2, seed=0), pan(6, 2, seed=5)])


@pytest.fixture(scope="module")
def cards() -> dict[str, dict]:
    # fps=7 is Mora's (SVD) frame rate: VBench samples every frame and raises the threshold by 8/7.
    videos = {"static": static(), "noise": noise(), "pan": pan(T, 4), "flicker": flicker(), "cut": cut()}
    return {name: score_video(v, fps=7) for name, v in videos.items()}


def test_static_video(cards):
    c = cards["static"]
    assert c["temporal_flickering"] == pytest.approx(1.0, abs=1e-6)
    assert c["dynamic_degree"] == 0
    assert c["flow_magnitude"] < 0.1
    assert c["motion_smoothness"] > 0.999
    assert c["subject_consistency"] > 0.999 and c["background_consistency"] > 0.999
    assert c["tmean"] > 0.999
    assert c["cuts"] == []


def test_random_noise(cards):
    n, s, p = cards["noise"], cards["static"], cards["pan"]
    assert n["imaging_quality"] < 0.2 < s["imaging_quality"]
    assert n["motion_smoothness"] < 0.85 and n["motion_smoothness"] < p["motion_smoothness"]
    assert n["temporal_flickering"] < s["temporal_flickering"] and n["temporal_flickering"] < 0.8
    assert n["subject_consistency"] < 0.3 and n["background_consistency"] < 0.3
    assert n["tmean"] < 0.3
    assert n["cuts"] == []  # uniformly chaotic is not a cut


def test_smooth_pan(cards):
    c = cards["pan"]
    # 4 px/frame clears VBench's threshold for 96 px high video at 7 fps: 8/7 * 6 * 96/256 = 2.57 px.
    assert c["dynamic_degree"] == 1
    assert c["flow_magnitude"] == pytest.approx(4.0, rel=0.15)
    assert c["motion_smoothness"] > 0.98
    # motion-aligned consistency forgives a steady camera move; unaligned tmean does not
    assert c["subject_consistency"] > 0.8 and c["background_consistency"] > 0.9
    assert c["tmean"] < cards["static"]["tmean"]
    assert c["cuts"] == []


def test_slow_pan_is_not_dynamic():
    assert m.dynamic_degree(pan(T, 1), fps=7) == 0


def test_dynamic_degree_samples_frames_like_vbench():
    # At 24 fps VBench keeps every 3rd frame: 1 px/frame becomes 3 px per step, over the 2.25 px bar.
    video = pan(16, 1)
    assert m.dynamic_degree(video, fps=8) == 0
    assert m.dynamic_degree(video, fps=24) == 1
    assert m.flow_magnitude(video, fps=24) == pytest.approx(3.0, rel=0.15)


def test_hard_cut_found_at_its_frame_only(cards):
    assert cards["cut"]["cuts"] == [6]
    assert cards["pan"]["cuts"] == [] and cards["flicker"]["cuts"] == []


def test_flicker_is_worse_than_static_and_pan(cards):
    f = cards["flicker"]
    assert f["temporal_flickering"] < cards["static"]["temporal_flickering"]
    assert f["temporal_flickering"] < cards["pan"]["temporal_flickering"]
    assert f["motion_smoothness"] < cards["pan"]["motion_smoothness"]
    assert f["dynamic_degree"] == 0


def test_seam_continuity():
    scene = pan(40, 3)
    seamless = score_video(np.concatenate([scene[:8], scene[8:16]]), boundaries=[8])["seam_continuity"]
    jump = seams.seam_continuity(np.concatenate([scene[:8], scene[30:38]]), [8])
    assert seamless["boundaries"] == [8] and seamless["mean"] > 0.9
    assert jump["scores"][0] < 0.5 and jump["mean"] == jump["scores"][0]
    two = seams.seam_continuity(np.concatenate([scene[:6], scene[6:12], scene[30:36]]), [12, 6])
    assert two["boundaries"] == [6, 12]
    assert two["scores"][0] > 0.9 > 0.5 > two["scores"][1]
    assert two["mean"] == pytest.approx(np.mean(two["scores"]))


def test_imaging_quality_prefers_sharp_clean_frames():
    import cv2

    sharp = texture(H, W)[None]
    blurred = cv2.GaussianBlur(sharp[0], (0, 0), 2)[None]
    grainy = np.clip(sharp + np.random.default_rng(0).normal(0, 15, sharp.shape), 0, 255).astype(np.uint8)
    q = {
        name: m.imaging_quality(v)
        for name, v in [("sharp", sharp), ("blurred", blurred), ("grainy", grainy), ("noise", noise()[:1])]
    }
    assert q["sharp"] > q["grainy"] > q["noise"]
    assert q["sharp"] > q["blurred"] + 0.3
    assert q["noise"] < 0.1


def test_all_scores_in_range_and_json_ready(cards):
    for name, card in cards.items():
        for key in UNIT_METRICS:
            assert 0.0 <= card[key] <= 1.0, (name, key, card[key])
        assert card["dynamic_degree"] in (0, 1)
        assert card["flow_magnitude"] >= 0.0
        assert (card["num_frames"], card["width"], card["height"], card["fps"]) == (T, W, H, 7.0)
        assert card["seconds"] >= 0.0
        assert set(METRIC_INFO) >= set(card) - {"num_frames", "width", "height", "fps", "seconds"}
        assert json.loads(json.dumps(card)) == card


def test_two_frames_have_no_motion_smoothness():
    card = score_video(static()[:2])
    assert card["motion_smoothness"] is None and card["temporal_flickering"] == 1.0


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((4, 32, 32), np.uint8),
        np.zeros((4, 32, 32, 3), np.float32),
        [[0]],
        np.zeros((1, 32, 32, 3), np.uint8),
    ],
)
def test_bad_frames_are_input_errors(frames):
    with pytest.raises(InputError, match="frames"):
        score_video(frames)


@pytest.mark.parametrize("boundaries", [[0], [12], ["3"], 5])
def test_bad_boundaries_are_input_errors(boundaries):
    with pytest.raises(InputError, match="boundaries"):
        score_video(static(), boundaries=boundaries)


def test_bad_fps_is_an_input_error():
    with pytest.raises(InputError, match="fps"):
        score_video(static(), fps=0)


def test_score_card_for_file_uses_manifest_boundaries(tmp_path):
    imageio = pytest.importorskip("imageio.v2")
    scene = pan(40, 4, h=64, w=128)
    path = tmp_path / "joined.mp4"
    imageio.mimwrite(
        path, np.concatenate([scene[:8], scene[8:16]]), fps=7, codec="libx264", macro_block_size=1, quality=9
    )
    card = score_card_for_file(path, manifest={"video": {"path": str(path), "boundaries": [8]}})
    assert (card["num_frames"], card["width"], card["height"]) == (16, 128, 64)
    assert card["fps"] == pytest.approx(7.0)
    assert card["dynamic_degree"] == 1 and card["cuts"] == []
    assert card["seam_continuity"]["boundaries"] == [8] and card["seam_continuity"]["mean"] > 0.8
    assert "seam_continuity" not in score_card_for_file(path)
    with pytest.raises(InputError, match="boundaries"):
        score_card_for_file(path, manifest={"video": {"boundaries": [99]}})


def test_format_table_lists_every_metric(cards):
    card = dict(cards["cut"], seam_continuity={"boundaries": [6], "scores": [0.25], "mean": 0.25})
    text = format_table(card)
    for key in ("temporal_flickering", "dynamic_degree", "imaging_quality", "tmean", "seam at frame 6"):
        assert key in text
    assert "0.2500" in text and f"{T} frames, {W}x{H}, 7 fps" in text
    assert "print(" not in text and text.count("\n") >= 10


def test_optional_metrics_skip_without_local_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("MORA_CLIP_MODEL", raising=False)
    out = optional_metrics(static(), prompt="a cat")
    assert "clip_text_similarity" not in out
    assert "MORA_CLIP_MODEL" in out["skipped"]["clip_text_similarity"]
    assert {"dino_subject_consistency", "laion_aesthetic"} <= set(out["skipped"])
    monkeypatch.setenv("MORA_CLIP_MODEL", str(tmp_path / "missing"))
    assert "not a directory" in optional_metrics(static(), prompt="a cat")["skipped"]["clip_text_similarity"]
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("MORA_CLIP_MODEL", str(tmp_path / "empty"))
    assert "could not load" in optional_metrics(static(), prompt="a cat")["skipped"]["clip_text_similarity"]
    card = score_video(static(), optional=True)  # no prompt: skipped, card still complete
    assert card["optional"]["skipped"]["clip_text_similarity"] == "no prompt given"
    assert "skipped" in format_table(card)


def _tiny_clip(directory: Path) -> Path:
    """A random toy CLIP model and processor saved like a downloaded one (no network)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(directory / "vocab.json"),
        str(directory / "merges.txt"),
        pad_token="<|endoftext|>",
        model_max_length=77,
    )
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config=dict(
            small,
            vocab_size=len(vocab),
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(small, image_size=32, patch_size=8),
        projection_dim=16,
    )
    out = directory / "clip"
    CLIPModel(config).save_pretrained(out)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(out)
    return out


def test_optional_clip_similarity_with_a_local_model(monkeypatch, tmp_path):
    pytest.importorskip("transformers")
    monkeypatch.setenv("MORA_CLIP_MODEL", str(_tiny_clip(tmp_path)))
    out = optional_metrics(pan(5, 2), prompt="a red fox in the snow")
    assert 0.0 <= out["clip_text_similarity"] <= 1.0
    assert "clip_text_similarity" not in out["skipped"]


def test_import_is_light():
    code = "import sys, mora.evaluation; assert 'cv2' not in sys.modules and 'torch' not in sys.modules"
    src = str(Path(m.__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)

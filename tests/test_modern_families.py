"""The modern families (Qwen-Image, Qwen-Image-Edit, Wan 2.2 TI2V-5B, Wan VACE) on their tiny counterparts.

Each tiny model is built in code with random weights, saved with `save_pretrained` and loaded back by
the family's loader with `from_pretrained`; the calls run on the CPU through a `Runtime`. The
pipelines' `__call__` is wrapped where a test checks what the model is given.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from mora.config import PRESETS, ModelSpec
from mora.errors import InputError
from mora.tools import qwen_image, qwen_image_edit, tiny_modern, wan22, wan_vace
from mora.tools.modern_settings import (
    LICENCES,
    MODERN_FAMILIES,
    MODERN_MODELS,
    QwenImageEditSettings,
    QwenImageSettings,
    Wan22Settings,
    WanVACESettings,
    tiny_settings,
)
from mora.tools.runtime import Runtime
from mora.tools.sizing import cover_resize


@pytest.fixture(scope="module")
def rt():
    return Runtime(device="cpu", progress=False)


@pytest.fixture
def capture(monkeypatch):
    """capture(PipelineClass) -> the list of keyword arguments of each call of that class's pipelines."""

    def install(cls):
        calls: list[dict] = []
        original = cls.__call__

        def recording(self, *args, **kwargs):
            calls.append(kwargs)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", recording)
        return calls

    return install


def _image(seed: int, width: int = 64, height: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def _video(seed: int, frames: int, width: int, height: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((frames, height, width, 3)) * 255).astype(np.uint8)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


# --- settings and tiny models ------------------------------------------------------------------------


def test_settings_carry_the_real_models_recommendations():
    assert QwenImageSettings().steps == 50 and QwenImageSettings().true_cfg_scale == 4.0
    assert (QwenImageSettings().width, QwenImageSettings().height) == (1664, 928)
    assert QwenImageEditSettings().pipeline_class == "QwenImageEditPlusPipeline"
    wan = Wan22Settings()
    assert (wan.width, wan.height, wan.num_frames, wan.fps) == (1280, 704, 121, 24)
    assert wan.size_multiple == 32 and wan.num_frames % wan.frame_multiple == 1
    vace = WanVACESettings()
    assert (vace.num_frames, vace.fps, vace.max_frames, vace.control) == (81, 16, 81, "gray")
    assert set(MODERN_MODELS) == set(MODERN_FAMILIES)
    assert all(LICENCES[m] == "Apache-2.0" for m in MODERN_MODELS.values())
    for family in MODERN_FAMILIES:
        assert tiny_settings(family).steps == 2
    with pytest.raises(ValueError, match="unknown wan22 setting"):
        ModelSpec("wan22", "x", {"frames": 9})
    with pytest.raises(ValueError, match="unknown pipeline family"):
        ModelSpec("sora", "x")
    modern = PRESETS["modern"]  # the preset uses these Hub ids
    assert {s.family: s.model for s in modern.roles.values()} == MODERN_MODELS
    tiny = PRESETS["tiny-modern"]
    for spec in tiny.roles.values():
        assert spec.settings == tiny_settings(spec.family), spec.family


def test_tiny_models_are_saved_and_read_back_like_hub_repos(rt):
    for name in tiny_modern.BUILDERS:
        folder = tiny_modern.ensure(name)
        assert (folder / "model_index.json").is_file()
        assert tiny_modern.ensure(f"tiny/{name}") == folder  # cached: built once
    index = json.loads((tiny_modern.ensure("qwen-image-edit") / "model_index.json").read_text())
    assert index["processor"] == ["transformers", "Qwen2VLProcessor"]  # as the Hub repos name it
    edit = qwen_image_edit.load(tiny_modern.tiny_spec("qwen-image-edit"), rt)
    assert type(edit.processor).__name__ == "ImageOnlyQwen2VLProcessor"
    assert type(edit.text_encoder).__name__ == "Qwen2_5_VLForConditionalGeneration"
    ti2v = wan22.load(tiny_modern.tiny_spec("wan22-ti2v"), rt)
    assert ti2v.config.expand_timesteps and ti2v.image_encoder is None
    assert (ti2v.vae.config.z_dim, ti2v.vae.config.patch_size, ti2v.vae.config.is_residual) == (48, 2, True)
    assert ti2v.vae_scale_factor_spatial == 16
    vace = wan_vace.load(tiny_modern.tiny_spec("wan-vace"), rt)
    assert type(vace.transformer).__name__ == "WanVACETransformer3DModel"
    with pytest.raises(ValueError, match="unknown tiny model"):
        tiny_modern.ensure("sora")


# --- text-to-image and editing -----------------------------------------------------------------------


def test_qwen_image_text_to_image(rt, capture):
    spec = tiny_modern.tiny_spec("qwen-image")
    calls = capture(type(qwen_image.load(spec, rt)))
    args = dict(prompt="a red fox running through snow", negative_prompt="", width=64, height=48, steps=2)
    image, tokens = qwen_image.text_to_image(spec, rt, seed=3, **args)
    assert image.size == (64, 48) and image.mode == "RGB"
    assert tokens == {"tokens": len(args["prompt"]), "window": tokens["window"], "chunks": 1, "truncated": False}
    assert 0 < tokens["window"] <= spec.settings.max_sequence_length
    assert calls[0]["negative_prompt"] == " " and calls[0]["true_cfg_scale"] == 4.0  # CFG on, as the card says
    again, _ = qwen_image.text_to_image(spec, rt, seed=3, **args)
    other, _ = qwen_image.text_to_image(spec, rt, seed=4, **args)
    assert np.array_equal(_pixels(image), _pixels(again))
    assert not np.array_equal(_pixels(image), _pixels(other))
    long_prompt = "snow " * 250  # 1250 byte tokens: more than the 1024-token window
    _, tokens = qwen_image.text_to_image(spec, rt, **{**args, "prompt": long_prompt}, seed=3)
    assert tokens["truncated"] and tokens["tokens"] == len(long_prompt)
    with pytest.raises(ValueError, match="multiples of 16"):
        qwen_image.text_to_image(spec, rt, seed=0, **{**args, "width": 70})


def test_qwen_image_edit(rt, capture):
    spec = tiny_modern.tiny_spec("qwen-image-edit")
    calls = capture(type(qwen_image_edit.load(spec, rt)))
    source = _image(0, 96, 64)
    edited, tokens = qwen_image_edit.edit_image(spec, rt, image=source, instruction="make it night", steps=2, seed=1)
    assert edited.mode == "RGB" and edited.size == qwen_image_edit.model_size(spec, 96, 64)
    assert edited.width > edited.height  # the input's aspect ratio is kept
    assert tokens["tokens"] == len("make it night") and tokens["chunks"] == 1 and not tokens["truncated"]
    assert calls[0]["image"].size == (96, 64) and calls[0]["prompt"] == "make it night"
    again, _ = qwen_image_edit.edit_image(spec, rt, image=source, instruction="make it night", steps=2, seed=1)
    assert np.array_equal(_pixels(edited), _pixels(again))


# --- Wan 2.2 TI2V-5B ---------------------------------------------------------------------------------


def test_wan22_generate_and_continue(rt, capture):
    spec = tiny_modern.tiny_spec("wan22-ti2v")
    calls = capture(type(wan22.load(spec, rt)))
    first = _image(1, 80, 60)
    args = dict(image=first, prompt="waves roll in", width=64, height=64, num_frames=9, steps=2, fps=24)
    video = wan22.generate(spec, rt, segments=2, seed=0, **args)
    assert video.shape == (9 + 8, 64, 64, 3) and video.dtype == np.uint8
    # frame 0 conditioning: the given image (cover-resized), then the first clip's last frame
    assert np.array_equal(_pixels(calls[0]["image"]), _pixels(cover_resize(first, 64, 64)))
    assert np.array_equal(_pixels(calls[1]["image"]), video[8])
    assert calls[0]["prompt"] == "waves roll in" and calls[0]["num_frames"] == 9
    assert np.array_equal(video, wan22.generate(spec, rt, segments=2, seed=0, **args))
    new = wan22.continue_video(spec, rt, frames=video, prompt=None, width=64, height=64, num_frames=6, steps=2,
                               fps=24, seed=0)
    assert new.shape == (6, 64, 64, 3)
    assert calls[-1]["num_frames"] == 9 and np.array_equal(_pixels(calls[-1]["image"]), video[-1])
    with pytest.raises(ValueError, match="4k\\+1"):
        wan22.generate(spec, rt, segments=1, seed=0, **{**args, "num_frames": 8})
    with pytest.raises(ValueError, match="multiples of 32"):
        wan22.generate(spec, rt, segments=1, seed=0, **{**args, "width": 48})


# --- Wan VACE ----------------------------------------------------------------------------------------


def _gray(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(cover_resize(Image.fromarray(frame), width, height).convert("L"))


def test_vace_edit_video_gets_every_source_frame_and_the_reference(rt, capture):
    spec = tiny_modern.tiny_spec("wan-vace")
    calls = capture(type(wan_vace.load(spec, rt)))
    source = _video(2, 7, 80, 48)
    reference = _image(3, 80, 48)
    args = dict(frames=source, reference=reference, prompt="the street at night", width=64, height=64, steps=2,
                fps=16)
    edited = wan_vace.edit_video(spec, rt, seed=0, **args)
    assert edited.shape == (7, 64, 64, 3) and edited.dtype == np.uint8  # the source's frame count
    (call,) = calls
    video, mask = call["video"], call["mask"]
    assert len(video) == len(mask) == call["num_frames"] == 9  # 7 padded to 4k+1
    ref = _pixels(cover_resize(reference, 64, 64))
    assert np.array_equal(_pixels(video[0]), ref) and np.all(_pixels(mask[0]) == 0)  # frame 0 kept: the edit
    for t in range(1, 7):  # every later source frame is the control, to follow (mask white)
        assert np.array_equal(_pixels(video[t])[..., 0], _gray(source[t], 64, 64))
        assert np.all(_pixels(mask[t]) == 255)
    assert all(np.array_equal(_pixels(v), _pixels(video[6])) for v in video[7:])  # padding repeats the last
    assert [_pixels(r).tolist() for r in call["reference_images"]] == [ref.tolist()]
    assert np.array_equal(edited, wan_vace.edit_video(spec, rt, seed=0, **args))

    free = dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, pin_first_frame=False))
    wan_vace.edit_video(free, rt, seed=0, **args)
    video = calls[-1]["video"]
    for t in range(7):  # unpinned: source frame 0 is a control frame too
        assert np.array_equal(_pixels(video[t])[..., 0], _gray(source[t], 64, 64))
    assert np.all(_pixels(calls[-1]["mask"][0]) == 255)


def test_vace_edit_video_longer_than_a_window(rt, capture):
    spec = tiny_modern.tiny_spec("wan-vace")  # max_frames 9
    calls = capture(type(wan_vace.load(spec, rt)))
    source = _video(4, 12, 64, 64)
    edited = wan_vace.edit_video(spec, rt, frames=source, reference=_image(5), prompt=None, width=64, height=64,
                                 steps=2, fps=16, seed=0)
    assert edited.shape == (12, 64, 64, 3)
    assert [len(c["video"]) for c in calls] == [9, 5]  # frames 0-8, then 8-11 (4 padded to 5)
    second = calls[1]["video"]
    assert np.array_equal(_pixels(second[0]), edited[8])  # starts from the first window's last output frame
    for t, source_index in enumerate(range(9, 12), start=1):
        assert np.array_equal(_pixels(second[t])[..., 0], _gray(source[source_index], 64, 64))


def test_vace_transition(rt, capture):
    spec = tiny_modern.tiny_spec("wan-vace")
    calls = capture(type(wan_vace.load(spec, rt)))
    first, last = _image(6), _image(7)
    middle = wan_vace.transition(spec, rt, first=first, last=last, prompt=None, width=64, height=64, num_frames=9,
                                 steps=2, fps=16, seed=0)
    assert middle.shape == (7, 64, 64, 3) and middle.dtype == np.uint8  # ends excluded
    video, mask = calls[0]["video"], calls[0]["mask"]
    assert np.array_equal(_pixels(video[0]), _pixels(first)) and np.array_equal(_pixels(video[-1]), _pixels(last))
    assert np.all(_pixels(mask[0]) == 0) and np.all(_pixels(mask[-1]) == 0)
    assert all(np.all(_pixels(m) == 255) for m in mask[1:-1])
    assert calls[0]["reference_images"] is None
    again = wan_vace.transition(spec, rt, first=first, last=last, prompt=None, width=64, height=64, num_frames=9,
                                steps=2, fps=16, seed=0)
    assert np.array_equal(middle, again)
    with pytest.raises(InputError, match="4k\\+1"):
        wan_vace.transition(spec, rt, first=first, last=last, prompt=None, width=64, height=64, num_frames=8,
                            steps=2, fps=16, seed=0)


def test_wan_vaes_stay_float32_when_the_transformer_runs_in_bf16():
    import torch

    rt16 = Runtime(device="cpu", dtype="bfloat16", progress=False)
    for name, family in (("wan22-ti2v", wan22), ("wan-vace", wan_vace)):
        pipe = family.load(tiny_modern.tiny_spec(name), rt16)
        assert pipe.vae.dtype == torch.float32 and pipe.transformer.dtype == torch.bfloat16
    middle = wan_vace.transition(tiny_modern.tiny_spec("wan-vace"), rt16, first=_image(8), last=_image(9), prompt=None,
                                 width=64, height=64, num_frames=5, steps=2, fps=16, seed=0)
    assert middle.shape == (3, 64, 64, 3) and middle.dtype == np.uint8


def test_every_wan_family_passes_the_one_wan_negative_prompt(rt, capture):
    """Wan 2.1 FLF2V, Wan 2.2 TI2V and VACE are all called with Wan's published negative prompt."""
    from mora.config import get_preset
    from mora.tools import wan
    from mora.tools.wan_loader import WAN_NEGATIVE_PROMPT

    args = dict(prompt="waves", width=64, height=64, num_frames=5, steps=2, seed=0)
    flf2v = get_preset("tiny-wan").spec("connect")
    vace, ti2v = tiny_modern.tiny_spec("wan-vace"), tiny_modern.tiny_spec("wan22-ti2v")
    pipelines = {type(family.load(spec, rt)) for family, spec in ((wan, flf2v), (wan_vace, vace), (wan22, ti2v))}
    calls = [capture(cls) for cls in pipelines]  # Wan 2.1 and 2.2 share WanImageToVideoPipeline
    negatives = {}
    for name, run in (("wan", lambda: wan.transition(flf2v, rt, first=_image(1), last=_image(2), fps=16, **args)),
                      ("wan-vace", lambda: wan_vace.transition(vace, rt, first=_image(1), last=_image(2), fps=16,
                                                               **args)),
                      ("wan22", lambda: wan22.generate(ti2v, rt, image=_image(1), segments=1, fps=24, **args))):
        before = [len(made) for made in calls]
        run()
        (call,) = [c for made, n in zip(calls, before) for c in made[n:]]  # this family's one call
        negatives[name] = call["negative_prompt"]
    assert negatives == dict.fromkeys(("wan", "wan-vace", "wan22"), WAN_NEGATIVE_PROMPT)

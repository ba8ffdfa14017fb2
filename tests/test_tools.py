"""mora.Toolset on the tiny presets, on the CPU: every tool, odd sizes and image modes, pixel-exact
prefixes for extend and connect, the real `from_pretrained` loading path, and one clear
`InputError` per kind of bad input.

Every input is made here (PIL, numpy and `media.write_video`); nothing reaches the network.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from pathlib import Path

import numpy as np
import pytest
from conftest import gradient_frames
from PIL import Image
from test_presets import _record

from mora import media
from mora.config import get_preset
from mora.errors import InputError, ModelUnavailableError
from mora.tools import ltx, runtime, weights
from mora.tools.sizing import cover_resize, resize_frames
from mora.tools.tiny import tiny_dir
from mora.tools.toolset import TOOL_NAMES, Toolset

# Mean absolute difference (0-255) allowed between frames that went through H.264 (crf 18) once
# more than the reference; ~1.5 is typical on the smooth gradients used here.
PIXEL_TOL = 4.0


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 arrays of the same shape."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def gradient_image(width: int, height: int) -> Image.Image:
    return Image.fromarray(gradient_frames(1, width, height)[0])


def written(directory: Path) -> list[Path]:
    """Files (including hidden temp files) under `directory`; [] when it does not exist."""
    return sorted(p for p in Path(directory).rglob("*") if p.is_file()) if Path(directory).exists() else []


# --- inputs, made once per module ------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="module")
def landscape_png(inputs) -> Path:
    """An odd-sized (113x75) RGB image."""
    path = inputs / "landscape.png"
    gradient_image(113, 75).save(path)
    return path


@pytest.fixture(scope="module")
def portrait_png(inputs) -> Path:
    path = inputs / "portrait.png"
    gradient_image(60, 90).save(path)
    return path


@pytest.fixture(scope="module")
def clip_a(inputs) -> Path:
    """5 frames, 96x64, 10 fps: the first video of connect."""
    return media.write_video(gradient_frames(5, 96, 64), inputs / "a.mp4", fps=10)


@pytest.fixture(scope="module")
def clip_b(inputs) -> Path:
    """4 frames, 128x96, 8 fps, an inverted pattern: the second video of connect."""
    return media.write_video(255 - gradient_frames(4, 128, 96, shift=9), inputs / "b.mp4", fps=8)


@pytest.fixture
def tools(tiny_tools_factory, tmp_path) -> Toolset:
    # Toolsets are cheap; the pipelines they load are cached per process and shared.
    return tiny_tools_factory(tmp_path / "out")


@pytest.fixture
def ltx_tools(tiny_tools_factory, tmp_path) -> Toolset:
    return tiny_tools_factory(tmp_path / "out", preset="tiny-ltx")


# --- text_to_image ------------------------------------------------------------------------------------


def test_text_to_image_default_size_and_call_record(tools):
    spec = get_preset("tiny").spec("text_to_image")
    path = Path(tools.text_to_image(prompt="a red fox running through snow", seed=0))

    assert path.is_file() and path.suffix == ".png"
    assert path.parent.resolve() == tools.output_dir.resolve()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (spec.settings.width, spec.settings.height) == (96, 64)

    call = tools.calls[-1]
    assert call["tool"] == "text_to_image"
    assert call["output"] == str(path)
    assert call["seed"] == 0
    assert call["family"] == "sdxl"
    assert call["model"] == ["tiny/sdxl-base", "tiny/sdxl-refiner"]
    assert call["args"]["prompt"] == "a red fox running through snow"
    assert call["settings"]["width"] == 96 and call["settings"]["height"] == 64
    assert call["settings"]["steps"] == spec.settings.steps == 2
    assert call["settings"]["high_noise_frac"] == 0.8
    assert call["seconds"] >= 0


def test_text_to_image_explicit_size_and_random_seed(tools):
    path = tools.text_to_image(prompt="a lighthouse at dusk", width=64, height=96, steps=1)
    with Image.open(path) as img:
        assert img.size == (64, 96)
    call = tools.calls[-1]
    assert call["settings"]["steps"] == 1
    assert (call["settings"]["width"], call["settings"]["height"]) == (64, 96)
    assert isinstance(call["seed"], int) and 0 <= call["seed"] < 2**32  # drawn, and recorded to repeat it


def test_text_to_image_seed_is_reproducible(tools):
    def pixels(seed):
        return np.asarray(Image.open(tools.text_to_image(prompt="a cat", seed=seed, steps=1)))

    first, again, other = pixels(7), pixels(7), pixels(8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len({c["output"] for c in tools.calls}) == 3  # never overwrites an earlier output
    assert len(written(tools.output_dir)) == 3


def test_text_to_image_without_refiner_on_tiny_ltx(ltx_tools):
    path = ltx_tools.text_to_image(prompt="a cat", seed=0, steps=1)
    assert Image.open(path).size == (96, 64)
    assert ltx_tools.calls[-1]["model"] == ["tiny/sdxl-base"]
    assert ltx_tools.calls[-1]["settings"]["high_noise_frac"] is None


# --- edit_image ---------------------------------------------------------------------------------------


def _save_rgb_jpeg(path):
    gradient_image(113, 75).save(path, format="JPEG", quality=90)


def _save_rgba_png(path):
    rgba = gradient_image(60, 90).convert("RGBA")
    alpha = np.full((90, 60), 255, np.uint8)
    alpha[:, :30] = 0  # half transparent
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(path)


def _save_gray_png(path):
    gradient_image(50, 50).convert("L").save(path)


def _save_palette_png(path):
    gradient_image(120, 40).convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(path)


def _save_animated_gif(path):
    frames = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE) for f in gradient_frames(2, 75, 113)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _save_webp(path):
    gradient_image(99, 67).save(path, format="WEBP")


@pytest.mark.parametrize(
    "name, save, mode, size",
    [
        ("rgb.jpg", _save_rgb_jpeg, "RGB", (113, 75)),
        ("rgba.png", _save_rgba_png, "RGBA", (60, 90)),
        ("gray.png", _save_gray_png, "L", (50, 50)),
        ("palette.png", _save_palette_png, "P", (120, 40)),
        ("anim.gif", _save_animated_gif, "P", (75, 113)),
        ("photo.webp", _save_webp, "RGB", (99, 67)),
    ],
)
def test_edit_image_any_mode_and_odd_size(tools, tmp_path, name, save, mode, size):
    src = tmp_path / name
    save(src)
    with Image.open(src) as img:
        assert (img.mode, img.size) == (mode, size)  # the input really is what the test claims

    path = Path(tools.edit_image(image_path=str(src), instruction="make it winter", seed=0))

    assert path.parent.resolve() == tools.output_dir.resolve() and path.suffix == ".png"
    with Image.open(path) as out:
        assert out.format == "PNG"
        w, h = out.size
    assert w % 8 == 0 and h % 8 == 0
    # aspect ratio kept up to rounding each side to a multiple of 8 (at most 4 px each)
    aspect = size[0] / size[1]
    assert abs(w / h - aspect) <= aspect * (4 / w + 4 / h) + 1e-9, (size, (w, h))
    # at the tiny model's working area (96x64 pixels), give or take rounding
    assert 0.7 * 96 * 64 <= w * h <= 1.3 * 96 * 64
    call = tools.calls[-1]
    assert call["tool"] == "edit_image" and call["model"] == ["tiny/pix2pix"]
    assert (call["settings"]["width"], call["settings"]["height"]) == (w, h)


# --- the real loading path (more below) -----------------------------------------------------------


def test_tiny_preset_round_trips_through_from_pretrained(tools, landscape_png, monkeypatch):
    # First SVD test of the module, so that on its own the release below costs nothing.
    from diffusers import StableVideoDiffusionPipeline

    runtime.release("svd")
    assert not any(key[0] == "svd" for key in runtime.cached_keys())
    loaded = []
    real = StableVideoDiffusionPipeline.from_pretrained

    def spy(cls, source, *args, **kwargs):
        pipe = real(source, *args, **kwargs)
        loaded.append((str(source), pipe))
        return pipe

    monkeypatch.setattr(StableVideoDiffusionPipeline, "from_pretrained", classmethod(spy))

    tools.image_to_video(image_path=str(landscape_png), num_frames=2, segments=1, seed=0)

    model_dir = tiny_dir("svd")
    assert [source for source, _ in loaded] == [str(model_dir)]
    assert isinstance(loaded[0][1], StableVideoDiffusionPipeline)
    assert tuple(loaded[0][1].unet.config.block_out_channels) == (32, 64)  # the tiny one, from disk
    assert (model_dir / "model_index.json").is_file()
    assert list(model_dir.rglob("*.safetensors")), "weights were not saved"
    assert ("svd", "tiny/svd", "cpu", "float32", "balanced") in runtime.cached_keys()

    # the next call reuses the cached pipeline
    tools.image_to_video(image_path=str(landscape_png), num_frames=2, segments=1, seed=1)
    assert len(loaded) == 1


# --- image_to_video -----------------------------------------------------------------------------------


def test_image_to_video_chains_segments(tools, landscape_png):
    path = Path(tools.image_to_video(image_path=str(landscape_png), num_frames=4, segments=2, fps=5, seed=0))

    assert path.parent.resolve() == tools.output_dir.resolve() and path.suffix == ".mp4"
    video = media.read_video(path)
    assert video.num_frames == 4 + (2 - 1) * (4 - 1) == 7
    assert video.fps == pytest.approx(5)
    assert (video.width, video.height) == (96, 64)  # 113x75 at the model's area, multiples of 8
    call = tools.calls[-1]
    assert call["family"] == "svd" and call["model"] == ["tiny/svd"]
    assert call["video"] == dict(num_frames=7, fps=5, width=96, height=64, boundaries=[4])
    assert call["settings"]["motion_bucket_id"] == 180 and call["settings"]["segments"] == 2


def test_image_to_video_one_segment_uses_preset_fps(tools, landscape_png):
    video = media.read_video(tools.image_to_video(image_path=str(landscape_png), num_frames=4, segments=1, seed=0))
    assert video.num_frames == 4
    assert video.fps == pytest.approx(get_preset("tiny").spec("image_to_video").settings.fps)


def test_image_to_video_portrait_input_gives_portrait_video(tools, portrait_png):
    video = media.read_video(tools.image_to_video(image_path=str(portrait_png), num_frames=3, segments=1, seed=0))
    assert video.height > video.width
    assert video.width % 8 == 0 and video.height % 8 == 0
    assert video.width / video.height == pytest.approx(60 / 90, rel=0.15)


def test_image_to_video_explicit_size(tools, landscape_png):
    video = media.read_video(
        tools.image_to_video(image_path=str(landscape_png), num_frames=3, segments=1, width=64, height=64, seed=0)
    )
    assert (video.width, video.height) == (64, 64)
    assert video.num_frames == 3


def test_image_to_video_ltx_family(ltx_tools, landscape_png):
    path = ltx_tools.image_to_video(image_path=str(landscape_png), prompt="waves roll in", num_frames=9, seed=0)
    video = media.read_video(path)
    assert video.num_frames == 9
    assert (video.width, video.height) == (96, 64)
    assert video.fps == pytest.approx(get_preset("tiny-ltx").spec("image_to_video").settings.fps)
    assert ltx_tools.calls[-1]["family"] == "ltx" and ltx_tools.calls[-1]["model"] == ["tiny/ltx"]

    chained = media.read_video(ltx_tools.image_to_video(image_path=str(landscape_png), num_frames=5, segments=2,
                                                        fps=6, seed=0))
    assert chained.num_frames == 5 + (5 - 1) == 9
    assert chained.fps == pytest.approx(6)
    assert ltx_tools.calls[-1]["video"]["boundaries"] == [5]


def test_image_to_video_seed_is_reproducible(ltx_tools, landscape_png):
    def frames(seed):
        path = ltx_tools.image_to_video(image_path=str(landscape_png), num_frames=5, seed=seed)
        return media.read_video(path).frames

    first, again, other = frames(11), frames(11), frames(12)
    # The model's frames are equal bit for bit; the mp4's H.264 encode of them is not always (the first
    # encode in a process can round differently from later ones: a few levels here and there), so the
    # decoded frames are compared to that rounding, far below another seed's difference.
    same, changed = np.abs(first.astype(int) - again), np.abs(first.astype(int) - other)
    assert same.mean() < 1.0 and changed.mean() > 5 * max(same.mean(), 1.0), (same.mean(), changed.mean())


def test_image_to_video_ltx_needs_4k_plus_1_frames(ltx_tools, landscape_png):
    with pytest.raises(InputError) as info:
        ltx_tools.image_to_video(image_path=str(landscape_png), num_frames=8, seed=0)
    message = str(info.value)
    assert "num_frames" in message and "8" in message
    assert "4k+1" in message and "5" in message and "9" in message
    assert written(ltx_tools.output_dir) == []


# --- extend_video -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, size, fps, num_frames, new_frames",
    [
        ("tiny", (96, 64), 10, 4, 4),
        ("tiny", (80, 48), 8, None, 3),  # SVD default: one clip minus its (repeated) first frame
        ("tiny-ltx", (96, 64), 10, 4, 4),
        ("tiny-ltx", (80, 48), 8, None, 9),  # LTX default: the preset's num_frames
    ],
)
def test_extend_video_keeps_input_frames(tiny_tools_factory, tmp_path, monkeypatch, preset, size, fps, num_frames,
                                         new_frames):
    width, height = size
    src = media.write_video(gradient_frames(6, width, height), tmp_path / "in.mp4", fps=fps)
    original = media.read_video(src)
    tools = tiny_tools_factory(tmp_path / "out", preset=preset)

    conditions = []
    real_call = ltx._call

    def spy(spec, rt, conds, **kwargs):
        conditions.append((conds, kwargs))
        return real_call(spec, rt, conds, **kwargs)

    monkeypatch.setattr(ltx, "_call", spy)

    path = Path(tools.extend_video(video_path=str(src), prompt="the camera pans right", num_frames=num_frames, seed=0))
    out = media.read_video(path)

    assert path.parent.resolve() == tools.output_dir.resolve()
    assert out.num_frames == original.num_frames + new_frames
    assert (out.width, out.height) == (original.width, original.height) == (width, height)
    assert out.fps == pytest.approx(original.fps) and out.fps == pytest.approx(fps)
    assert mad(out.frames[: original.num_frames], original.frames) < PIXEL_TOL
    video = tools.calls[-1]["video"]
    assert video["boundaries"] == [original.num_frames]
    assert video["num_frames"] == out.num_frames

    if preset == "tiny-ltx":
        # LTX is conditioned on the video's tail: its last 5 (4k+1) frames, last frame last
        (conds, kwargs), = conditions
        (cond,) = conds
        assert cond.frame_index == 0 and len(cond.video) == 5
        w, h = kwargs["width"], kwargs["height"]
        expected = np.asarray(cover_resize(Image.fromarray(original.frames[-1]), w, h))
        assert np.array_equal(np.asarray(cond.video[-1]), expected)
    else:
        assert conditions == []


def test_ltx_decodes_with_the_settings_lightricks_publish_for_0_9_5(ltx_tools, landscape_png, monkeypatch):
    """configs/ltxv-2b-0.9.5.yaml: decode_timestep 0.05, decode_noise_scale 0.025; conditioning noise 0.15."""
    from diffusers import LTXConditionPipeline

    calls = _record(monkeypatch, LTXConditionPipeline)
    ltx_tools.image_to_video(image_path=str(landscape_png), num_frames=5, seed=0)
    (call,) = calls
    assert (call["decode_timestep"], call["decode_noise_scale"], call["image_cond_noise_scale"]) == (0.05, 0.025, 0.15)
    assert (call["guidance_scale"], get_preset("ltx").spec("image_to_video").settings.steps) == (3.0, 40)


def test_extend_conditions_svd_on_the_presets_fps_not_the_inputs(tools, tmp_path, monkeypatch):
    """A 30 fps input: SVD's fps micro-conditioning is the preset's (7), not the input's rate minus one."""
    from diffusers import StableVideoDiffusionPipeline

    src = media.write_video(gradient_frames(4, 96, 64), tmp_path / "fast.mp4", fps=30)
    calls = _record(monkeypatch, StableVideoDiffusionPipeline)
    out = media.read_video(tools.extend_video(video_path=str(src), num_frames=2, seed=0))
    assert [c["fps"] for c in calls] == [get_preset("tiny").spec("extend").settings.fps] == [7]
    assert out.fps == pytest.approx(30)  # the output keeps the input's rate


def test_extend_makes_svds_continuation_at_its_rate_and_samples_it_to_the_inputs(tools, tmp_path, monkeypatch):
    """30 new frames of a 14 fps input are 15 frames at SVD's 7 fps (plus the start frame), each held twice."""
    from diffusers import StableVideoDiffusionPipeline

    from mora.tools import svd

    spec = get_preset("tiny").spec("extend")
    made: list[np.ndarray] = []
    original = svd.chain_segments
    monkeypatch.setattr(svd, "chain_segments", lambda *a, **k: made.append(original(*a, **k)) or made[-1])
    src = media.write_video(gradient_frames(4, 96, 64), tmp_path / "in.mp4", fps=14)
    calls = _record(monkeypatch, StableVideoDiffusionPipeline)
    new = svd.continue_video(spec, tools.runtime, frames=media.read_video(src).frames, prompt=None, width=96,
                             height=64, num_frames=30, steps=1, fps=14, seed=0)
    assert sum(c["num_frames"] for c in calls) - (len(calls) - 1) == 15 + 1  # 30 frames at 14 fps = 15 at 7
    assert len(new) == 30 and all(np.array_equal(new[k], made[0][1 + k // 2]) for k in range(30))
    assert len(svd.continue_video(spec, tools.runtime, frames=media.read_video(src).frames, prompt=None, width=96,
                                  height=64, num_frames=5, steps=1, fps=7, seed=0)) == 5  # its own rate: as asked


def test_extend_past_svds_trained_length_is_chained_in_segments(tools, tmp_path, monkeypatch):
    """No SVD call makes more frames than the model's trained length (its UNet's num_frames)."""
    from diffusers import StableVideoDiffusionPipeline

    from mora.tools import svd

    spec = get_preset("tiny").spec("extend")
    trained = svd.load(spec, tools.runtime).unet.config.num_frames
    src = media.write_video(gradient_frames(4, 96, 64), tmp_path / "in.mp4", fps=7)
    calls = _record(monkeypatch, StableVideoDiffusionPipeline)
    asked = spec.settings.max_frames  # the most new frames extend takes: with the start frame, one too many
    assert asked + 1 > trained
    out = media.read_video(tools.extend_video(video_path=str(src), num_frames=asked, seed=0))
    made = [c["num_frames"] for c in calls]
    assert len(made) > 1 and max(made) <= trained
    assert sum(made) - (len(made) - 1) == asked + 1  # each join's shared frame once, the start frame dropped
    assert out.num_frames == 4 + asked


def test_extend_odd_sized_gif(tools, tmp_path):
    # Flat 15x15 blocks: the palette keeps them exact, so pixels survive GIF and H.264 closely.
    blocks = np.kron(np.arange(15, dtype=np.uint8).reshape(3, 5) * 17, np.ones((15, 15), np.uint8))
    frames = [np.stack([np.roll(blocks, 15 * t, axis=1), blocks, 255 - blocks], -1) for t in range(5)]
    src = tmp_path / "odd.gif"
    pil = [Image.fromarray(f) for f in frames]
    pil[0].save(src, save_all=True, append_images=pil[1:], duration=100, loop=0)
    original = media.read_video(src)
    assert (original.width, original.height, original.num_frames) == (75, 45, 5)

    out = media.read_video(tools.extend_video(video_path=str(src), num_frames=2, seed=0))

    assert out.num_frames == 5 + 2
    assert out.fps == pytest.approx(original.fps) == pytest.approx(10)
    # H.264 yuv420p needs even sides: the writer pads one edge-replicated row/column, no rescale
    assert (out.width, out.height) == (76, 46)
    assert mad(out.frames[:5, :45, :75], original.frames) < PIXEL_TOL
    # the record describes the file as written (what manifests report), padding included
    assert (tools.calls[-1]["video"]["width"], tools.calls[-1]["video"]["height"]) == (76, 46)


# --- connect_videos -----------------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames, transition", [(None, 9), (5, 5)])
def test_connect_videos_keeps_both_videos(tools, clip_a, clip_b, caplog, num_frames, transition):
    caplog.set_level(logging.WARNING, logger="mora")
    a, b = media.read_video(clip_a), media.read_video(clip_b)
    assert (a.width, a.height, a.num_frames) == (96, 64, 5) and (b.width, b.height, b.num_frames) == (128, 96, 4)

    path = Path(tools.connect_videos(first_video=str(clip_a), second_video=str(clip_b), num_frames=num_frames,
                                     prompt="a smooth dissolve", seed=0))
    out = media.read_video(path)

    assert path.parent.resolve() == tools.output_dir.resolve()
    assert out.num_frames == a.num_frames + (transition - 2) + b.num_frames
    assert (out.width, out.height) == (a.width, a.height)
    assert out.fps == pytest.approx(a.fps)  # B is played at A's rate, with a warning
    assert any("fps" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")

    b_resized = resize_frames(b.frames, a.width, a.height)
    assert mad(out.frames[: a.num_frames], a.frames) < PIXEL_TOL
    assert mad(out.frames[-b.num_frames:], b_resized) < PIXEL_TOL
    assert mad(out.frames[-b.num_frames:], a.frames[: b.num_frames]) > 20  # the comparison can tell A from B
    call = tools.calls[-1]
    assert call["family"] == "ltx"
    assert call["video"]["boundaries"] == [a.num_frames, a.num_frames + transition - 2]


def test_connect_videos_with_wan_first_last_frame(tiny_tools_factory, tmp_path, clip_a, clip_b):
    """The second first-last-frame backend (Wan 2.1 FLF2V) keeps both videos around its transition."""
    tools = tiny_tools_factory(tmp_path / "wan", preset="tiny-wan")
    a, b = media.read_video(clip_a), media.read_video(clip_b)
    out = media.read_video(tools.connect_videos(first_video=str(clip_a), second_video=str(clip_b), seed=0))
    assert out.num_frames == a.num_frames + (9 - 2) + b.num_frames
    assert mad(out.frames[: a.num_frames], a.frames) < PIXEL_TOL
    assert mad(out.frames[-b.num_frames:], resize_frames(b.frames, a.width, a.height)) < PIXEL_TOL
    assert tools.calls[-1]["family"] == "wan"
    with pytest.raises(InputError, match="4k\\+1"):
        tools.connect_videos(first_video=str(clip_a), second_video=str(clip_b), num_frames=8, seed=0)


# --- the real loading path -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, pipeline",
    [
        ("sdxl-base", "StableDiffusionXLPipeline"),
        ("sdxl-refiner", "StableDiffusionXLImg2ImgPipeline"),
        ("pix2pix", "StableDiffusionInstructPix2PixPipeline"),
        ("svd", "StableVideoDiffusionPipeline"),
        ("ltx", "LTXConditionPipeline"),
        ("wan", "WanImageToVideoPipeline"),
    ],
)
def test_every_tiny_model_is_saved_as_a_pipeline(name, pipeline):
    import json

    from mora.tools.tiny import ensure_tiny

    model_dir = ensure_tiny(f"tiny/{name}")
    assert model_dir == tiny_dir(name)
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == pipeline
    assert list(model_dir.rglob("*.safetensors"))


def test_local_directory_works_as_a_model_id(tiny_tools_factory, tmp_path, landscape_png, monkeypatch):
    from diffusers import StableVideoDiffusionPipeline

    from mora.config import Preset, with_settings

    model_dir = str(tiny_dir("svd"))
    loaded = []
    real = StableVideoDiffusionPipeline.from_pretrained

    def spy(cls, source, *args, **kwargs):
        loaded.append(str(source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(StableVideoDiffusionPipeline, "from_pretrained", classmethod(spy))
    tiny = get_preset("tiny")
    spec = dataclasses.replace(with_settings(tiny.spec("image_to_video"), num_frames=3), model=model_dir)
    local = Preset("local", "tiny SVD from a directory", {**tiny.roles, "image_to_video": spec})
    tools = tiny_tools_factory(tmp_path / "out", preset=local)
    video = media.read_video(tools.image_to_video(image_path=str(landscape_png), segments=1, seed=0))
    assert video.num_frames == 3
    assert loaded == [model_dir]
    assert tools.calls[-1]["model"] == [model_dir]


def test_missing_real_model_offline_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants
    from diffusers import StableVideoDiffusionPipeline

    # An empty Hugging Face cache, offline, and any socket connection recorded (and refused).
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HOME", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)

    model = "stabilityai/stable-video-diffusion-img2vid-xt"
    with pytest.raises(ModelUnavailableError) as info:
        weights.from_pretrained(StableVideoDiffusionPipeline, model)

    message = str(info.value)
    assert model in message
    assert "--preset tiny" in message
    assert "HF_HOME" in message
    assert "local directory" in message
    assert info.value.exit_code == 2
    assert attempts == []


# --- sizes derived from the input and the output folder are checked before any model work ------------


@pytest.mark.parametrize(
    "image_size, size_kwargs, area",
    [((113, 75), dict(height=4096), None), ((600, 4), dict(), (1024, 576))],
    ids=["one-side-given", "panorama-at-paper-area"],
)
def test_derived_video_side_is_bounded(tiny_tools_factory, tmp_path, monkeypatch, image_size, size_kwargs, area):
    from mora.config import Preset, with_settings
    from mora.tools import svd

    def must_not_run(spec, rt, *, width, height, **kwargs):
        raise AssertionError(f"the model was asked for {width}x{height} frames")

    monkeypatch.setattr(svd, "generate", must_not_run)
    preset = get_preset("tiny")
    if area:
        spec = with_settings(preset.spec("image_to_video"), width=area[0], height=area[1])
        preset = Preset("big-area", "tiny SVD at the paper's area", {**preset.roles, "image_to_video": spec})
    src = tmp_path / "in.png"
    gradient_image(*image_size).save(src)
    tools = tiny_tools_factory(tmp_path / "out", preset=preset)

    with pytest.raises(InputError) as info:
        tools.image_to_video(image_path=str(src), num_frames=2, segments=1, seed=0, **size_kwargs)
    assert "4096" in str(info.value)
    assert written(tools.output_dir) == []


def test_output_dir_that_is_a_file_is_an_input_error(tiny_tools_factory, tmp_path, monkeypatch):
    from mora.tools import sdxl

    ran = []
    monkeypatch.setattr(sdxl, "text_to_image", lambda *a, **k: ran.append(1) or (Image.new("RGB", (96, 64)), {}))
    not_a_dir = tmp_path / "outputs"
    not_a_dir.write_text("a file, not a directory\n")
    with pytest.raises(InputError) as info:
        tiny_tools_factory(not_a_dir)
    assert "outputs" in str(info.value)
    assert ran == []  # refused before any model work


# --- bad input ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(inputs, clip_a) -> dict[str, Path]:
    files = {"dir": inputs / "a-directory", "missing": inputs / "missing.png"}
    files["dir"].mkdir()
    files["text_png"] = inputs / "notes.png"
    files["text_png"].write_text("this is not an image\n")
    files["empty_mp4"] = inputs / "empty.mp4"
    files["empty_mp4"].write_bytes(b"")
    data = Path(clip_a).read_bytes()
    files["truncated_mp4"] = inputs / "truncated.mp4"
    files["truncated_mp4"].write_bytes(data[: len(data) // 2])
    files["image"] = inputs / "still.png"
    gradient_image(64, 48).save(files["image"])
    files["video"] = clip_a
    return files


# (tool, kwargs with {name} placeholders for bad_files, words the message must contain)
BAD_CALLS = [
    ("text_to_image", dict(prompt=""), ["prompt", "''", "empty"]),
    ("text_to_image", dict(prompt="   \n\t"), ["prompt", "empty"]),
    ("text_to_image", dict(prompt=None), ["prompt", "None"]),
    ("text_to_image", dict(prompt=42), ["prompt", "42"]),
    ("text_to_image", dict(prompt="x" * 3000), ["prompt", "3000", "2000"]),
    ("text_to_image", dict(prompt="a cat", seed="abc"), ["seed", "'abc'", "integer"]),
    ("text_to_image", dict(prompt="a cat", seed=1.5), ["seed", "1.5", "integer"]),
    ("text_to_image", dict(prompt="a cat", seed=-1), ["seed", "-1", "0"]),
    ("text_to_image", dict(prompt="a cat", seed=2**32), ["seed", "4294967296"]),
    ("text_to_image", dict(prompt="a cat", seed=True), ["seed", "True"]),
    ("text_to_image", dict(prompt="a cat", width=100), ["width", "100", "multiple of 8", "96", "104"]),
    ("text_to_image", dict(prompt="a cat", height=36), ["height", "36", "32", "40"]),
    ("text_to_image", dict(prompt="a cat", width=0), ["width", "0", "range"]),
    ("text_to_image", dict(prompt="a cat", width=8192), ["width", "8192", "4096"]),
    ("text_to_image", dict(prompt="a cat", steps=0), ["steps", "0", "range"]),
    ("text_to_image", dict(prompt="a cat", steps="many"), ["steps", "'many'"]),
    ("edit_image", dict(image_path="{missing}", instruction="x"), ["image_path", "missing.png", "does not exist"]),
    ("edit_image", dict(image_path="{dir}", instruction="x"), ["image_path", "a-directory", "directory"]),
    ("edit_image", dict(image_path="{text_png}", instruction="x"), ["image_path", "notes.png", "not a readable image"]),
    ("edit_image", dict(image_path="{empty_mp4}", instruction="x"), ["image_path", "empty.mp4", "empty"]),
    ("edit_image", dict(image_path=42, instruction="x"), ["image_path", "42"]),
    ("edit_image", dict(image_path="", instruction="x"), ["image_path", "''"]),
    ("edit_image", dict(image_path="{image}", instruction=" "), ["instruction", "empty"]),
    ("edit_image", dict(image_path="{image}", instruction="x", steps=0), ["steps", "0"]),
    ("image_to_video", dict(image_path="{missing}"), ["image_path", "missing.png", "does not exist"]),
    ("image_to_video", dict(image_path="{video}"), ["image_path", "a.mp4", "not a readable image"]),
    ("image_to_video", dict(image_path="{image}", fps=0), ["fps", "0", "range"]),
    ("image_to_video", dict(image_path="{image}", fps=-5), ["fps", "-5"]),
    ("image_to_video", dict(image_path="{image}", num_frames=0), ["num_frames", "0", "range"]),
    ("image_to_video", dict(image_path="{image}", num_frames=1), ["num_frames", "1", "range"]),
    ("image_to_video", dict(image_path="{image}", num_frames=1000), ["num_frames", "1000", "25"]),
    ("image_to_video", dict(image_path="{image}", segments=0), ["segments", "0"]),
    ("image_to_video", dict(image_path="{image}", width=100), ["width", "100", "96", "104"]),
    ("image_to_video", dict(image_path="{image}", seed="abc"), ["seed", "'abc'"]),
    ("image_to_video", dict(image_path="{image}", prompt=""), ["prompt", "''"]),
    ("extend_video", dict(video_path="{empty_mp4}"), ["video_path", "empty.mp4", "empty"]),
    ("extend_video", dict(video_path="{truncated_mp4}"), ["video_path", "truncated.mp4", "truncated"]),
    ("extend_video", dict(video_path="{text_png}"), ["video_path", "notes.png"]),
    ("extend_video", dict(video_path="{image}"), ["video_path", "still.png", "still image"]),
    ("extend_video", dict(video_path="{missing}"), ["video_path", "missing.png", "does not exist"]),
    ("extend_video", dict(video_path="{dir}"), ["video_path", "directory"]),
    ("extend_video", dict(video_path="{video}", num_frames=0), ["num_frames", "0"]),
    ("extend_video", dict(video_path="{video}", seed=-3), ["seed", "-3"]),
    ("connect_videos", dict(first_video="{video}", second_video="{missing}"),
     ["second_video", "missing.png", "does not exist"]),
    ("connect_videos", dict(first_video="{truncated_mp4}", second_video="{video}"),
     ["first_video", "truncated.mp4", "truncated"]),
    ("connect_videos", dict(first_video="{video}", second_video="{video}", num_frames=8),
     ["num_frames", "8", "4k+1", "5", "9"]),
    ("connect_videos", dict(first_video="{video}", second_video="{video}", num_frames=1),
     ["num_frames", "1"]),
    ("connect_videos", dict(first_video="{video}", second_video="{video}", steps=0), ["steps", "0"]),
]


def _fill(kwargs: dict, files: dict[str, Path]) -> dict:
    def fill(v):
        if isinstance(v, str) and v.startswith("{") and v.endswith("}") and v[1:-1] in files:
            return str(files[v[1:-1]])
        return v

    return {k: fill(v) for k, v in kwargs.items()}


@pytest.mark.parametrize(
    "tool, kwargs, words", BAD_CALLS, ids=[f"{t}-{'-'.join(f'{k}={v!r}'[:24] for k, v in kw.items())}"
                                          for t, kw, _ in BAD_CALLS],
)
def test_bad_input_is_an_input_error(tools, bad_files, tool, kwargs, words):
    with pytest.raises(InputError) as info:
        getattr(tools, tool)(**_fill(kwargs, bad_files))
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "\n" not in message  # one line
    assert ";" in message  # "what is wrong; the fix"
    assert written(tools.output_dir) == []
    assert tools.calls == []


def test_unknown_preset_names_the_choices(tmp_path):
    with pytest.raises(InputError) as info:
        Toolset(preset="nope", device="cpu", output_dir=tmp_path / "out")
    message = str(info.value)
    assert "nope" in message
    for name in ("mora", "ltx", "tiny", "tiny-ltx"):
        assert name in message
    assert not (tmp_path / "out").exists()


def test_cuda_without_gpu_is_an_input_error(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(InputError) as info:
            Toolset(preset="tiny", device=device, output_dir=tmp_path / "out")
        assert repr(device) in str(info.value) and "cpu" in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "option, value", [("device", "tpu"), ("device", "cuda:x"), ("profile", "turbo"), ("dtype", "int8")]
)
def test_bad_runtime_options_are_input_errors(tmp_path, monkeypatch, option, value):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # so cuda:x fails on its index
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    kwargs = dict(preset="tiny", device="cpu", output_dir=tmp_path / "out")
    kwargs[option] = value
    with pytest.raises(InputError) as info:
        Toolset(**kwargs)
    assert repr(value) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_input_guard_sees_every_input_path(tools, bad_files, tmp_path):
    seen = []

    def guard(path, argument):
        seen.append((path, argument))
        raise InputError(f"{argument}: {path!r} is not an input or artifact of this job; pass one of those")

    guarded = Toolset(preset="tiny", device="cpu", output_dir=tmp_path / "guarded", progress=False, input_guard=guard)
    image, video = str(bad_files["image"]), str(bad_files["video"])
    for call in (
        lambda: guarded.edit_image(image_path=image, instruction="x"),
        lambda: guarded.image_to_video(image_path=image),
        lambda: guarded.extend_video(video_path=video),
        lambda: guarded.connect_videos(first_video=video, second_video=video),
    ):
        with pytest.raises(InputError, match="not an input or artifact"):
            call()
    assert seen == [(image, "image_path"), (image, "image_path"), (video, "video_path"), (video, "first_video")]
    assert written(tmp_path / "guarded") == []


def test_tools_are_registered_by_name(tools):
    assert tuple(tools.tools) == TOOL_NAMES
    assert all(callable(f) for f in tools.tools.values())
    assert tools.device == "cpu"

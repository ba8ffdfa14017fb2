"""Chained segments (mora.tools.segments): one seeding rule for SVD, LTX and Wan 2.2, on the tiny models."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mora.config import get_preset
from mora.errors import InputError
from mora.tools import ltx, svd, tiny_modern, wan22
from mora.tools.runtime import Runtime
from mora.tools.segments import (
    chain_segments,
    chained_length,
    extension_clips,
    segment_boundaries,
    segment_seed,
)


@pytest.fixture(scope="module")
def rt():
    return Runtime(device="cpu", progress=False)


def _image(seed: int, width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8))


def test_segment_i_uses_seed_plus_i_and_starts_from_the_last_frame():
    starts, seeds = [], []

    def clip(start: Image.Image, seed: int) -> np.ndarray:
        starts.append(np.asarray(start).copy())
        seeds.append(seed)
        base = np.asarray(start)
        return np.stack([base, base // 2 + seed % 7, base // 3 + 1, base // 4 + len(seeds)]).astype(np.uint8)

    first = _image(0, 8, 6)
    video = chain_segments(first, 3, 100, clip)
    assert seeds == [segment_seed(100, i) for i in range(3)] == [100, 101, 102]
    assert video.shape == (chained_length(4, 3), 6, 8, 3) == (10, 6, 8, 3)
    assert np.array_equal(starts[0], np.asarray(first))
    for i, boundary in enumerate(segment_boundaries(4, 3)):  # [4, 7]
        assert np.array_equal(starts[i + 1], video[boundary - 1])  # segment i+1 starts at segment i's last frame
    assert segment_boundaries(4, 1) == [] and chained_length(4, 1) == 4


def _svd(rt):
    return svd, get_preset("tiny").spec("image_to_video"), dict(width=64, height=64, num_frames=3, steps=2, fps=7)


def _ltx(rt):
    return ltx, get_preset("tiny-ltx").spec("image_to_video"), dict(width=64, height=64, num_frames=9, steps=2, fps=8)


def _wan22(rt):
    spec = tiny_modern.tiny_spec("wan22-ti2v")
    return wan22, spec, dict(width=64, height=64, num_frames=5, steps=2, fps=24)


@pytest.mark.parametrize("family", [_svd, _ltx, _wan22], ids=["svd", "ltx", "wan22"])
def test_two_segments_follow_the_one_seeding_rule(rt, family):
    module, spec, args = family(rt)
    first = _image(3, 64, 64)
    video = module.generate(spec, rt, image=first, prompt="waves roll in", segments=2, seed=5, **args)
    n = args["num_frames"]
    assert video.shape == (chained_length(n, 2), 64, 64, 3) and video.dtype == np.uint8
    # the same seed gives the same frames
    assert np.array_equal(video, module.generate(spec, rt, image=first, prompt="waves roll in", segments=2, seed=5,
                                                 **args))
    # segment 0 is the one-segment clip of the same seed; segment 1 is the one-segment clip of seed + 1
    # started from segment 0's last frame (a fresh generator per segment, whatever segment 0 drew)
    one = module.generate(spec, rt, image=first, prompt="waves roll in", segments=1, seed=5, **args)
    assert np.array_equal(video[:n], one)
    second = module.generate(spec, rt, image=Image.fromarray(video[n - 1]), prompt="waves roll in", segments=1,
                             seed=6, **args)
    assert np.array_equal(video[n:], second[1:])  # the joined video keeps the shared frame once


def test_extension_clips_are_the_fewest_within_the_trained_length():
    for new in range(1, 80):
        for per_clip in (2, 3, 9, 25):
            clips = extension_clips(new, per_clip)
            assert max(clips) <= per_clip and max(clips) - min(clips) <= 1
            assert sum(clips) - (len(clips) - 1) == new + 1  # the start frame and the new ones
            assert len(clips) == -(-new // (per_clip - 1))  # no fewer clips could hold them
    with pytest.raises(ValueError, match="per_clip"):
        extension_clips(4, 1)


def test_an_svd_segment_over_the_trained_length_is_refused(rt):
    spec = get_preset("tiny").spec("image_to_video")
    trained = svd.load(spec, rt).unet.config.num_frames
    with pytest.raises(InputError, match=f"^num_frames: {trained + 1} is over the {trained} frames"):
        svd.generate(spec, rt, image=_image(1, 64, 64), prompt=None, width=64, height=64, num_frames=trained + 1,
                     segments=1, steps=2, fps=7, seed=0)

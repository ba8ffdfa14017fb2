"""Chaining clips into one video: every image-to-video family (SVD, LTX, Wan 2.2) and Wan VACE's windows.

A video model makes clips of a bounded length. A longer video is `segments` clips, each starting from
the previous clip's last frame; that frame is kept once in the joined video, so the video has
n + (s-1)(n-1) frames for s clips of n.

The seeding rule, one for every family: segment i (from 0) runs with seed + i on a fresh generator.
Segment 0 is then the same clip a one-segment call with the same seed makes, and segment i's noise
does not depend on how many noise draws the earlier segments' pipelines made.

An extension adds frames after a given last frame in the fewest clips a model can make whole
(`extension_clips`), chained the same way.

Example:
    >>> segment_seed(7, 2), chained_length(4, 3), segment_boundaries(4, 3), extension_clips(30, 25)
    (9, 10, [4, 7], [16, 16])
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from PIL import Image

from mora.limits import derive_seed

logger = logging.getLogger(__name__)


def segment_seed(seed: int, index: int) -> int:
    """The seed of segment (or window) `index` of a chained video: seed + index (`mora.limits.derive_seed`).

    Example:
        >>> [segment_seed(41, i) for i in range(3)]
        [41, 42, 43]
    """
    return derive_seed(seed, index)


def chained_length(num_frames: int, segments: int) -> int:
    """Frames in `segments` chained clips of `num_frames` (each join's repeated frame kept once).

    Example:
        >>> chained_length(25, 2)
        49
    """
    return num_frames + (segments - 1) * (num_frames - 1)


def segment_boundaries(num_frames: int, segments: int) -> list[int]:
    """Where segments 2.. begin in the joined video: the index just after each join's shared frame.

    Example:
        >>> segment_boundaries(5, 3)
        [5, 9]
    """
    return [chained_length(num_frames, i + 1) for i in range(segments - 1)]


def extension_clips(new_frames: int, per_clip: int) -> list[int]:
    """The clips that add `new_frames` after a start frame: the fewest of at most `per_clip` frames each
    (a model's trained length), each starting from the previous one's last frame, lengths as even as
    possible. Their frames, each join's shared frame once, are the start frame and the new frames.

    Example:
        >>> extension_clips(24, 25), extension_clips(25, 25), extension_clips(5, 3)
        ([25], [14, 13], [3, 3, 2])
    """
    if per_clip < 2:
        raise ValueError(f"per_clip must be at least 2 (a start frame and a new one), got {per_clip}")
    clips = -(-new_frames // (per_clip - 1))
    base, extra = divmod(new_frames, clips)
    return [base + 1 + (i < extra) for i in range(clips)]


def chain_segments(first: Image.Image, segments: int, seed: int,
                   make_clip: Callable[[Image.Image, int], np.ndarray], label: str = "video") -> np.ndarray:
    """`segments` clips, each from the previous clip's last frame, joined: (T, H, W, 3) uint8.

    Args:
        first: segment 0's start image (as the family expects it: resized or not).
        segments: how many clips (at least 1).
        seed: segment 0's seed; segment i gets `segment_seed(seed, i)`.
        make_clip: `(start image, seed) -> (n, H, W, 3) uint8` clip whose frame 0 is the start image.
        label: the family, for the debug log.

    Returns:
        The clips joined, each join's shared frame once: T = n + (s-1)(n-1) for clips of n frames.

    Example:
        >>> clip = lambda image, seed: np.stack([np.asarray(image)] * 3)
        >>> chain_segments(Image.new("RGB", (4, 2)), 2, 0, clip).shape
        (5, 2, 4, 3)
    """
    frames: list[np.ndarray] = []
    current = first
    for index in range(segments):
        clip = make_clip(current, segment_seed(seed, index))
        frames.extend(clip if index == 0 else clip[1:])
        current = Image.fromarray(clip[-1])
        logger.debug("%s segment %d/%d: %d frames", label, index + 1, segments, len(clip))
    return np.stack(frames)

"""Picking model-compatible sizes and resizing images to them (PIL only, no torch)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageOps


def round_to(value: float, multiple: int) -> int:
    """Nearest positive multiple of `multiple`."""
    return max(multiple, int(round(value / multiple)) * multiple)


def fit_size(width: int, height: int, area: int, multiple: int) -> tuple[int, int]:
    """A (w, h) with the aspect ratio of `width`x`height`, about `area` pixels, multiples of `multiple`.

    Example:
        >>> fit_size(113, 75, 96 * 64, 8)
        (96, 64)
    """
    aspect = width / height
    w = math.sqrt(area * aspect)
    return round_to(w, multiple), round_to(w / aspect, multiple)


def cover_resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover (width, height), then centre-crop: no distortion, no borders."""
    if image.size == (width, height):
        return image
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)


def resize_frames(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize (T, H, W, 3) uint8 frames to (width, height), cover + centre-crop."""
    if frames.shape[2] == width and frames.shape[1] == height:
        return frames
    return np.stack([np.asarray(cover_resize(Image.fromarray(f), width, height)) for f in frames])


def to_uint8(frames) -> np.ndarray:
    """Pipeline output (float in [0, 1], (T, H, W, 3)) to uint8."""
    return (np.clip(np.asarray(frames, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

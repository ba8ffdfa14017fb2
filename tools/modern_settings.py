"""Typed call settings, Hub ids and licences for the modern families (a preset of today's strongest open
models): Qwen-Image (text-to-image), Qwen-Image-Edit (instruction editing), Wan 2.2 TI2V-5B
(text-conditioned image-to-video) and Wan VACE (video editing that keeps the source's motion, and
first/last-frame transitions).

The settings dataclasses live in `mora.config` with every other family's (re-exported here); the
presets `modern` and `tiny-modern` (mora/presets/*.toml) use them. Defaults are the models' published
recommendations (model cards and the diffusers examples); where a figure is our choice it says so.
Like `mora.config`, this module imports no torch.

Example:
    >>> ModelSpec("wan22", WAN22_TI2V_MODEL).settings.frame_multiple
    4
"""

from __future__ import annotations

from typing import Any

from mora.config import (  # noqa: F401 - re-exported: the modern families' settings
    FAMILY_SETTINGS,
    ModelSpec,
    QwenImageEditSettings,
    QwenImageSettings,
    Wan22Settings,
    WanVACESettings,
)

# --- the real models (Hub ids in diffusers format) and their licences --------------------------------

QWEN_IMAGE_MODEL = "Qwen/Qwen-Image-2512"  # Dec 2025 update of Qwen/Qwen-Image (same architecture, 20B MMDiT)
QWEN_IMAGE_EDIT_MODEL = "Qwen/Qwen-Image-Edit-2511"  # QwenImageEditPlusPipeline; Qwen/Qwen-Image-Edit-2509 also fits
WAN22_TI2V_MODEL = "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
WAN_VACE_MODEL = "Wan-AI/Wan2.1-VACE-14B-diffusers"  # Wan-AI/Wan2.1-VACE-1.3B-diffusers: 480p, consumer GPUs

LICENCES = {
    QWEN_IMAGE_MODEL: "Apache-2.0",
    QWEN_IMAGE_EDIT_MODEL: "Apache-2.0",
    WAN22_TI2V_MODEL: "Apache-2.0",
    WAN_VACE_MODEL: "Apache-2.0",
}

MODERN_FAMILY_SETTINGS: dict[str, type] = {
    family: FAMILY_SETTINGS[family] for family in ("qwen-image", "qwen-image-edit", "wan22", "wan-vace")
}
MODERN_FAMILIES = tuple(MODERN_FAMILY_SETTINGS)
MODERN_MODELS = {"qwen-image": QWEN_IMAGE_MODEL, "qwen-image-edit": QWEN_IMAGE_EDIT_MODEL,
                 "wan22": WAN22_TI2V_MODEL, "wan-vace": WAN_VACE_MODEL}


# Toy sizes for the tiny counterparts: seconds on a CPU, 2 steps, 64x64, 9 frames.
_TINY = {
    "qwen-image": dict(width=64, height=64),
    "qwen-image-edit": dict(max_area=64 * 64),
    "wan22": dict(width=64, height=64, num_frames=9, max_frames=17),
    "wan-vace": dict(width=64, height=64, num_frames=9, max_frames=9, flow_shift=3.0),
}


def tiny_settings(family: str) -> Any:
    """The family's settings at toy size (what the tiny preset uses)."""
    return MODERN_FAMILY_SETTINGS[family](steps=2, **_TINY[family])

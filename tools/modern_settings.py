"""Typed call settings, Hub ids and licences for the modern families (a preset of today's strongest open
models): Qwen-Image (text-to-image), Qwen-Image-Edit (instruction editing), Wan 2.2 TI2V-5B
(text-conditioned image-to-video) and Wan VACE (video editing that keeps the source's motion, and
first/last-frame transitions).

These live here until they are moved into `mora.config` (then `ModernSpec` gives way to `ModelSpec`,
whose `FAMILIES` check does not know these families yet). Defaults are the models' published
recommendations (model cards and the diffusers examples); where a figure is our choice it says so.
Like `mora.config`, this module imports no torch.

Example:
    >>> ModernSpec("wan22", WAN22_TI2V_MODEL).settings.frame_multiple
    4
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

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

WAN_NEGATIVE_PROMPT = (  # the English rendering of Wan's published default negative prompt
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still "
    "picture, messy background, three legs, many people in the background, walking backwards"
)


# --- typed call settings, one dataclass per family ---------------------------------------------------


@dataclass(frozen=True)
class QwenImageSettings:
    """Qwen-Image text-to-image (QwenImagePipeline, Qwen2.5-VL-7B text encoder, 20B MMDiT)."""

    width: int = 1664  # the model's 16:9 size (its card lists 1328x1328, 1664x928, 928x1664, 1472x1104, ...)
    height: int = 928
    steps: int = 50  # the card's example
    true_cfg_scale: float = 4.0  # real classifier-free guidance (the model is not guidance-distilled)
    empty_negative: str = " "  # the card: with no negative prompt, pass a single space so CFG stays on
    max_sequence_length: int = 1024  # the pipeline's maximum; embeddings are only as long as the prompt
    size_multiple: int = 16  # VAE 8 x 2x2 latent packing
    fp16_variant: str | None = None  # bf16 weights only


@dataclass(frozen=True)
class QwenImageEditSettings:
    """Qwen-Image-Edit (2509/2511: QwenImageEditPlusPipeline) instruction editing.

    The pipeline reads the input image twice: resized to about 384x384 for the Qwen2.5-VL vision tower
    and to about 1024x1024 for the VAE (fixed inside diffusers).
    """

    steps: int = 40  # the 2509/2511 cards' example (the first Qwen-Image-Edit used 50)
    true_cfg_scale: float = 4.0
    negative_prompt: str = " "  # a space: CFG on, nothing in particular steered away from
    max_area: int = 1024 * 1024  # output area in pixels, the input's aspect ratio kept
    size_multiple: int = 16
    max_sequence_length: int = 1024  # includes the image's vision tokens and the template's tail
    pipeline_class: str = "QwenImageEditPlusPipeline"  # "QwenImageEditPipeline" for Qwen/Qwen-Image-Edit
    fp16_variant: str | None = None


@dataclass(frozen=True)
class Wan22Settings:
    """Wan 2.2 TI2V-5B image-to-video with text (WanImageToVideoPipeline, `expand_timesteps`)."""

    width: int = 1280  # 720p class: the card's 1280x704 (or 704x1280)
    height: int = 704
    num_frames: int = 121  # 5 s at 24 fps; frames are 4k+1
    segments: int = 1  # clips chained on last frames
    steps: int = 50
    fps: int = 24  # output frame rate (Wan takes no fps conditioning)
    guidance_scale: float = 5.0
    flow_shift: float | None = None  # None: the repo's scheduler config; set to override UniPC's shift
    size_multiple: int = 32  # VAE 16 x patch 2
    frame_multiple: int = 4  # temporal compression 4
    max_frames: int = 121  # the length it was trained for
    fp16_variant: str | None = None


@dataclass(frozen=True)
class WanVACESettings:
    """Wan VACE (WanVACEPipeline): video-to-video keeping the source's motion, and first/last-frame transitions.

    edit_video feeds the source as a control video (the `control` annotator), keeps frame 0 as the edited
    first frame (mask black there), and also passes that frame as a reference image.
    """

    width: int = 1280  # 14B: 720p or 480p (832x480); the 1.3B model is 480p only
    height: int = 720
    num_frames: int = 81  # transition length, 4k+1
    steps: int = 50
    fps: int = 16
    guidance_scale: float = 5.0
    flow_shift: float | None = 5.0  # the diffusers example: 5.0 for 720p, 3.0 for 480p
    conditioning_scale: float = 1.0  # weight of the control branch in every VACE layer
    control: str = "gray"  # VACE's "gray" annotator (luminance): structure and motion, colours free
    pin_first_frame: bool = True  # frame 0 is the edited first frame itself (VACE's first-frame task)
    use_reference: bool = True  # also pass the edited first frame as a VACE reference image
    size_multiple: int = 16  # VAE 8 x patch 2
    frame_multiple: int = 4
    max_frames: int = 81  # frames per call; longer sources are edited in windows chained on last frames
    fp16_variant: str | None = None


MODERN_FAMILY_SETTINGS: dict[str, type] = {
    "qwen-image": QwenImageSettings,
    "qwen-image-edit": QwenImageEditSettings,
    "wan22": Wan22Settings,
    "wan-vace": WanVACESettings,
}
MODERN_FAMILIES = tuple(MODERN_FAMILY_SETTINGS)
MODERN_MODELS = {"qwen-image": QWEN_IMAGE_MODEL, "qwen-image-edit": QWEN_IMAGE_EDIT_MODEL,
                 "wan22": WAN22_TI2V_MODEL, "wan-vace": WAN_VACE_MODEL}


def modern_settings(family: str, values: dict | Any = None) -> Any:
    """The family's settings dataclass from a dict (unknown keys are an error, never ignored).

    Example:
        >>> modern_settings("wan-vace", {"steps": 30}).guidance_scale
        5.0
    """
    cls = MODERN_FAMILY_SETTINGS[family]
    if isinstance(values, cls):
        return values
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {family} setting(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


@dataclass(frozen=True)
class ModernSpec:
    """`mora.config.ModelSpec` for the modern families until they join `FAMILIES` (same fields).

    Args:
        family: one of `MODERN_FAMILIES`.
        model: a Hub id, a local directory (the tiny models are local directories).
        settings: the family's settings dataclass (a dict is converted; unknown keys raise).
    """

    family: str
    model: str
    settings: Any = None
    refiner: str | None = None

    def __post_init__(self) -> None:
        if self.family not in MODERN_FAMILY_SETTINGS:
            raise ValueError(f"unknown pipeline family {self.family!r}; expected one of {MODERN_FAMILIES}")
        object.__setattr__(self, "settings", modern_settings(self.family, self.settings))

    def model_ids(self) -> list[str]:
        return [self.model]


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

"""Presets: which model each agent role uses, and how it is called. Data, never a code path.

A preset maps each role (`text_to_image`, `image_to_image`, `image_to_video`, `extend`,
`connect`) to a `ModelSpec`: a pipeline family (one file each in `mora/tools/`), a model id or
local directory, and the call settings. Two presets that name the same family run the same code.

Model ids that start with `tiny/` are built in code at toy size with random weights (see
`mora.tools.tiny`), saved under `$MORA_HOME` and loaded back with `from_pretrained`.

This module imports no torch, so the CLI can validate options before any model loads.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mora.errors import InputError

ROLES = ("text_to_image", "image_to_image", "image_to_video", "extend", "connect")
FAMILIES = ("sdxl", "pix2pix", "svd", "ltx", "wan")
PROFILES = ("fast", "balanced", "low-vram")


def mora_home() -> Path:
    """The cache root: `$MORA_HOME`, default `~/.cache/mora`."""
    return Path(os.environ.get("MORA_HOME") or Path.home() / ".cache" / "mora").expanduser()


# --- typed call settings, one dataclass per pipeline family (the presets below fill them) ----------


@dataclass(frozen=True)
class SDXLSettings:
    """Stable Diffusion XL text-to-image (base, then the refiner on its latents)."""

    width: int = 1024  # first-frame width; the paper uses 1024x576, SVD's native size
    height: int = 576
    steps: int = 40  # denoising steps, shared by base and refiner
    guidance_scale: float = 5.0  # classifier-free guidance
    high_noise_frac: float = 0.8  # the base denoises this fraction, the refiner the rest (paper: 0.8)
    size_multiple: int = 8  # the VAE downsamples by 8
    fp16_variant: str | None = "fp16"  # weights variant fetched when running in fp16 (half the download)


@dataclass(frozen=True)
class Pix2PixSettings:
    """InstructPix2Pix image editing."""

    steps: int = 20
    guidance_scale: float = 7.5  # text guidance
    image_guidance_scale: float = 1.5  # how closely the edit keeps the input image
    max_area: int = 512 * 512  # working area in pixels: the image is resized to it, aspect kept
    size_multiple: int = 8
    fp16_variant: str | None = None  # the repo publishes no fp16 variant


@dataclass(frozen=True)
class SVDSettings:
    """Stable Video Diffusion image-to-video (no text), chained segments."""

    width: int = 1024
    height: int = 576
    num_frames: int = 25  # frames per segment (SVD-XT is trained on 25)
    segments: int = 3  # segments chained from each previous last frame (the paper: 3)
    steps: int = 25
    fps: int = 7  # the fps micro-conditioning and the output frame rate
    motion_bucket_id: int = 180  # amount of motion (the paper's 180; SVD's own default is 127)
    noise_aug_strength: float = 0.1  # noise added to the conditioning frame (the paper: 0.1)
    min_guidance_scale: float = 1.0  # guidance ramps linearly over the frames from min to max
    max_guidance_scale: float = 3.0
    decode_chunk_size: int = 8  # frames per VAE decode call; part of the output (temporal decoder)
    size_multiple: int = 8
    frame_multiple: int | None = None  # any frame count works
    max_frames: int = 64
    fp16_variant: str | None = "fp16"


@dataclass(frozen=True)
class LTXSettings:
    """LTX-Video 0.9.5 (LTXConditionPipeline): text + image/video conditions, first-last-frame."""

    width: int = 768
    height: int = 512
    num_frames: int = 49  # frames are 8k+1 (temporal compression 8)
    segments: int = 1
    steps: int = 40
    fps: int = 24
    guidance_scale: float = 3.0
    decode_timestep: float = 0.05  # the 0.9.5 VAE decodes at a small timestep
    image_cond_noise_scale: float = 0.025  # noise on the conditioning frames
    size_multiple: int = 32
    frame_multiple: int = 8
    tail_frames: int = 9  # extend: frames of the input's tail the continuation is conditioned on (8k+1)
    max_frames: int = 257
    fp16_variant: str | None = None


@dataclass(frozen=True)
class WanSettings:
    """Wan 2.1 first-last-frame-to-video (720p)."""

    width: int = 1280
    height: int = 720
    num_frames: int = 81  # frames are 4k+1
    segments: int = 1
    steps: int = 50
    fps: int = 16
    guidance_scale: float = 5.5
    size_multiple: int = 16  # VAE 8 x patch 2
    frame_multiple: int = 4
    max_frames: int = 129
    fp16_variant: str | None = None


FAMILY_SETTINGS: dict[str, type] = {
    "sdxl": SDXLSettings, "pix2pix": Pix2PixSettings, "svd": SVDSettings, "ltx": LTXSettings, "wan": WanSettings,
}


def family_settings(family: str, values: dict | Any = None) -> Any:
    """The family's settings dataclass from a dict (unknown keys are an error, never ignored).

    Example:
        >>> family_settings("svd", {"segments": 1}).motion_bucket_id
        180
    """
    cls = FAMILY_SETTINGS[family]
    if isinstance(values, cls):
        return values
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {family} setting(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


@dataclass(frozen=True)
class ModelSpec:
    """One role's model: the pipeline family, where its weights are, and how to call it.

    Args:
        family: pipeline family, one of `FAMILIES`; picks the file in `tools/` that runs it.
        model: a Hugging Face Hub id, a local directory, or `tiny/<name>` (built in code).
        settings: the family's settings dataclass (a dict is converted; unknown keys raise).
        refiner: SDXL only: the refiner's id or path (None: base only).
    """

    family: str
    model: str
    settings: Any = None
    refiner: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown pipeline family {self.family!r}; expected one of {FAMILIES}")
        object.__setattr__(self, "settings", family_settings(self.family, self.settings))

    def model_ids(self) -> list[str]:
        return [self.model] + ([self.refiner] if self.refiner else [])


@dataclass(frozen=True)
class Preset:
    """A named table of role -> `ModelSpec`.

    Example:
        >>> get_preset("tiny").roles["image_to_video"].family
        'svd'
    """

    name: str
    description: str
    roles: MappingProxyType

    def __post_init__(self) -> None:
        missing = [r for r in ROLES if r not in self.roles]
        if missing:
            raise ValueError(f"preset {self.name!r} lacks roles {missing}")
        if not isinstance(self.roles, MappingProxyType):
            object.__setattr__(self, "roles", MappingProxyType(dict(self.roles)))

    def spec(self, role: str) -> ModelSpec:
        return self.roles[role]

    def models(self) -> dict[str, str]:
        """role -> model id (the refiner listed as `text_to_image_refiner`), for manifests."""
        out = {role: spec.model for role, spec in self.roles.items()}
        if self.roles["text_to_image"].refiner:
            out["text_to_image_refiner"] = self.roles["text_to_image"].refiner
        return out

    @property
    def is_tiny(self) -> bool:
        return all(m.startswith("tiny/") for s in self.roles.values() for m in s.model_ids())


# --- the paper's settings (Mora, arXiv 2403.13248, and its released code) -----------------------

_SDXL = SDXLSettings()
_PIX2PIX = Pix2PixSettings()
_SVD = SVDSettings()
_LTX = LTXSettings()
LTX_MODEL = "Lightricks/LTX-Video-0.9.5"
_WAN = WanSettings()
WAN_FLF2V_MODEL = "Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers"

# Toy sizes: seconds on a CPU. The tiny LTX VAE compresses time by 4, so its frames are 4k+1.
def _tiny(settings: Any, **changes: Any) -> Any:
    size = dict(width=96, height=64) if hasattr(settings, "width") else {}
    return dataclasses.replace(settings, **{**size, "steps": 2, "fp16_variant": None, **changes})


def _preset(name: str, description: str, **roles: ModelSpec) -> Preset:
    return Preset(name=name, description=description, roles=MappingProxyType(roles))


_SVD_MODEL = "stabilityai/stable-video-diffusion-img2vid-xt"
_SVD_SPEC = ModelSpec("svd", _SVD_MODEL, _SVD)
_LTX_SPEC = ModelSpec("ltx", LTX_MODEL, _LTX)
# The paper's roles; the other real presets swap some of them.
_MORA_ROLES = dict(
    text_to_image=ModelSpec("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", _SDXL,
                            refiner="stabilityai/stable-diffusion-xl-refiner-1.0"),
    image_to_image=ModelSpec("pix2pix", "timbrooks/instruct-pix2pix", _PIX2PIX),
    image_to_video=_SVD_SPEC,
    extend=_SVD_SPEC,
    connect=_LTX_SPEC,
)
_TINY_LTX = ModelSpec("ltx", "tiny/ltx", _tiny(_LTX, num_frames=9, frame_multiple=4, tail_frames=5))
# The same families at toy size: 2 steps, 96x64, a few frames.
_TINY_ROLES = dict(
    text_to_image=ModelSpec("sdxl", "tiny/sdxl-base", _tiny(_SDXL), refiner="tiny/sdxl-refiner"),
    image_to_image=ModelSpec("pix2pix", "tiny/pix2pix", _tiny(_PIX2PIX, max_area=96 * 64)),
    image_to_video=ModelSpec("svd", "tiny/svd", _tiny(_SVD, num_frames=4, segments=2, decode_chunk_size=4)),
    extend=ModelSpec("svd", "tiny/svd", _tiny(_SVD, num_frames=4, segments=1, decode_chunk_size=4)),
    connect=_TINY_LTX,
)

PRESETS: MappingProxyType = MappingProxyType(
    {
        "mora": _preset(
            "mora",
            "The paper's models: SDXL base+refiner, InstructPix2Pix, SVD-XT (3 chained segments), "
            "LTX-Video for connecting videos (SEINE, the paper's choice, is not in diffusers).",
            **_MORA_ROLES,
        ),
        "ltx": _preset(
            "ltx",
            "LTX-Video for text-conditioned image-to-video, extension conditioned on the video's tail, "
            "and connection; SDXL and InstructPix2Pix for images.",
            **{**_MORA_ROLES, "image_to_video": _LTX_SPEC, "extend": _LTX_SPEC},
        ),
        "mora-wan": _preset(
            "mora-wan",
            "Preset `mora` with Wan 2.1 FLF2V (14B, 720p) in place of LTX-Video for connecting videos.",
            **{**_MORA_ROLES, "connect": ModelSpec("wan", WAN_FLF2V_MODEL, _WAN)},
        ),
        "tiny": _preset(
            "tiny",
            "Every family of preset `mora` at toy size with random weights: seconds on a CPU, output "
            "is noise. For tests, CI and offline smoke runs.",
            **_TINY_ROLES,
        ),
        "tiny-ltx": _preset(
            "tiny-ltx",
            "Preset `ltx` at toy size with random weights (LTX for image-to-video, extend and connect; SDXL "
            "base without refiner, to cover that path too). Output is noise.",
            **{**_TINY_ROLES, "text_to_image": ModelSpec("sdxl", "tiny/sdxl-base", _tiny(_SDXL)),
               "image_to_video": _TINY_LTX, "extend": _TINY_LTX},
        ),
        "tiny-wan": _preset(
            "tiny-wan",
            "Preset `mora-wan` at toy size with random weights (Wan FLF2V connects videos). Output is noise.",
            **{**_TINY_ROLES, "connect": ModelSpec("wan", "tiny/wan", _tiny(_WAN, num_frames=9))},
        ),
    }
)
DEFAULT_PRESET = "mora"


def get_preset(preset: str | Preset) -> Preset:
    """Look up a preset by name (a `Preset` passes through).

    Raises:
        InputError: the name is not a known preset.
    """
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except (KeyError, TypeError):
        raise InputError(
            f"--preset: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
        ) from None


def with_settings(spec: ModelSpec, **changes: Any) -> ModelSpec:
    """A copy of `spec` with some call settings replaced (None values are ignored).

    Example:
        >>> with_settings(get_preset("mora").spec("image_to_video"), fps=12).settings.fps
        12
    """
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, **changes))

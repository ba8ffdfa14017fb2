"""Typed call settings per pipeline family, the roles, and a preset's shape (`ModelSpec`, `Preset`).

No torch here: the command line validates options before any model loads.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mora.errors import InputError

ROLES = ("text_to_image", "image_to_image", "image_to_video", "extend", "connect")
FAMILIES = ("sdxl", "pix2pix", "svd", "ltx", "wan", "qwen-image", "qwen-image-edit", "wan22", "wan-vace")
OPTIONAL_ROLES = ("edit_video",)  # video-to-video editing: only presets with the `video-edit` capability
# role -> the families that can play it: those whose module in tools/ has the role's function (text_to_image,
# edit_image, generate, continue_video, transition, edit_video). Declared here, without importing those modules
# (they need diffusers), so a preset is checked when it loads; `mora.tools.toolset` dispatches on this table.
ROLE_FAMILIES: MappingProxyType[str, tuple[str, ...]] = MappingProxyType({
    "text_to_image": ("sdxl", "qwen-image"),
    "image_to_image": ("pix2pix", "qwen-image-edit"),
    "image_to_video": ("svd", "ltx", "wan22"),
    "extend": ("svd", "ltx", "wan22"),  # continues a video from its last frame(s)
    "connect": ("ltx", "wan", "wan-vace"),  # first-last-frame models
    "edit_video": ("wan-vace",),  # video-to-video: the source as control, a reference frame
})
# capability -> (the role whose family provides it, the families that can). A preset declares the ones it
# wants; the task table picks routes from them (mora.workflows.tasks).
CAPABILITIES = {
    "text-motion": ("image_to_video", ("ltx", "wan22")),  # the video model follows the prompt
    "video-edit": ("edit_video", ("wan-vace",)),  # edits a whole clip keeping the source's motion
}
# Execution profiles, the one list (`mora.tools.profiles` applies them, `--profile` offers them). `paper` is the
# original Mora code's runtime choices: the benchmarks' baseline, offered so their numbers can be rerun.
PROFILES = ("balanced", "fast", "low-vram", "auto", "paper")
# Step caches (`--cache`) and attention backends (`--attention`), the one lists: `mora.tools.speed` applies them
# (diffusers' cache hooks and attention backends), the job model offers them.
CACHES = ("none", "first-block", "mag", "taylor")
ATTENTION_BACKENDS = ("auto", "sdpa", "flash", "sage")


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
    max_frames: int = 25  # frames per call at most: SVD-XT's trained length (its unet.config.num_frames)
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
    # Decode and conditioning noise as Lightricks publish them for 0.9.5: configs/ltxv-2b-0.9.5.yaml in
    # github.com/Lightricks/LTX-Video (commit 93af686) sets decode_timestep 0.05 and decode_noise_scale 0.025
    # (with guidance 3 and 40 steps, as here); it leaves image_cond_noise_scale to inference.py's default,
    # 0.15, which is also diffusers' LTXConditionPipeline default. Without decode_noise_scale the pipeline
    # would use decode_timestep's 0.05. (The config's spatiotemporal guidance, STG, is not in diffusers.)
    decode_timestep: float = 0.05
    decode_noise_scale: float = 0.025
    image_cond_noise_scale: float = 0.15  # noise on the conditioning frames
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
    # The Lightning LoRAs' sampler (github.com/ModelTC/Qwen-Image-Lightning, generate_with_diffusers.py): Euler
    # flow matching with the shift fixed at this value, as distilled ("We use shift=3": base_shift = max_shift =
    # log(3), no shift_terminal). None: the repo's own scheduler (a resolution-dependent shift).
    lightning_shift: float | None = None
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
    lightning_shift: float | None = None  # as QwenImageSettings.lightning_shift
    fp16_variant: str | None = None


def dmd_sigmas_problem(sigmas: tuple[float, ...]) -> str | None:
    """What is wrong with fixed DMD noise levels (`Wan22Settings.dmd_sigmas`), or None: they must be
    strictly decreasing, in (0, 1] (the terminal 0 is implied).

    Example:
        >>> dmd_sigmas_problem((1.0, 0.757, 0.522)), dmd_sigmas_problem((0.5, 1.0))
        (None, 'are not strictly decreasing noise levels in (0, 1]')
    """
    if not sigmas or any(not 0 < s <= 1 for s in sigmas) or any(a <= b for a, b in itertools.pairwise(sigmas)):
        return "are not strictly decreasing noise levels in (0, 1]"
    return None


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
    # DMD-distilled weights (FastWan): these noise levels, one step each, re-noised between steps
    # (mora.tools.schedulers.DMDScheduler); steps must equal their count. None: the repo's scheduler.
    dmd_sigmas: tuple[float, ...] | None = None
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


FAMILY_SETTINGS: dict[str, type] = {
    "sdxl": SDXLSettings, "pix2pix": Pix2PixSettings, "svd": SVDSettings, "ltx": LTXSettings, "wan": WanSettings,
    "qwen-image": QwenImageSettings, "qwen-image-edit": QwenImageEditSettings, "wan22": Wan22Settings,
    "wan-vace": WanVACESettings,
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
class LoraAdapter:
    """A LoRA adapter a preset loads into one role's pipeline (diffusers `load_lora_weights`).

    Either a local `path`, or a Hub `repo` and the `file` in it (as publishers name their few-step LoRAs:
    several files per repo); `tiny/<name>` repos are toy LoRAs built in code (`mora.tools.tiny_modern`).

    Args:
        path: a `.safetensors` file or a folder holding one (checked to exist when the preset is read).
        weight: the adapter's scale (1.0: as trained).
        repo: a Hugging Face Hub repo id (or `tiny/<name>`), in place of `path`.
        file: the weight file in `repo`, e.g. "Qwen-Image-2512-Lightning-4steps-V1.0-fp32.safetensors".

    Example:
        >>> LoraAdapter(repo="lightx2v/Qwen-Image-2512-Lightning", file="x.safetensors").source
        'lightx2v/Qwen-Image-2512-Lightning/x.safetensors'
    """

    path: str = ""
    weight: float = 1.0
    repo: str | None = None
    file: str | None = None

    def __post_init__(self) -> None:
        if bool(self.path) == bool(self.repo) or bool(self.repo) != bool(self.file):
            raise ValueError("a LoRA adapter is a path, or a repo and a file in it")

    @property
    def source(self) -> str:
        """Where the weights come from, as one string (logs, the pipeline cache key)."""
        return f"{self.repo}/{self.file}" if self.repo else self.path


@dataclass(frozen=True)
class ModelSpec:
    """One role's model: the pipeline family, where its weights are, and how to call it.

    Args:
        family: pipeline family, one of `FAMILIES`; picks the file in `tools/` that runs it.
        model: a Hugging Face Hub id, a local directory, or `tiny/<name>` (built in code).
        settings: the family's settings dataclass (a dict is converted; unknown keys raise).
        refiner: SDXL only: the refiner's id or path (None: base only).
        adapters: LoRA adapters loaded into the pipeline (a preset file's `adapters`).
    """

    family: str
    model: str
    settings: Any = None
    refiner: str | None = None
    adapters: tuple[LoraAdapter, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown pipeline family {self.family!r}; expected one of {FAMILIES}")
        object.__setattr__(self, "settings", family_settings(self.family, self.settings))
        object.__setattr__(self, "adapters", tuple(self.adapters))

    def model_ids(self) -> list[str]:
        return [self.model] + ([self.refiner] if self.refiner else [])

    def lora_files(self) -> dict[str, str]:
        """Hub repo -> the file its LoRA adapter loads (checked for availability like the models)."""
        return {a.repo: a.file for a in self.adapters if a.repo and a.file}


@dataclass(frozen=True)
class Preset:
    """A named table of role -> `ModelSpec`, and the optional capabilities its families give the routes.

    Args:
        name: what `--preset` takes.
        description: one line for `mora presets`.
        roles: every role of `ROLES`, plus optional roles (`edit_video`).
        capabilities: names from `CAPABILITIES` (`text-motion`, `video-edit`): the task table picks
            routes from them; each needs its role's family to have it.
        source: the TOML file the preset was read from (None: built in code).

    Example:
        >>> get_preset("tiny").roles["image_to_video"].family
        'svd'
    """

    name: str
    description: str
    roles: MappingProxyType
    capabilities: frozenset = frozenset()
    source: str | None = None

    def __post_init__(self) -> None:
        missing = [r for r in ROLES if r not in self.roles]
        if missing:
            raise ValueError(f"preset {self.name!r} lacks roles {missing}")
        unknown = [r for r in self.roles if r not in ROLES + OPTIONAL_ROLES]
        if unknown:
            raise ValueError(f"preset {self.name!r} has unknown roles {unknown}; roles are {ROLES + OPTIONAL_ROLES}")
        if not isinstance(self.roles, MappingProxyType):
            object.__setattr__(self, "roles", MappingProxyType(dict(self.roles)))
        object.__setattr__(self, "capabilities", frozenset(self.capabilities))
        for role, spec in self.roles.items():
            if spec.family not in ROLE_FAMILIES[role]:
                raise InputError(f"preset {self.name!r}: roles.{role}.family: {spec.family!r} cannot play {role}; "
                                 f"use one of {', '.join(ROLE_FAMILIES[role])}")
        for capability in self.capabilities:
            role, families = CAPABILITIES[capability]
            if role not in self.roles or self.roles[role].family not in families:
                raise ValueError(f"preset {self.name!r}: capability {capability!r} needs role {role} in one of "
                                 f"{families}")

    def spec(self, role: str) -> ModelSpec:
        if role not in self.roles:
            raise InputError(f"{self.name!r} has no {role} model; use a preset with the capability that "
                             f"needs it (e.g. modern or tiny-modern)", param="preset")
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



"""One loader for every Wan pipeline (Wan 2.1 first-last-frame, Wan 2.2 TI2V, Wan VACE).

The Wan model cards and diffusers' examples run the VAE (and Wan 2.1's CLIP image encoder) in
float32 while the transformer runs in bf16 on a GPU, and set UniPC's flow shift per resolution.
Those choices are made here once, with the negative prompt every Wan call passes
(`WAN_NEGATIVE_PROMPT`); each family's file keeps its own pipeline call.

Example:
    >>> pipe = load_wan(spec, rt, "wan22", "WanImageToVideoPipeline")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from mora.config import ModelSpec
from mora.tools.runtime import Runtime
from mora.tools.weights import from_pretrained

GPU_DTYPE = "bfloat16"
# every Wan family's negative prompt (Wan 2.1 FLF2V, Wan 2.2 TI2V, VACE): the English rendering of Wan's
# published default
WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still "
    "picture, messy background, three legs, many people in the background, walking backwards"
)
# parts that stay in float32 under a bf16 transformer: subfolder -> (library, class)
FLOAT32_PARTS = {
    "vae": ("diffusers", "AutoencoderKLWan"),
    "image_encoder": ("transformers", "CLIPVisionModel"),
}


def load_wan(spec: ModelSpec, rt: Runtime, family: str, pipeline: str, *, float32_parts: tuple[str, ...] = ("vae",),
             check: Callable[[Any], None] | None = None, config: dict[str, Any] | None = None) -> Any:
    """The cached Wan pipeline of `spec` on the runtime's device: float32 parts, scheduler, checks.

    Args:
        spec: the family's model spec; a `flow_shift` setting that is not None replaces the repo's
            UniPC shift; a `dmd_sigmas` setting that is not None replaces the scheduler with
            `mora.tools.schedulers.DMDScheduler` at those sigmas. Both are part of the cache key,
            being part of what is loaded.
        rt: the job's runtime (device, dtype, pipeline cache).
        family: the cache's family name (`wan`, `wan22`, `wan-vace`).
        pipeline: the diffusers pipeline class's name, e.g. "WanVACEPipeline".
        float32_parts: subfolders (from `FLOAT32_PARTS`) loaded in float32 when the transformer is not.
        check: called with the loaded pipeline before it is cached; raises if it is the wrong model.
        config: pipeline config values given to `from_pretrained` over the repo's (`expand_timesteps`).

    Returns:
        The pipeline, placed for the runtime's profile.

    Example:
        >>> pipe = load_wan(spec, rt, "wan", "WanImageToVideoPipeline",
        ...                 float32_parts=("vae", "image_encoder"))  # doctest: +SKIP
    """
    import diffusers
    import torch

    shift = getattr(spec.settings, "flow_shift", None)
    sigmas = getattr(spec.settings, "dmd_sigmas", None)

    def build(dtype):
        extra = {}
        if dtype != torch.float32:  # the model cards' advice: these parts in float32 under bf16
            for part in float32_parts:
                library, name = FLOAT32_PARTS[part]
                cls = getattr(importlib.import_module(library), name)
                extra[part] = from_pretrained(cls, spec.model, subfolder=part, dtype=torch.float32)
        pipe = from_pretrained(getattr(diffusers, pipeline), spec.model, dtype=dtype, **extra, **(config or {}))
        if check is not None:
            check(pipe)
        if sigmas is not None:
            from mora.tools.schedulers import DMDScheduler

            pipe.scheduler = DMDScheduler.with_sigmas(sigmas)
        elif shift is not None:
            pipe.scheduler = diffusers.UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=shift)
        return pipe

    key = spec.model + (f"#flow_shift={shift}" if shift is not None else "") + (
        f"#dmd_sigmas={','.join(map(str, sigmas))}" if sigmas is not None else "")
    return rt.pipeline(family, key, build, GPU_DTYPE)

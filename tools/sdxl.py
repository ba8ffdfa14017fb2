"""Text-to-image with Stable Diffusion XL: base, then (optionally) the refiner on its latents.

As in the paper's code, the refiner shares the base's second text encoder and VAE, and the base
hands its latents over at `high_noise_frac` (denoising_end / denoising_start = 0.8).
"""

from __future__ import annotations

import logging

from PIL import Image

from mora.config import ModelSpec
from mora.tools import clip_text
from mora.tools.runtime import Runtime, generator, variant
from mora.tools.weights import from_pretrained

logger = logging.getLogger(__name__)

GPU_DTYPE = "float16"
AGENT = "text_to_image_agent"  # the agent whose trained adapter (LoRA + modulation) applies to the base  # SDXL's VAE upcasts itself where fp16 would overflow (force_upcast)


def load(spec: ModelSpec, rt: Runtime):
    """(base, refiner or None), cached per process."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base = rt.pipeline(
        "sdxl", spec.model,
        lambda dtype: from_pretrained(StableDiffusionXLPipeline, spec.model, dtype=dtype,
                                      variant=variant(spec, dtype)),
        GPU_DTYPE, agent=AGENT,
    )
    if not spec.refiner:
        return base, None

    def load_refiner(dtype):
        return from_pretrained(
            StableDiffusionXLImg2ImgPipeline, spec.refiner, dtype=dtype,
            text_encoder_2=base.text_encoder_2, vae=base.vae, variant=variant(spec, dtype),
        )

    return base, rt.pipeline("sdxl-refiner", f"{spec.refiner}+{spec.model}", load_refiner, GPU_DTYPE)


def text_to_image(
    spec: ModelSpec, rt: Runtime, *, prompt: str, negative_prompt: str, width: int, height: int, steps: int,
    seed: int,
) -> tuple[Image.Image, dict]:
    """(the first frame, how the prompt was encoded: tokens, windows, truncation)."""
    base, refiner = load(spec, rt)
    embeds, tokens = clip_text.sdxl_embeds(base, prompt, negative_prompt)
    if rt.modulated(AGENT):  # z_2 on the token axis of both guidance branches, as in training
        for key in ("prompt_embeds", "negative_prompt_embeds"):
            embeds[key] = rt.adapter.append(AGENT, embeds[key])
    common = dict(num_inference_steps=steps, guidance_scale=spec.settings.guidance_scale, generator=generator(seed))
    if refiner is None:
        return base(width=width, height=height, **embeds, **common, **rt.step_end(base)).images[0], tokens.as_dict()
    split = spec.settings.high_noise_frac
    latents = base(width=width, height=height, denoising_end=split, output_type="latent", **embeds, **common,
                   **rt.step_end(base)).images
    refiner_embeds, _ = clip_text.sdxl_embeds(refiner, prompt, negative_prompt)
    return (refiner(image=latents, denoising_start=split, **refiner_embeds, **common, **rt.step_end(refiner)).images[0],
            tokens.as_dict())

"""Image editing by instruction with InstructPix2Pix."""

from __future__ import annotations

import logging

from PIL import Image

from mora.config import ModelSpec
from mora.tools import clip_text
from mora.tools.runtime import Runtime, generator
from mora.tools.sizing import fit_size
from mora.tools.weights import from_pretrained

logger = logging.getLogger(__name__)

GPU_DTYPE = "float16"
AGENT = "image_to_image_agent"  # the agent whose trained adapter applies here


def load(spec: ModelSpec, rt: Runtime):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    # The agents' inputs are the user's own images; the NSFW checker would black out frames of a
    # video mid-route, so it is not loaded (as for SDXL and SVD, which have none).
    return rt.pipeline(
        "pix2pix", spec.model,
        lambda dtype: from_pretrained(
            StableDiffusionInstructPix2PixPipeline, spec.model, dtype=dtype, safety_checker=None,
            requires_safety_checker=False,
        ),
        GPU_DTYPE, agent=AGENT,
    )


def model_size(spec: ModelSpec, width: int, height: int) -> tuple[int, int]:
    """The image's aspect ratio at the model's working area, in the model's size multiple."""
    return fit_size(width, height, spec.settings.max_area, spec.settings.size_multiple)


def edit_image(spec: ModelSpec, rt: Runtime, *, image: Image.Image, instruction: str, steps: int,
               seed: int) -> tuple[Image.Image, dict]:
    """(the edited image, how the instruction was encoded: tokens, windows, truncation)."""
    w, h = model_size(spec, *image.size)
    if (w, h) != image.size:
        logger.info("edit_image: resizing %dx%d to %dx%d for the model", *image.size, w, h)
        image = image.resize((w, h), Image.Resampling.LANCZOS)
    pipe = load(spec, rt)
    embeds, tokens = clip_text.single_encoder_embeds(pipe, instruction)
    if rt.modulated(AGENT):  # z_3 on both text branches, as in training
        embeds = {key: rt.adapter.append(AGENT, value) for key, value in embeds.items()}
    edited = pipe(
        image=image, num_inference_steps=steps, guidance_scale=spec.settings.guidance_scale,
        image_guidance_scale=spec.settings.image_guidance_scale, generator=generator(seed), **embeds,
        **rt.step_end(pipe),
    ).images[0]
    return edited, tokens.as_dict()

"""Image editing by instruction with InstructPix2Pix."""

from __future__ import annotations

import logging

from PIL import Image

from mora.config import ModelSpec
from mora.tools.runtime import Runtime, from_pretrained, generator
from mora.tools.sizing import fit_size

logger = logging.getLogger(__name__)

GPU_DTYPE = "float16"


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
        GPU_DTYPE,
    )


def model_size(spec: ModelSpec, width: int, height: int) -> tuple[int, int]:
    """The image's aspect ratio at the model's working area, in the model's size multiple."""
    return fit_size(width, height, spec.get("max_area", 512 * 512), spec.get("size_multiple", 8))


def edit_image(spec: ModelSpec, rt: Runtime, *, image: Image.Image, instruction: str, steps: int, seed: int) -> Image.Image:
    w, h = model_size(spec, *image.size)
    if (w, h) != image.size:
        logger.info("edit_image: resizing %dx%d to %dx%d for the model", *image.size, w, h)
        image = image.resize((w, h), Image.Resampling.LANCZOS)
    pipe = load(spec, rt)
    return pipe(
        prompt=instruction, image=image, num_inference_steps=steps, guidance_scale=spec.get("guidance_scale", 7.5),
        image_guidance_scale=spec.get("image_guidance_scale", 1.5), generator=generator(seed),
    ).images[0]

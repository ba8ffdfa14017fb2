"""Image-to-video with Stable Video Diffusion, chained segments, and extension from a last frame.

SVD takes no text. Each further segment starts from the previous segment's last frame, whose
regenerated copy is dropped so no frame is duplicated at a join (as in the paper's code).
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from mora.config import ModelSpec
from mora.tools.profiles import decode_chunk
from mora.tools.runtime import Runtime, from_pretrained, generator, variant
from mora.tools.sizing import cover_resize, to_uint8

logger = logging.getLogger(__name__)

GPU_DTYPE = "float16"


def load(spec: ModelSpec, rt: Runtime):
    from diffusers import StableVideoDiffusionPipeline

    return rt.pipeline(
        "svd", spec.model,
        lambda dtype: from_pretrained(StableVideoDiffusionPipeline, spec.model, dtype=dtype,
                                      variant=variant(spec, dtype)),
        GPU_DTYPE,
    )


def generate(
    spec: ModelSpec, rt: Runtime, *, image: Image.Image, prompt: str | None, width: int, height: int, num_frames: int,
    segments: int, steps: int, fps: int, seed: int,
) -> np.ndarray:
    """`segments` chained clips of `num_frames` from `image`: (T, H, W, 3) uint8, T = n + (s-1)(n-1)."""
    if prompt:
        logger.info("SVD takes no text: the prompt is unused by image_to_video (it shaped the first frame)")
    pipe = load(spec, rt)
    gen = generator(seed)
    chunk = decode_chunk(rt.profile, rt.device, spec.get("decode_chunk_size", 8), num_frames, width, height)
    frames: list[np.ndarray] = []
    current = cover_resize(image, width, height)
    for index in range(segments):
        out = pipe(
            current, width=width, height=height, num_frames=num_frames, num_inference_steps=steps, fps=fps,
            motion_bucket_id=spec.get("motion_bucket_id", 127), noise_aug_strength=spec.get("noise_aug_strength", 0.02),
            min_guidance_scale=spec.get("min_guidance_scale", 1.0), max_guidance_scale=spec.get("max_guidance_scale", 3.0),
            decode_chunk_size=chunk, generator=gen, output_type="np",
        ).frames[0]
        clip = to_uint8(out)
        frames.extend(clip if index == 0 else clip[1:])
        current = Image.fromarray(clip[-1])
        logger.debug("svd segment %d/%d: %d frames", index + 1, segments, len(clip))
    return np.stack(frames)


def continue_video(
    spec: ModelSpec, rt: Runtime, *, frames: np.ndarray, prompt: str | None, width: int, height: int,
    num_frames: int, steps: int, fps: int, seed: int,
) -> np.ndarray:
    """New frames following `frames`, generated from its last frame (that frame is not repeated)."""
    clip = generate(
        spec, rt, image=Image.fromarray(frames[-1]), prompt=prompt, width=width, height=height,
        num_frames=num_frames + 1, segments=1, steps=steps, fps=fps, seed=seed,
    )
    return clip[1:]

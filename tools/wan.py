"""Wan 2.1 first-last-frame-to-video (WanImageToVideoPipeline with `last_image`): a second backend
for connecting two videos, beside LTX-Video.

As the model's published example does, the VAE and the CLIP image encoder run in float32 while the
transformer runs in bf16 on a GPU.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from mora.config import ModelSpec
from mora.tools.runtime import Runtime, generator
from mora.tools.sizing import cover_resize, to_uint8
from mora.tools.wan_loader import WAN_NEGATIVE_PROMPT, load_wan

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "a smooth, natural transition between the two scenes, consistent lighting and camera"


def load(spec: ModelSpec, rt: Runtime):
    """Wan 2.1 FLF2V: the VAE and the CLIP image encoder in float32 (the model card's advice)."""
    return load_wan(spec, rt, "wan", "WanImageToVideoPipeline", float32_parts=("vae", "image_encoder"))


def transition(
    spec: ModelSpec, rt: Runtime, *, first: Image.Image, last: Image.Image, prompt: str | None, width: int,
    height: int, num_frames: int, steps: int, fps: int, seed: int,
) -> np.ndarray:
    """A clip from `first` (frame 0) to `last` (final frame); returns only the frames in between."""
    pipe = load(spec, rt)
    out = pipe(
        image=cover_resize(first, width, height), last_image=cover_resize(last, width, height),
        prompt=prompt or DEFAULT_PROMPT, negative_prompt=WAN_NEGATIVE_PROMPT, height=height, width=width,
        num_frames=num_frames, num_inference_steps=steps, guidance_scale=spec.settings.guidance_scale,
        generator=generator(seed), output_type="np", **rt.step_end(pipe),
    ).frames[0]
    return to_uint8(out)[1:-1]

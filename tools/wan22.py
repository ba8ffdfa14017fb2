"""Text-conditioned image-to-video with Wan 2.2 TI2V-5B (WanImageToVideoPipeline, `expand_timesteps`).

Wan 2.2's 5B model is one network for text-to-video and text+image-to-video. Its VAE compresses
16x16 in space (8x plus a 2x2 patchify) and 4x in time into 48 channels, so 720p at 24 fps runs on
one consumer GPU (the model card: an RTX 4090, with offloading, a 5 s clip in under 9 minutes). For image-to-video diffusers 0.42 runs it through `WanImageToVideoPipeline` with
`expand_timesteps=True`: the encoded image *replaces* the first latent frame and that frame's
timestep is held at 0, so frame 0 stays the given image while the prompt drives the motion (no CLIP
image encoder, unlike Wan 2.1 I2V). The published model card and the diffusers example run the VAE
in float32 and the transformer in bf16, as here.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from mora.config import ModelSpec
from mora.tools.runtime import Runtime, generator
from mora.tools.segments import chain_segments
from mora.tools.sizing import cover_resize, to_uint8
from mora.tools.wan_loader import WAN_NEGATIVE_PROMPT, load_wan

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "natural, smooth motion that continues the scene, steady camera, consistent lighting"


TI2V_LATENT_CHANNELS = 48  # the Wan 2.2 VAE's z_dim; Wan 2.1's (and Wan 2.2 A14B's) is 16


def load(spec: ModelSpec, rt: Runtime):
    """Wan 2.2 TI2V: the VAE in float32, `expand_timesteps` on whatever the repo's pipeline config says
    (FastWan's model_index names FastVideo's own pipeline class, whose config has no such entry);
    refuses a repo that is not a TI2V model, by its weights: the 48-channel Wan 2.2 VAE, and a transformer
    that reads those latents alone (an I2V transformer also reads the image's, concatenated)."""

    def check(pipe) -> None:
        vae, transformer = getattr(pipe.vae, "config", None), getattr(pipe, "transformer", None)
        if vae is None or transformer is None:  # a stand-in with no weights (benchmarks/fullsize.py's records)
            return
        z_dim, reads = vae.z_dim, transformer.config.in_channels
        if z_dim != TI2V_LATENT_CHANNELS or reads != z_dim:
            raise ValueError(f"wan22: {spec.model} is not a Wan 2.2 TI2V model (VAE z_dim {z_dim}, transformer "
                             f"in_channels {reads}; TI2V has {TI2V_LATENT_CHANNELS} and "
                             f"{TI2V_LATENT_CHANNELS}); use family 'wan' for Wan 2.1 image-to-video")

    return load_wan(spec, rt, "wan22", "WanImageToVideoPipeline", check=check, config={"expand_timesteps": True})


def _check(spec: ModelSpec, width: int, height: int, num_frames: int) -> None:
    s = spec.settings
    if width % s.size_multiple or height % s.size_multiple:
        raise ValueError(f"wan22: width and height must be multiples of {s.size_multiple}, got {width}x{height}")
    if num_frames % s.frame_multiple != 1:
        raise ValueError(f"wan22: num_frames must be {s.frame_multiple}k+1, got {num_frames}")


def _clip(spec: ModelSpec, rt: Runtime, image: Image.Image, *, prompt, width, height, num_frames, steps,
          seed) -> np.ndarray:
    from mora.tools.schedulers import bind

    pipe = load(spec, rt)
    noise = generator(seed)
    bind(pipe, steps=steps, generator=noise)  # a DMD scheduler re-noises from this call's generator
    out = pipe(
        image=cover_resize(image.convert("RGB"), width, height), prompt=prompt or DEFAULT_PROMPT,
        negative_prompt=WAN_NEGATIVE_PROMPT, height=height, width=width, num_frames=num_frames,
        num_inference_steps=steps, guidance_scale=spec.settings.guidance_scale, generator=noise,
        output_type="np", **rt.step_end(pipe),
    ).frames[0]
    return to_uint8(out)


def generate(
    spec: ModelSpec, rt: Runtime, *, image: Image.Image, prompt: str | None, width: int, height: int, num_frames: int,
    segments: int, steps: int, fps: int, seed: int,
) -> np.ndarray:
    """`segments` clips of `num_frames`, each from the previous clip's last frame: (T, H, W, 3) uint8.

    Frame 0 is `image` (cover-resized to width x height) as the model conditions on it; the prompt
    drives the motion. T = n + (s-1)(n-1): each join's repeated frame is dropped.

    Args:
        spec: family `wan22`; settings `Wan22Settings`.
        image: the first frame.
        prompt: the motion and scene (a default motion prompt when empty).
        width, height: multiples of 32.
        num_frames: frames per segment, 4k+1.
        segments: clips chained on last frames.
        steps: denoising steps.
        fps: the output's frame rate (Wan takes no fps conditioning; recorded by the caller).
        seed: the first segment's seed; segment i uses seed + i (`mora.tools.segments`).

    Example:
        >>> frames = generate(spec, Runtime(), image=first, prompt="waves roll in", width=1280, height=704,
        ...                   num_frames=121, segments=1, steps=50, fps=24, seed=0)
    """
    _check(spec, width, height, num_frames)

    def clip(start: Image.Image, clip_seed: int) -> np.ndarray:
        return _clip(spec, rt, start, prompt=prompt, width=width, height=height, num_frames=num_frames,
                     steps=steps, seed=clip_seed)

    return chain_segments(image, segments, seed, clip, "wan22")


def extension_frames(settings, num_frames: int) -> int:
    """Frames of the one call that adds `num_frames` after the input's last frame: 4k+1, that frame first.

    Example:
        >>> extension_frames(get_preset("modern").spec("extend").settings, 120)
        121
    """
    m = settings.frame_multiple
    return -(-num_frames // m) * m + 1  # the last frame, then at least num_frames more, 4k+1 in all


def continue_video(
    spec: ModelSpec, rt: Runtime, *, frames: np.ndarray, prompt: str | None, width: int, height: int,
    num_frames: int, steps: int, fps: int, seed: int,
) -> np.ndarray:
    """`num_frames` new frames following `frames`, generated from its last frame (not repeated).

    The clip is rounded up to 4k+1 frames (last frame included) and cut back to `num_frames`.
    """
    total = extension_frames(spec.settings, num_frames)
    _check(spec, width, height, total)
    clip = _clip(spec, rt, Image.fromarray(frames[-1]), prompt=prompt, width=width, height=height,
                 num_frames=total, steps=steps, seed=seed)
    return clip[1:1 + num_frames]

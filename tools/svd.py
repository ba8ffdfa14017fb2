"""Image-to-video with Stable Video Diffusion, chained segments, and extension from a last frame.

SVD takes no text. Each further segment starts from the previous segment's last frame, whose
regenerated copy is dropped so no frame is duplicated at a join (as in the paper's code). No call
makes more frames than the model was trained on (`trained_frames`: SVD-XT's 25); an extension
longer than that is chained in segments.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
from PIL import Image

from mora.config import ModelSpec
from mora.errors import InputError
from mora.tools.profiles import decode_chunk
from mora.tools.runtime import Runtime, generator, variant
from mora.tools.segments import chain_segments, extension_clips
from mora.tools.sizing import cover_resize, to_uint8
from mora.tools.weights import from_pretrained

logger = logging.getLogger(__name__)

GPU_DTYPE = "float16"
AGENT = "image_to_video_agent"  # the agent whose trained adapter applies here


def load(spec: ModelSpec, rt: Runtime):
    from diffusers import StableVideoDiffusionPipeline

    return rt.pipeline(
        "svd", spec.model,
        lambda dtype: from_pretrained(StableVideoDiffusionPipeline, spec.model, dtype=dtype,
                                      variant=variant(spec, dtype)),
        GPU_DTYPE, agent=AGENT,
    )


@contextlib.contextmanager
def _modulated(pipe, rt: Runtime):
    """With an adapter: z_4 appended to SVD's CLIP image embedding (both guidance branches) for this call.

    SVD takes no prompt embeddings; its conditioning is `_encode_image`'s output, so the method is
    shadowed on the instance for the duration of the call (the pipeline is this job's; calls are serial).
    """
    if not rt.modulated(AGENT):
        yield
        return
    original = pipe._encode_image
    pipe._encode_image = lambda *args, **kwargs: rt.adapter.append(AGENT, original(*args, **kwargs))
    try:
        yield
    finally:
        del pipe._encode_image


def trained_frames(pipe, spec: ModelSpec) -> int:
    """Frames per call the loaded model was trained on: its UNet's `num_frames`, else the settings' max_frames."""
    return getattr(pipe.unet.config, "num_frames", None) or spec.settings.max_frames


def _clip_maker(spec: ModelSpec, rt: Runtime, pipe, *, width: int, height: int, steps: int, fps: int):
    """`clip(start, seed, num_frames)`: one SVD call from `start`, (num_frames, H, W, 3) uint8."""
    s = spec.settings

    def clip(start: Image.Image, clip_seed: int, num_frames: int) -> np.ndarray:
        chunk = decode_chunk(rt.profile, rt.device, s.decode_chunk_size, num_frames, width, height)
        with _modulated(pipe, rt):
            out = pipe(
                start, width=width, height=height, num_frames=num_frames, num_inference_steps=steps, fps=fps,
                motion_bucket_id=s.motion_bucket_id, noise_aug_strength=s.noise_aug_strength,
                min_guidance_scale=s.min_guidance_scale, max_guidance_scale=s.max_guidance_scale,
                decode_chunk_size=chunk, generator=generator(clip_seed), output_type="np", **rt.step_end(pipe),
            ).frames[0]
        return to_uint8(out)

    return clip


def generate(
    spec: ModelSpec, rt: Runtime, *, image: Image.Image, prompt: str | None, width: int, height: int, num_frames: int,
    segments: int, steps: int, fps: int, seed: int,
) -> np.ndarray:
    """`segments` chained clips of `num_frames` from `image`: (T, H, W, 3) uint8, T = n + (s-1)(n-1).

    Segment i runs with seed + i on a fresh generator (`mora.tools.segments`). A segment is at most
    the model's trained length (`trained_frames`).
    """
    if prompt:
        logger.info("SVD takes no text: the prompt is unused by image_to_video (it shaped the first frame)")
    pipe = load(spec, rt)
    if num_frames > (most := trained_frames(pipe, spec)):
        raise InputError(f"num_frames: {num_frames} is over the {most} frames {spec.model} was trained on; "
                         f"pass at most {most} and more segments for a longer video")
    clip = _clip_maker(spec, rt, pipe, width=width, height=height, steps=steps, fps=fps)
    return chain_segments(cover_resize(image, width, height), segments, seed,
                          lambda start, clip_seed: clip(start, clip_seed, num_frames), "svd")


def continue_video(
    spec: ModelSpec, rt: Runtime, *, frames: np.ndarray, prompt: str | None, width: int, height: int,
    num_frames: int, steps: int, fps: int, seed: int,
) -> np.ndarray:
    """`num_frames` new frames following `frames` at its rate `fps`, generated from its last frame (that
    frame is not repeated), in segments of at most the trained length (`extension_clips`); segment i
    runs with seed + i.

    SVD is conditioned on the preset's rate (`settings.fps`, what it was trained at) whatever the
    input's, as its micro-conditioning sets how much it moves per frame. So the continuation is made
    at that rate, as many frames as the requested duration needs, and sampled to the input's rate:
    new frame k (at k / fps seconds) is the model's frame nearest in time (held when the input is
    faster, skipped when slower). Motion keeps its real speed; at the preset's own rate nothing changes.
    """
    rate = spec.settings.fps
    made = max(1, round(num_frames * rate / fps))  # the requested duration, in frames at the model's rate
    if fps != rate:
        logger.info("svd: the input is %d fps; %d frames made at the preset's %d fps, sampled to %d", fps, made,
                    rate, num_frames)
    pipe = load(spec, rt)
    lengths = extension_clips(made, trained_frames(pipe, spec))  # each call within the trained length
    clip = _clip_maker(spec, rt, pipe, width=width, height=height, steps=steps, fps=rate)
    sizes = iter(lengths)
    video = chain_segments(cover_resize(Image.fromarray(frames[-1]), width, height), len(lengths), seed,
                           lambda start, clip_seed: clip(start, clip_seed, next(sizes)), "svd")
    return video[[min(made, max(1, int(k * rate / fps + 0.5))) for k in range(1, num_frames + 1)]]  # half up

"""LTX-Video (LTXConditionPipeline): image-to-video with text, extension conditioned on a video's
tail, and first-last-frame transitions for connecting two videos.

The paper connects videos with SEINE, which is not in diffusers; LTX conditioned on A's last frame
at index 0 and B's first frame at the last index plays that role.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from mora.config import ModelSpec
from mora.tools.quiet import DropMessages
from mora.tools.runtime import Runtime, generator
from mora.tools.segments import chain_segments
from mora.tools.sizing import cover_resize, to_uint8
from mora.tools.weights import from_pretrained

logger = logging.getLogger(__name__)

# LTXConditionPipeline computes its own timesteps and passes them to the scheduler without sigmas;
# diffusers 0.42 warns about that on every call. It is the pipeline's reference behaviour, not
# something Mora passes or a user can change.
logging.getLogger("diffusers.schedulers.scheduling_flow_match_euler_discrete").addFilter(
    DropMessages("`timesteps` were passed without `sigmas`")
)
MAX_TEXT_TOKENS = 512  # T5 reads this many; the pipeline's default window is 128

GPU_DTYPE = "bfloat16"  # LTX-Video is trained and published in bf16
DEFAULT_PROMPT = "smooth natural motion, consistent scene, steady camera"
NEGATIVE_PROMPT = "worst quality, inconsistent motion, blurry, jittery, distorted"


def load(spec: ModelSpec, rt: Runtime):
    from diffusers import LTXConditionPipeline

    return rt.pipeline(
        "ltx", spec.model, lambda dtype: from_pretrained(LTXConditionPipeline, spec.model, dtype=dtype), GPU_DTYPE
    )


def _call(spec: ModelSpec, rt: Runtime, conditions, *, prompt, width, height, num_frames, steps, fps, seed) -> np.ndarray:
    pipe = load(spec, rt)
    prompt = prompt or DEFAULT_PROMPT
    # The window grows to fit the prompt (T5 has relative positions): nothing is cut off unnoticed.
    tokens = len(pipe.tokenizer(prompt, verbose=False).input_ids)
    window = min(max(128, tokens), MAX_TEXT_TOKENS)
    if tokens > window:
        logger.warning("LTX: the prompt has %d T5 tokens; the last %d are cut", tokens, tokens - window)
    out = pipe(
        conditions=conditions, prompt=prompt, negative_prompt=NEGATIVE_PROMPT, max_sequence_length=window, width=width,
        height=height, num_frames=num_frames, frame_rate=fps, num_inference_steps=steps,
        guidance_scale=spec.settings.guidance_scale, decode_timestep=spec.settings.decode_timestep,
        decode_noise_scale=spec.settings.decode_noise_scale,
        image_cond_noise_scale=spec.settings.image_cond_noise_scale, generator=generator(seed),
        output_type="np", **rt.step_end(pipe),
    ).frames[0]
    return to_uint8(out)


def generate(
    spec: ModelSpec, rt: Runtime, *, image: Image.Image, prompt: str | None, width: int, height: int, num_frames: int,
    segments: int, steps: int, fps: int, seed: int,
) -> np.ndarray:
    """Image-to-video conditioned on `image` at frame 0 and the prompt; segments chain on last frames
    (segment i runs with seed + i, `mora.tools.segments`)."""
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    def clip(start: Image.Image, clip_seed: int) -> np.ndarray:
        return _call(
            spec, rt, [LTXVideoCondition(image=start, frame_index=0)], prompt=prompt, width=width, height=height,
            num_frames=num_frames, steps=steps, fps=fps, seed=clip_seed,
        )

    return chain_segments(cover_resize(image, width, height), segments, seed, clip, "ltx")


def extension_frames(settings, available: int, num_frames: int) -> tuple[int, int]:
    """(tail, total): the input's last frames an extension is conditioned on and the frames of its one call.

    Example:
        >>> extension_frames(get_preset("ltx").spec("extend").settings, 100, 48)  # a 9-frame tail, 57 in all
        (9, 57)
    """
    m = settings.frame_multiple
    tail = min(settings.tail_frames, available)
    tail = (tail - 1) // m * m + 1  # LTX encodes video conditions of k*m+1 frames
    total = -(-(tail + num_frames - 1) // m) * m + 1  # round the whole clip up to k*m+1
    return tail, total


def continue_video(
    spec: ModelSpec, rt: Runtime, *, frames: np.ndarray, prompt: str | None, width: int, height: int,
    num_frames: int, steps: int, fps: int, seed: int,
) -> np.ndarray:
    """New frames following `frames`, conditioned on its last `tail_frames` frames (k*m+1 of them)."""
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    tail, total = extension_frames(spec.settings, len(frames), num_frames)
    video = [cover_resize(Image.fromarray(f), width, height) for f in frames[-tail:]]
    clip = _call(
        spec, rt, [LTXVideoCondition(video=video, frame_index=0)], prompt=prompt, width=width, height=height,
        num_frames=total, steps=steps, fps=fps, seed=seed,
    )
    return clip[tail:tail + num_frames]


def transition(
    spec: ModelSpec, rt: Runtime, *, first: Image.Image, last: Image.Image, prompt: str | None, width: int,
    height: int, num_frames: int, steps: int, fps: int, seed: int,
) -> np.ndarray:
    """A clip from `first` (frame 0) to `last` (final frame); returns only the frames in between."""
    from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

    conditions = [
        LTXVideoCondition(image=cover_resize(first, width, height), frame_index=0),
        LTXVideoCondition(image=cover_resize(last, width, height), frame_index=num_frames - 1),
    ]
    clip = _call(
        spec, rt, conditions, prompt=prompt, width=width, height=height, num_frames=num_frames, steps=steps, fps=fps,
        seed=seed,
    )
    return clip[1:-1]

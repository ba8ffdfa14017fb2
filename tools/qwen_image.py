"""Text-to-image with Qwen-Image (QwenImagePipeline): the first frame of the modern preset.

Why Qwen-Image rather than FLUX.2 [klein] (the other candidate diffusers 0.42 runs):
- Quality: a 20B MMDiT; at release (Aug 2025) the best open-weight model on Qwen's AI Arena (third
  overall, behind closed models) and state of the art among open models on GenEval, DPG and OneIG
  (its technical report), strongest at text rendering and prompt following. The Dec 2025 update
  `Qwen-Image-2512` is the default here. FLUX.2 [klein] (4B/9B, distilled to 4 steps) is built for
  speed (about 13 GB of VRAM) and does not claim that standing.
- Licence: Apache-2.0 for the whole model. FLUX.2 [klein] 4B is Apache-2.0 too, but the 9B is under
  the FLUX non-commercial licence.
- One stack with editing: Qwen-Image-Edit (`mora.tools.qwen_image_edit`) shares its text encoder
  (Qwen2.5-VL-7B), VAE and transformer design, so the tiny counterparts share their builders.
- Both text encoders build at toy size offline (Qwen2.5-VL here, Qwen3 for FLUX.2 [klein]): that did
  not decide it.
The price is memory and time: about 41 GB of bf16 transformer weights plus 17 GB of text encoder
(about 58 GB to download; estimates from the parameter counts), 50 steps with CFG (two passes each).
`low-vram` offloads; a 24 GB GPU needs a quantized transformer (not wired here).

Qwen-Image is not guidance-distilled: it runs real classifier-free guidance (`true_cfg_scale`) and
needs a negative prompt for it, a single space when there is none (the model card's advice).
"""

from __future__ import annotations

import logging

from PIL import Image

from mora.config import ModelSpec
from mora.tools.runtime import Runtime, generator
from mora.tools.weights import from_pretrained

logger = logging.getLogger(__name__)

GPU_DTYPE = "bfloat16"  # published and trained in bf16


# The Lightning LoRAs' scheduler, as github.com/ModelTC/Qwen-Image-Lightning's generate_with_diffusers.py builds
# it for every LoRA (Qwen-Image, -2512, -Edit-2509, -Edit-2511); base_shift and max_shift (both log(shift)) are set
# from `lightning_shift`. A fixed shift: the resolution no longer moves the schedule.
LIGHTNING_SCHEDULER = {
    "base_image_seq_len": 256, "invert_sigmas": False, "max_image_seq_len": 8192, "num_train_timesteps": 1000,
    "shift": 1.0, "shift_terminal": None, "stochastic_sampling": False, "time_shift_type": "exponential",
    "use_beta_sigmas": False, "use_dynamic_shifting": True, "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}


def lightning_scheduler(config: dict, shift: float):
    """The Lightning LoRAs' FlowMatchEulerDiscreteScheduler, over the pipeline's `config`.

    Example:
        >>> pipe.scheduler = lightning_scheduler(pipe.scheduler.config, 3.0)  # doctest: +SKIP
    """
    import math

    from diffusers import FlowMatchEulerDiscreteScheduler

    fixed = {"base_shift": math.log(shift), "max_shift": math.log(shift)}
    return FlowMatchEulerDiscreteScheduler.from_config({**config, **LIGHTNING_SCHEDULER, **fixed})


def with_scheduler(spec: ModelSpec, build):
    """(cache name, loader): `build(dtype)` with the Lightning scheduler set when `lightning_shift` asks for it
    (the scheduler is part of what is loaded, so of the cache key)."""
    shift = spec.settings.lightning_shift
    if shift is None:
        return spec.model, build

    def load(dtype):
        pipe = build(dtype)
        pipe.scheduler = lightning_scheduler(pipe.scheduler.config, shift)
        return pipe

    return f"{spec.model}#lightning_shift={shift:g}", load


def load(spec: ModelSpec, rt: Runtime):
    from diffusers import QwenImagePipeline

    name, build = with_scheduler(spec, lambda dtype: from_pretrained(QwenImagePipeline, spec.model, dtype=dtype))
    return rt.pipeline("qwen-image", name, build, GPU_DTYPE)


def prompt_tokens(pipe, prompt: str, max_sequence_length: int) -> dict:
    """How `prompt` is encoded: its tokens, how many of them the window holds, whether any are cut.

    The pipeline wraps the prompt in a chat template, drops the template's first
    `prompt_template_encode_start_idx` tokens and keeps at most `max_sequence_length` of the rest,
    so the template's tail (after the prompt) takes room in the window too.
    """
    tokens = len(pipe.tokenizer(prompt, add_special_tokens=False).input_ids)
    wrapped = len(pipe.tokenizer(pipe.prompt_template_encode.format(prompt)).input_ids)
    overhead = wrapped - pipe.prompt_template_encode_start_idx - tokens  # template tokens kept besides the prompt
    window = max(0, max_sequence_length - overhead)
    return {"tokens": tokens, "window": window, "chunks": 1, "truncated": tokens > window}


def text_to_image(
    spec: ModelSpec, rt: Runtime, *, prompt: str, negative_prompt: str, width: int, height: int, steps: int,
    seed: int,
) -> tuple[Image.Image, dict]:
    """(the first frame, how the prompt was encoded: tokens, window, chunks, truncated).

    Args:
        spec: family `qwen-image`; settings `QwenImageSettings`.
        rt: where and how to run.
        prompt: what to draw.
        negative_prompt: what to steer away from; empty means the card's single space (CFG stays on).
        width, height: multiples of `settings.size_multiple` (16).
        steps: denoising steps.
        seed: the noise seed (same seed, same image on any device).

    Example:
        >>> image, tokens = text_to_image(spec, Runtime(), prompt="a red fox in snow", negative_prompt="",
        ...                               width=1664, height=928, steps=50, seed=0)
    """
    s = spec.settings
    m = s.size_multiple
    if width % m or height % m:
        raise ValueError(f"qwen-image: width and height must be multiples of {m}, got {width}x{height}")
    pipe = load(spec, rt)
    tokens = prompt_tokens(pipe, prompt, s.max_sequence_length)
    if tokens["truncated"]:
        logger.warning("qwen-image: the prompt has %d tokens; the window holds %d, the rest are cut",
                       tokens["tokens"], tokens["window"])
    image = pipe(
        prompt=prompt, negative_prompt=negative_prompt or s.empty_negative, true_cfg_scale=s.true_cfg_scale,
        width=width, height=height, num_inference_steps=steps, max_sequence_length=s.max_sequence_length,
        generator=generator(seed), **rt.step_end(pipe),
    ).images[0]
    return image, tokens

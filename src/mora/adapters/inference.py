"""Inference with an adapter: z_i appended to each agent's conditioning, per pipeline family.

After `Adapter.apply(pipe, agent)` has loaded theta_i, each call appends z_i on the token axis of
the conditioning, in both classifier-free-guidance branches (as training ran the unconditional
branch: conditioning dropped, z_i kept):

- SDXL: `pipe(**sdxl_call_kwargs(pipe, adapter, prompt, negative_prompt), width=..., ...)` passes
  `prompt_embeds`/`negative_prompt_embeds` with z_2 appended (pooled embeddings unchanged). The
  refiner keeps its plain text: its conditioning (text_encoder_2 only, 1280 wide) is not z_2's width
  and it was not trained.
- InstructPix2Pix: `pipe(**pix2pix_call_kwargs(pipe, adapter, prompt), image=..., ...)`.
- SVD: `with svd_modulation(pipe, adapter): pipe(image, ...)` appends z_4 to the image embedding for
  the duration of the call (it wraps the pipeline's `_encode_image`; not for two threads at once on
  one pipeline, and not nested).

Without the agent in the adapter (or with `adapter=None`) these return the plain call, so a tool can
always go through them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from mora.adapters.adapter import Adapter
from mora.adapters.modulation import append_modulation

A2, A3, A4 = "text_to_image_agent", "image_to_image_agent", "image_to_video_agent"


def _device(pipe: Any) -> torch.device:
    return getattr(pipe, "_execution_device", None) or pipe.unet.device


def sdxl_call_kwargs(pipe: Any, adapter: Adapter | None, prompt: str, negative_prompt: str | None = None,
                     agent: str = A2) -> dict[str, Any]:
    """Keyword arguments for an SDXL pipeline call with z appended to both guidance branches.

    Args:
        pipe: a `StableDiffusionXLPipeline` (the adapter's LoRA already applied).
        adapter: the adapter, or None for the plain call.
        prompt: the prompt.
        negative_prompt: the negative prompt (None: SDXL's zero embeddings, as the pipeline does).
        agent: the adapter's agent that this pipeline runs.

    Example:
        >>> image = pipe(**sdxl_call_kwargs(pipe, adapter, "a fox"), num_inference_steps=40).images[0]  # doctest: +SKIP
    """
    if adapter is None or not adapter.has(agent):
        return {"prompt": prompt, "negative_prompt": negative_prompt}
    with torch.no_grad():
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt, device=_device(pipe), num_images_per_prompt=1, do_classifier_free_guidance=True,
            negative_prompt=negative_prompt,
        )
    z = adapter.modulation(agent)
    return {"prompt_embeds": append_modulation(embeds, z), "negative_prompt_embeds": append_modulation(negative, z),
            "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": negative_pooled}


def pix2pix_call_kwargs(pipe: Any, adapter: Adapter | None, prompt: str, negative_prompt: str | None = None,
                        agent: str = A3) -> dict[str, Any]:
    """Keyword arguments for an InstructPix2Pix call with z appended to both text branches.

    Example:
        >>> edited = pipe(**pix2pix_call_kwargs(pipe, adapter, "make it snowy"), image=frame).images[0]  # doctest: +SKIP
    """
    if adapter is None or not adapter.has(agent):
        return {"prompt": prompt, "negative_prompt": negative_prompt}
    device = _device(pipe)
    with torch.no_grad():
        embeds = pipe._encode_prompt(prompt, device, 1, False)
        negative = pipe._encode_prompt(negative_prompt or "", device, 1, False)
    z = adapter.modulation(agent)
    return {"prompt_embeds": append_modulation(embeds, z), "negative_prompt_embeds": append_modulation(negative, z)}


@contextlib.contextmanager
def svd_modulation(pipe: Any, adapter: Adapter | None, agent: str = A4) -> Iterator[Any]:
    """Within the block, `pipe`'s image embeddings (both guidance branches) get z appended.

    Example:
        >>> with svd_modulation(pipe, adapter):                    # doctest: +SKIP
        ...     frames = pipe(image, num_frames=25).frames[0]
    """
    if adapter is None or not adapter.has(agent):
        yield pipe
        return
    z = adapter.modulation(agent)
    original = pipe._encode_image

    def encode_image(*args: Any, **kwargs: Any) -> torch.Tensor:
        return append_modulation(original(*args, **kwargs), z)

    previous = vars(pipe).get("_encode_image")  # not None only inside another such block (don't nest them)
    pipe._encode_image = encode_image  # an instance attribute shadows the method for this block only
    try:
        yield pipe
    finally:
        if previous is None:
            del pipe._encode_image
        else:
            pipe._encode_image = previous


def preview_video(pipes: dict[str, Any], adapter: Adapter | None, *, prompt: str, seed: int, width: int, height: int,
                  num_frames: int, steps: int = 2, negative_prompt: str | None = None) -> np.ndarray:
    """A2 then A4 on one prompt (one SVD segment, no refiner): (T, H, W, 3) float frames in [0, 1].

    For checking an adapter (tests, notebooks, the benchmark), not the agents' route: `mora.run`
    with `--adapter` runs the full task.

    Args:
        pipes: `text_to_image_agent` -> SDXL pipeline and `image_to_video_agent` -> SVD pipeline,
            with the adapter's LoRA applied (or the training pipelines, which carry it already).
        adapter: supplies z_i (None: the base models).
        prompt, seed, width, height, num_frames, steps: as for the tools.

    Example:
        >>> frames = preview_video(pipes, adapter, prompt="a fox", seed=0, width=64, height=64, num_frames=4)  # doctest: +SKIP
    """
    sdxl, svd = pipes[A2], pipes[A4]
    image = sdxl(**sdxl_call_kwargs(sdxl, adapter, prompt, negative_prompt), width=width, height=height,
                 num_inference_steps=steps, generator=torch.Generator().manual_seed(seed)).images[0]
    with svd_modulation(svd, adapter):
        frames = svd(image, width=width, height=height, num_frames=num_frames, num_inference_steps=steps,
                     generator=torch.Generator().manual_seed(seed), output_type="np",
                     decode_chunk_size=num_frames).frames[0]
    return np.asarray(frames)

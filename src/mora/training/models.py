"""The agents' pipelines for training and previews: loaded from a preset, frozen, with theta_i and z_i attached."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mora.adapters.lora import add_lora
from mora.adapters.modulation import initial_modulation
from mora.adapters.spec import AGENTS
from mora.config import Preset

logger = logging.getLogger(__name__)


@dataclass
class AgentModel:
    """One trained agent: its pipeline (frozen weights), LoRA parameters theta_i and modulation z_i.

    Args:
        agent: the agent's name (`text_to_image_agent`, ...).
        family: its pipeline family (`sdxl`, `pix2pix`, `svd`).
        model: the base model id from the preset.
        pipe: the diffusers pipeline, on the training device.
        z: the modulation embedding, (K, D) fp32, trainable.
        z_init: its initial value E_i("[Mod]") (for the record and the tests).
        lora_params: theta_i, fp32, trainable.
        dtype: the frozen weights' dtype (every component is loaded in one), read once: diffusers'
            `ModelMixin.dtype` walks every submodule on each read (1-3 ms on tiny, 8 reads a step).
    """

    agent: str
    family: str
    model: str
    pipe: Any
    z: torch.nn.Parameter
    z_init: torch.Tensor
    lora_params: list[torch.nn.Parameter] = field(default_factory=list)
    dtype: torch.dtype = torch.float32


def pipeline_class(family: str) -> type:
    from diffusers import (
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionXLPipeline,
        StableVideoDiffusionPipeline,
    )

    return {"sdxl": StableDiffusionXLPipeline, "pix2pix": StableDiffusionInstructPix2PixPipeline,
            "svd": StableVideoDiffusionPipeline}[family]


def load_pipeline(preset: Preset, agent: str, device: str, dtype: torch.dtype) -> Any:
    """A fresh (uncached) pipeline of `agent`'s model in `preset`, frozen, in inference mode, on `device`.

    Training mutates its pipelines (LoRA layers), so it never shares the tools' cached ones. SDXL
    loads the base only: the refiner is not trained. On a GPU the repository's fp16 files are read
    (what inference downloads) and cast to `dtype`.

    Example:
        >>> pipe = load_pipeline(get_preset("tiny"), "image_to_video_agent", "cpu", torch.float32)  # doctest: +SKIP
    """
    from mora.tools.runtime import no_library_bars, variant
    from mora.tools.weights import from_pretrained

    spec = preset.spec(AGENTS[agent].role)
    cls = pipeline_class(spec.family)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if spec.family == "pix2pix":  # as the tools load it: no NSFW checker on the agents' own frames
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    elif dtype != torch.float32:
        kwargs["variant"] = variant(spec, torch.float16)
    with no_library_bars():
        pipe = from_pretrained(cls, spec.model, **kwargs)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2", "image_encoder"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False)
            module.train(False)  # inference mode: no dropout; only theta_i and z_i learn
    return pipe


def build_agent(preset: Preset, agent: str, device: str, dtype: torch.dtype, *, rank: int, mod_tokens: int,
                gradient_checkpointing: bool, seed: int = 0) -> AgentModel:
    """Load `agent`'s pipeline and attach trainable theta_i (LoRA) and z_i = E_i("[Mod]").

    LoRA's random A matrices are drawn from `seed` (and the agent's name), not from whatever state
    the global generator is in, so two runs with one seed start from the same theta_i.
    """
    spec = preset.spec(AGENTS[agent].role)
    pipe = load_pipeline(preset, agent, device, dtype)
    z_init = initial_modulation(pipe, spec.family, mod_tokens).to(device)
    cuda = [torch.device(device)] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(np.random.SeedSequence([seed, *agent.encode()]).generate_state(1)[0]))
        lora_params = add_lora(pipe.unet, rank)
    if gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
        pipe.vae.enable_gradient_checkpointing()  # the coupled path decodes/encodes frames with gradients
    z = torch.nn.Parameter(z_init.clone())
    count = sum(p.numel() for p in lora_params)
    logger.info("%s: %s (%s), LoRA rank %d on %d tensors (%.2fM parameters), z %s", agent, spec.model,
                spec.family, rank, len(lora_params), count / 1e6, tuple(z.shape))
    return AgentModel(agent=agent, family=spec.family, model=spec.model, pipe=pipe, z=z, z_init=z_init,
                      lora_params=lora_params, dtype=pipe.unet.dtype)

"""theta_i: LoRA on each agent's denoiser attention projections, through peft and diffusers' LoRA layout.

Every family gets the same adapter: rank r, lora_alpha = r (scale 1), on `to_q`, `to_k`, `to_v`
and `to_out.0` of every attention block of the UNet (SDXL's and InstructPix2Pix's self- and
cross-attention; SVD's spatial and temporal ones). Files are written by diffusers' own
`save_lora_weights` (keys `unet.<module>.lora_A/B.weight`, the LoRA config in the safetensors
metadata), so `pipe.load_lora_weights(dir, weight_name=...)` reads them for SDXL and
InstructPix2Pix. SVD's UNet has no diffusers adapter loader (`UNetSpatioTemporalConditionModel`
lacks `PeftAdapterMixin` in diffusers 0.42), so for it the same file is read here and injected
with peft (`inject_adapter_in_model` + `set_peft_model_state_dict`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from mora.errors import InputError

logger = logging.getLogger(__name__)

ADAPTER_NAME = "mora"
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
PREFIX = "unet."  # diffusers' pipeline LoRA layout names the denoiser component


def lora_config(rank: int, alpha: float | None = None):
    """The peft `LoraConfig` of every Mora adapter (B starts at zero: theta_i starts as a no-op)."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights=True, target_modules=list(TARGET_MODULES))


def add_lora(unet: Any, rank: int) -> list[torch.nn.Parameter]:
    """Inject a trainable LoRA adapter into `unet`; freeze everything else; return the LoRA parameters (fp32).

    Example:
        >>> params = add_lora(pipe.unet, rank=16)  # doctest: +SKIP
    """
    from peft import inject_adapter_in_model

    unet.requires_grad_(False)
    if hasattr(unet, "add_adapter"):  # diffusers' PeftAdapterMixin (SDXL, InstructPix2Pix): records peft_config
        unet.add_adapter(lora_config(rank), adapter_name=ADAPTER_NAME)
    else:
        inject_adapter_in_model(lora_config(rank), unet, adapter_name=ADAPTER_NAME)
    params = []
    for name, param in unet.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()  # trainable parameters in fp32 whatever the frozen dtype
            param.requires_grad_(True)
            params.append(param)
    if not params:
        raise RuntimeError(f"no attention projections {TARGET_MODULES} found in {type(unet).__name__}")
    return params


def lora_state(unet: Any) -> dict[str, torch.Tensor]:
    """The adapter's weights in peft's key format (no adapter name), detached fp32 CPU copies.

    Always copies: peft returns the live parameters, and an fp32 CPU one would otherwise pass
    through `.float().cpu()` as itself (with `--ema`, the average swapped out again after this read
    would have been written as the raw weights).
    """
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME)
    return {k: v.detach().to("cpu", torch.float32, copy=True).contiguous() for k, v in state.items()}


def set_lora_state(unet: Any, state: dict[str, torch.Tensor]) -> None:
    """Load peft-format weights into the adapter already injected in `unet` (every key must fit)."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, state, adapter_name=ADAPTER_NAME)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise InputError(f"adapter: {len(unexpected)} LoRA weights (e.g. {unexpected[0]!r}) do not fit this "
                         "model; use an adapter trained for these base models")


def save_lora_file(state: dict[str, torch.Tensor], directory: Path, weight_name: str, rank: int) -> Path:
    """Write `state` in diffusers' LoRA layout with diffusers' own writer; returns the file."""
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin

    metadata = {k: sorted(v) if isinstance(v, set) else v for k, v in lora_config(rank).to_dict().items()}
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        str(directory), unet_lora_layers=state, weight_name=weight_name, unet_lora_adapter_metadata=metadata,
    )
    return directory / weight_name


def read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(peft-format state without the `unet.` prefix, LoRA config) of a file `save_lora_file` wrote."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k.removeprefix(PREFIX): f.get_tensor(k) for k in f.keys()}
        config = json.loads(meta.get("lora_adapter_metadata", "{}"))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"--adapter: {str(path)!r} is not a readable LoRA file ({err}); copy the adapter "
                         "folder again or retrain") from err
    return state, config


def load_lora(pipe: Any, family: str, path: Path) -> None:
    """Load an agent's LoRA file into `pipe`'s UNet (diffusers' loader where it has one, peft for SVD)."""
    if family in ("sdxl", "pix2pix"):
        # The UNet's own loader: the same code `pipe.load_lora_weights` runs for the `unet.` keys,
        # without its warnings about the text encoders (which have no LoRA here).
        pipe.unet.load_lora_adapter(str(path.parent), weight_name=path.name, prefix="unet",
                                    adapter_name=ADAPTER_NAME, _pipeline=pipe)
        return
    from peft import inject_adapter_in_model

    state, config = read_lora_file(path)
    rank = int(config.get("r") or next(v.shape[0] for k, v in state.items() if "lora_A" in k))
    inject_adapter_in_model(lora_config(rank, config.get("lora_alpha")), pipe.unet, adapter_name=ADAPTER_NAME)
    set_lora_state(pipe.unet, state)
    logger.debug("loaded %d LoRA tensors into %s", len(state), type(pipe.unet).__name__)

"""The adapter format `mora train` writes and every task loads: LoRA theta_i plus modulation z_i per agent.

This package sits below the tools (`tools/` loads adapters through it, `mora.training` writes them),
so inference never imports the trainer. Its modules:

- `spec`: the trainable agents (`AGENTS`) and the modulation token, without torch.
- `adapter`: the folder format (`adapter.json`, LoRA files, `modulation.safetensors`), `load_adapter`.
- `lora`: LoRA on a denoiser's attention (peft), saved in diffusers' LoRA file format.
- `modulation`: initialising z_i and appending it to a pipeline's conditioning.
- `inference`: call arguments of SDXL, InstructPix2Pix and SVD with z_i appended.

Names load on first use (PEP 562), so `import mora.adapters` imports no torch.

Example:
    >>> from mora.adapters import load_adapter
    >>> adapter = load_adapter("runs/fox/adapter", "tiny")  # doctest: +SKIP
    >>> adapter.agent_for_role("image_to_video")            # doctest: +SKIP
    'image_to_video_agent'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mora._lazy import lazy_names

PUBLIC_NAMES = {
    "AGENTS": "mora.adapters.spec",
    "MOD_TOKEN": "mora.adapters.spec",
    "Adapter": "mora.adapters.adapter",
    "load_adapter": "mora.adapters.adapter",
    "sdxl_call_kwargs": "mora.adapters.inference",
    "pix2pix_call_kwargs": "mora.adapters.inference",
    "svd_modulation": "mora.adapters.inference",
    "preview_video": "mora.adapters.inference",
}

__all__ = [
    "AGENTS", "Adapter", "MOD_TOKEN", "load_adapter", "pix2pix_call_kwargs", "preview_video", "sdxl_call_kwargs",
    "svd_modulation",
]

if TYPE_CHECKING:  # pragma: no cover
    from mora.adapters.adapter import Adapter, load_adapter
    from mora.adapters.inference import pix2pix_call_kwargs, preview_video, sdxl_call_kwargs, svd_modulation
    from mora.adapters.spec import AGENTS, MOD_TOKEN

__getattr__, __dir__ = lazy_names(__name__, PUBLIC_NAMES)

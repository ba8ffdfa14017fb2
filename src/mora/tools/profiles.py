"""Execution profiles: how a pipeline is placed and sped up on its device.

- `fast`: every model resident in fp16/bf16, SDPA attention (diffusers' default on torch 2),
  `torch.compile` of the denoiser (regional, on its repeated blocks, where diffusers supports it),
  channels_last (2D convolutions), fused QKV projections where available.
- `balanced`: resident, nothing compiled.
- `low-vram`: model CPU offload (each model on the GPU only while it runs), VAE slicing.
- `auto`: picks one of the above by free GPU memory.
- `paper` (benchmarks only, not offered by the CLI): the original Mora code's runtime choices:
  fp16, SDXL and InstructPix2Pix resident, SVD with model CPU offload, decode chunks of 12.

Each profile applies only what the device supports and logs what it applied; the list is kept
on the pipeline (`pipe._mora_profile`) for manifests and benchmarks.

`fast`, `balanced` and `low-vram` give the same pixels for the same seed (up to float summation
order): they change where and how models run, never what they compute. So SVD's decode chunk size
(its temporal decoder mixes the frames within a chunk) stays the preset's, and VAE tiling (tiles
are blended where an image exceeds the VAE's tile size) is not used; `auto` then cannot make the
video depend on free GPU memory.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

GIB = 1024**3
AUTO_FAST_MIN_FREE = 48 * GIB  # SDXL + refiner + SVD resident with compile headroom
AUTO_BALANCED_MIN_FREE = 24 * GIB


def auto_profile(device: str) -> str:
    """`fast` with plenty of free GPU memory, `balanced` with some, else `low-vram`; `balanced` off-GPU."""
    if not device.startswith("cuda"):
        return "balanced"
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    profile = "fast" if free >= AUTO_FAST_MIN_FREE else "balanced" if free >= AUTO_BALANCED_MIN_FREE else "low-vram"
    logger.info("profile auto: %.1f GiB free on %s -> %s", free / GIB, device, profile)
    return profile


def _denoiser(pipe: Any) -> Any:
    return getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)


def apply(pipe: Any, device: str, profile: str) -> list[str]:
    """Place `pipe` on `device` for `profile`; returns what was applied. Never `.to()` and offload both."""
    applied: list[str] = []
    cuda = device.startswith("cuda")
    if profile == "paper":  # the original code offloads SVD only
        profile = "low-vram" if type(pipe).__name__ == "StableVideoDiffusionPipeline" else "balanced"
        applied.append("paper choices")
    if profile == "low-vram" and cuda:
        pipe.enable_model_cpu_offload(device=device)
        applied.append("model CPU offload")
    else:
        if profile == "low-vram":
            applied.append(f"resident on {device} (offload needs CUDA)")
        pipe.to(device)
    vae = getattr(pipe, "vae", None)
    if profile == "low-vram" and vae is not None and "paper choices" not in applied:
        # Slicing (one image per decode call) is exact; tiling would change pixels, see the module doc.
        if hasattr(vae, "enable_slicing"):
            try:
                vae.enable_slicing()
                applied.append("VAE slicing")
            except (NotImplementedError, ValueError):  # some VAEs lack it
                pass
    if profile == "fast":
        applied += _fast(pipe, cuda)
    logger.info("profile %s on %s: %s", profile, device, ", ".join(applied) or "defaults")
    pipe._mora_profile = applied
    return applied


def _fast(pipe: Any, cuda: bool) -> list[str]:
    applied = []
    denoiser = _denoiser(pipe)
    if denoiser is not None and hasattr(denoiser, "fuse_qkv_projections"):
        try:
            denoiser.fuse_qkv_projections()
            applied.append("fused QKV")
        except (ValueError, AttributeError, NotImplementedError) as e:  # e.g. added-KV attention
            logger.debug("fused QKV not applied: %s", e)
    if not cuda:  # compile and channels_last pay off on GPUs; on a CPU they only cost start-up time
        applied.append("no compile/channels_last off-GPU")
        return applied
    for name in ("unet", "vae"):  # convolutional models; transformers gain nothing
        module = getattr(pipe, name, None)
        if module is not None and _channels_last(module):
            applied.append(f"{name} channels_last")
    if denoiser is not None:
        if getattr(denoiser, "_repeated_blocks", None):
            denoiser.compile_repeated_blocks(fullgraph=True)
            applied.append("regional torch.compile")
        else:
            denoiser.compile()
            applied.append("torch.compile")
    return applied


def _channels_last(module: Any) -> int:
    """channels_last on the module's 2D convolutions; returns how many were converted.

    `module.to(memory_format=torch.channels_last)` raises "required rank 4 tensor" on the 3D
    convolutions of SVD's UNet and temporal decoder and of LTX's VAE, so convert per Conv2d.
    """
    import torch

    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:
        conv.to(memory_format=torch.channels_last)
    return len(convs)


def decode_chunk(profile: str, device: str, default: int, num_frames: int, width: int, height: int) -> int:
    """Frames per VAE decode call: the paper code's 12 in `paper`, else the preset's `default`.

    Not a profile choice: SVD's temporal decoder mixes the frames within a chunk, so the chunk size
    changes the video (a smaller chunk in low-vram, or one sized to free memory in fast, made the
    output differ between profiles and with free memory). `device`, `width` and `height` are kept
    for callers; at the presets' sizes a chunk of 8 frames fits with model CPU offload.
    """
    if profile == "paper":
        return min(12, num_frames)
    return min(default, num_frames)

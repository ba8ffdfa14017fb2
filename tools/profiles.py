"""Execution profiles: how a pipeline is placed and sped up on its device.

- `fast`: the step cache `mora.tools.speed.FAST_CACHE` (approximate; `--cache` overrides it) on the
  transformer families, every model resident in fp16/bf16, SDPA attention (diffusers' default on torch 2),
  `torch.compile` of the denoiser (regional, on its repeated blocks, where diffusers supports it),
  channels_last (2D convolutions), fused QKV projections where available.
- `balanced`: resident, nothing compiled.
- `low-vram`: model CPU offload (each model on the GPU only while it runs), VAE slicing, and
  smaller SVD decode chunks when free GPU memory cannot hold the preset's.
- `auto`: picks one of the above by free GPU memory.
- `paper`: the original Mora code's runtime choices (the benchmarks' baseline): SDXL and
  InstructPix2Pix resident, SVD with model CPU offload, SVD decode chunks of 12.

The list is `mora.config.PROFILES`.

Each profile applies only what the device supports and logs what it applied; the list is kept
on the pipeline (`pipe._mora_profile`) for manifests and benchmarks.

Without a step cache (`--cache none`), `fast`, `balanced` and `low-vram` give the same pixels for the same seed (up to float summation
order): they change where and how models run, never what they compute. So SVD's decode chunk size
(its temporal decoder mixes the frames within a chunk) stays the preset's unless memory forces
`low-vram` below it (logged), `fast` does not raise it, and VAE tiling (tiles are blended where
an image exceeds the VAE's tile size) is not used.
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
            # a step cache's hooks decide on the host between blocks (a graph break): no fullgraph then (GPU-pending)
            denoiser.compile_repeated_blocks(fullgraph=not getattr(denoiser, "is_cache_enabled", False))
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
    """Frames per SVD decode call: the preset's `default`, the paper code's 12 in `paper`.

    The chunk size is part of the output (SVD's temporal decoder mixes the frames within a chunk),
    so profiles keep the preset's. Only `low-vram` on a GPU whose free memory cannot hold that chunk
    decodes in smaller ones, and says so: then the video differs slightly from other profiles'.
    """
    if profile == "paper":
        return min(12, num_frames)
    chunk = min(default, num_frames)
    if profile != "low-vram" or not device.startswith("cuda"):
        return chunk
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    # Rough peak of the temporal decoder per frame in fp16: about six full-resolution 128-channel maps.
    fits = max(1, int(free * 0.5 // (width * height * 128 * 2 * 6)))
    if fits < chunk:
        logger.warning("low-vram: %.1f GiB free fits SVD decode chunks of %d frames, not the preset's %d; the "
                       "video will differ slightly from other profiles'", free / GIB, fits, chunk)
        return fits
    return chunk

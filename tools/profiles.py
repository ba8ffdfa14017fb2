"""Execution profiles: how a pipeline is placed and sped up on its device.

- `fast`: the step cache `mora.tools.speed.FAST_CACHE` (approximate; `--cache` overrides it) on the
  transformer families, every model resident in fp16/bf16, SDPA attention (diffusers' default on torch 2),
  `torch.compile` of the denoiser (regional, on its repeated blocks, where diffusers supports it),
  channels_last (2D convolutions), fused QKV projections where available.
- `balanced`: resident, nothing compiled.
- `low-vram` on CUDA: the denoiser's weights stored in fp8 (`fp8_storage`, for the model classes
  `fp8_refusal` accepts), diffusers' group offloading of every model but the VAE (`group_offload`:
  leaf level with CUDA streams, so only the layer running and the next one are on the GPU; the
  pinned CPU copies need about twice the offloaded models' size in RAM while being made), VAE tiling
  and slicing, and smaller SVD decode chunks when free GPU memory cannot hold the preset's. Off CUDA
  it keeps every model resident with VAE slicing only.
- `auto`: picks one of the above by free GPU memory.
- `paper`: the original Mora code's runtime choices (the benchmarks' baseline): SDXL and
  InstructPix2Pix resident, SVD with model CPU offload, SVD decode chunks of 12.

The list is `mora.config.PROFILES`.

Each profile applies only what the device supports and logs what it applied; the list is kept
on the pipeline (`pipe._mora_profile`) for manifests and benchmarks.

Without a step cache (`--cache none`; `fast` turns one on, `mora.tools.speed`), `fast` and
`balanced` give the same pixels for the same seed (up to float summation order), and so
does `low-vram` off CUDA: they change where and how models run, never what they compute. So SVD's
decode chunk size (its temporal decoder mixes the frames within a chunk) stays the preset's unless
memory forces `low-vram` below it (logged), and `fast` does not raise it.

`low-vram` on CUDA computes something slightly different, in two ways:
- fp8 storage: the denoiser's weights are rounded to float8 e4m3 (3 mantissa bits, bf16 has 7) and
  upcast to the pipeline's dtype layer by layer for each forward; the layers its class names as
  precision-critical (diffusers' `_skip_layerwise_casting_patterns`: norms, embeddings) and the
  generic ones diffusers skips stay in the pipeline's dtype. Every denoising step computes with the
  rounded weights, so the video differs from the other profiles' for the same seed (how much, at
  full size, is not measured here).
- VAE tiling: diffusers tiles only a decode (or encode) larger than the VAE's tile, blending the
  tiles where they overlap; smaller outputs decode in one piece, unchanged. SDXL's VAE tiles above
  1024 pixels a side (so not at the paper's 1024x576), LTX's above 512, Wan's and Qwen-Image's above
  256; SVD's temporal decoder has no tiling.
Group offloading and VAE slicing are exact: they move weights and split batches, nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

from mora import memory

logger = logging.getLogger(__name__)

GIB = 1024**3
AUTO_FAST_MIN_FREE = 48 * GIB  # SDXL + refiner + SVD resident with compile headroom
AUTO_BALANCED_MIN_FREE = 24 * GIB
DENOISERS = ("unet", "transformer", "transformer_2")  # Wan 2.2 A14B has two transformers
FP8_STORAGE = "float8_e4m3fn"  # the torch dtype low-vram stores denoiser weights in
RESIDENT_UNDER_OFFLOAD = memory.RESIDENT_UNDER_OFFLOAD  # the VAE (what `mora presets --memory` counts too)


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
    if profile == "paper":
        applied += ["paper choices", *_paper(pipe, device)]
    elif profile == "low-vram":
        applied += _low_vram(pipe, device)
    else:
        pipe.to(device)
    if profile == "fast":
        applied += _fast(pipe, cuda)
    logger.info("profile %s on %s: %s", profile, device, ", ".join(applied) or "defaults")
    pipe._mora_profile = applied
    return applied


def _paper(pipe: Any, device: str) -> list[str]:
    """The original code's placement: SVD with model CPU offload, every other pipeline resident."""
    if type(pipe).__name__ != "StableVideoDiffusionPipeline":
        pipe.to(device)
        return []
    if not device.startswith("cuda"):
        return _resident(pipe, device)
    pipe.enable_model_cpu_offload(device=device)
    return ["model CPU offload"]


def _resident(pipe: Any, device: str) -> list[str]:
    """Offloading's stand-in off CUDA: the pipeline moved to `device`, said so."""
    pipe.to(device)
    return [f"resident on {device} (offload needs CUDA)"]


def _low_vram(pipe: Any, device: str) -> list[str]:
    """low-vram's steps, in order: fp8 storage before group offloading, so the pinned CPU copies that
    group offloading makes (and moves to the GPU layer by layer) are the fp8 ones."""
    if not device.startswith("cuda"):  # nothing to offload to; only the exact savings
        return _resident(pipe, device) + vae_savings(pipe, tiling=False)
    applied = []
    for name in DENOISERS:
        model = getattr(pipe, name, None)
        if model is not None:
            applied += fp8_storage(model, name)
    applied += group_offload(pipe, device)
    return applied + vae_savings(pipe, tiling=True)


def fp8_refusal(model: Any) -> str | None:
    """Why `model`'s weights are not stored in fp8 under low-vram; None when they are.

    The rule, from the diffusers model classes: a class that declares `_skip_layerwise_casting_patterns`
    names the layers of its own that must keep the compute dtype (embeddings, modulation, norms), so
    diffusers has prepared it for layerwise casting. A class that declares none (SVD's UNet) gets only
    diffusers' generic patterns, and which of its layers are precision-critical is unknown: its
    weights stay as loaded.
    """
    cls = type(model)
    if not callable(getattr(model, "enable_layerwise_casting", None)):
        return f"{cls.__name__} is not a diffusers model (no enable_layerwise_casting)"
    if getattr(cls, "_skip_layerwise_casting_patterns", None) is None:
        return f"{cls.__name__} declares no _skip_layerwise_casting_patterns (diffusers did not prepare it for fp8)"
    return None


def fp8_storage(model: Any, name: str) -> list[str]:
    """Store `model`'s weights in float8, computing in its current dtype (diffusers' layerwise casting)."""
    import torch

    reason = fp8_refusal(model)
    compute = getattr(model, "dtype", None) or next(model.parameters()).dtype  # diffusers: skips fp32-kept parts
    dtype_name = str(compute).removeprefix("torch.")
    if reason is not None:
        logger.info("low-vram: %s weights kept in %s: %s", name, dtype_name, reason)
        return [f"{name} not fp8 ({reason})"]
    model.enable_layerwise_casting(storage_dtype=getattr(torch, FP8_STORAGE), compute_dtype=compute)
    return [f"{name} fp8 storage (compute in {dtype_name})"]


def offload_settings(device: str) -> dict[str, Any]:
    """diffusers' group offloading settings for `device`: leaf level (each layer its own group, as the
    diffusers docs recommend for video models with streams), with a CUDA stream that loads the next
    layer while the current one runs; without a stream off CUDA, where diffusers has none."""
    import torch

    return dict(onload_device=torch.device(device), offload_device=torch.device("cpu"), offload_type="leaf_level",
                use_stream=device.startswith("cuda"))


def group_offload(pipe: Any, device: str) -> list[str]:
    """Group offloading of each model of `pipe` but those in `RESIDENT_UNDER_OFFLOAD`, which go to `device`.

    Per component, as `pipe.enable_group_offload` does, so that a model whose class does not support
    group offloading stays resident instead of failing. A model shared with a pipeline placed before
    (SDXL's refiner shares the base's second text encoder) keeps its first hooks: diffusers does not
    register a second group offloading hook on a module.
    """
    import torch
    from diffusers.hooks import apply_group_offloading

    settings, resident = offload_settings(device), []
    for name, module in pipe.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        if name in RESIDENT_UNDER_OFFLOAD or not getattr(module, "_supports_group_offloading", True):
            module.to(device)
            resident.append(name)
        elif hasattr(module, "enable_group_offload"):
            module.enable_group_offload(**settings)
        else:
            apply_group_offloading(module=module, **settings)
    streams = ", CUDA streams" if settings["use_stream"] else ""
    return [f"group offload (leaf level{streams}; resident: {', '.join(resident) or 'none'})"]


def vae_savings(pipe: Any, *, tiling: bool) -> list[str]:
    """VAE slicing (one image per decode call: exact) and, with `tiling`, VAE tiling where the VAE has them."""
    vae = getattr(pipe, "vae", None)
    applied = []
    for what, wanted in (("tiling", tiling), ("slicing", True)):
        method = getattr(vae, f"enable_{what}", None)
        if not wanted or method is None:
            continue
        try:
            method()
            applied.append(f"VAE {what}")
        except (NotImplementedError, ValueError) as e:  # e.g. SVD's temporal decoder has no tiling
            logger.info("low-vram: no VAE %s for %s (%s)", what, type(vae).__name__, e)
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

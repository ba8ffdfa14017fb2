"""What a pipeline keeps on its device, measured and estimated, for the memory policy (`mora.memory`).

- `device_bytes`: the bytes of a loaded pipeline's parameters and buffers on a device, each tensor
  once however many pipelines share it (an SDXL refiner holds the base's VAE and text encoder).
- `estimate`: the bytes a pipeline will take before it loads: from the full-size configs for a Hub
  id (`mora.memory`), else from the safetensors headers of a local directory (`tiny/` models
  included; headers only, no tensor is read).
- `device_budget`: what weights may take on a device: a CUDA card's memory less the working reserve;
  None on a CPU or MPS (the system's memory is shared with everything else: no policy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mora import memory

logger = logging.getLogger(__name__)


def _tensors(pipe: Any) -> Iterable[Any]:
    import torch

    for component in getattr(pipe, "components", {}).values():
        if isinstance(component, torch.nn.Module):
            yield from component.parameters()
            yield from component.buffers()


def device_bytes(pipe: Any, device: str, exclude: set[int] | None = None) -> tuple[int, set[int]]:
    """(bytes of `pipe`'s tensors on `device` not in `exclude`, the storage pointers counted)."""
    kind = device.split(":", 1)[0]
    exclude = exclude or set()
    seen: set[int] = set()
    total = 0
    for tensor in _tensors(pipe):
        pointer = tensor.data_ptr()
        if tensor.device.type != kind or pointer in exclude or pointer in seen:
            continue
        seen.add(pointer)
        total += tensor.numel() * tensor.element_size()
    return total, seen


def pointers(pipes: Iterable[Any]) -> set[int]:
    """The storage pointers of these pipelines' tensors (what a newly loaded one may share)."""
    return {tensor.data_ptr() for pipe in pipes for tensor in _tensors(pipe)}


def local_params(folder: Path) -> int:
    """Parameters in a local model directory's safetensors files, read from their headers."""
    from safetensors import safe_open

    total = 0
    for path in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
                count = 1
                for side in weights.get_slice(name).get_shape():
                    count *= side
                total += count
    return total


def estimate(name: str, element_size: int, source: Callable[[str], str]) -> int | None:
    """Bytes the pipeline of `name` will take on its device: `model`, `model#variant` or `model+shared`
    (the SDXL refiner, sharing the base's components: those are not counted again). None when neither
    source knows it."""
    own, *shared = [part.split("#", 1)[0] for part in name.split("+")]
    parts = memory.component_bytes([own])
    if parts is not None:
        reused = memory.component_bytes(shared) or {}
        return sum(size for entry, size in parts.items() if entry not in reused)
    folder = Path(source(own))  # `source`: where from_pretrained reads the model (weights.model_source)
    if not folder.is_dir():
        return None
    from safetensors import SafetensorError

    try:
        return local_params(folder) * element_size
    except (OSError, ValueError, SafetensorError) as error:  # unreadable: the load says so, in its own words
        logger.debug("no size estimate for %s: %s", own, error)
        return None


def device_budget(device: str, budget: int | None) -> int | None:
    """`budget` if given (bytes), else a CUDA card's `memory.usable` share; None off CUDA."""
    if budget is not None:
        return budget
    if not device.startswith("cuda"):
        return None
    import torch

    return memory.usable(torch.cuda.get_device_properties(torch.device(device)).total_memory)

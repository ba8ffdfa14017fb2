"""Full-size models from `mora.data`'s configs, on the meta device (no weights), and what loads them.

- `build(entry)`: one entry of `fullsize_architectures.json` built from its `config` (no weights on
  the meta device); `meta_params(entry)` its parameter count.
- `recorded_loads(spec)`: what a family's own `load` (tools/*.py) asks `from_pretrained` for, recorded
  without loading: the pipeline class, the parts it passes itself (None, shared modules) and the parts
  it loads on their own (Wan's float32 VAE and image encoder). `needed_components` turns that into
  the components a model id must have an entry for.

benchmarks/run.py (`--scale full`, `--dry-run`), benchmarks/train.py and benchmarks/video_dry_run.py
build from here; tests/test_fullsize_configs.py checks the JSON against it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if importlib.util.find_spec("mora") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mora.data import fullsize_entries  # noqa: E402  (after the path above)


def entry_class(entry: dict) -> type:
    """The class an entry names ("diffusers.X" or "transformers.X")."""
    library, name = entry["class"].split(".", 1)
    return getattr(importlib.import_module(library), name)


def build(entry: dict, device: str = "meta", dtype: Any = None) -> Any:
    """The module of `entry` from its config, created directly on `device` (meta: no memory), eval mode.

    transformers classes are built from their `config_class`, diffusers classes from keyword arguments.
    """
    import torch

    cls = entry_class(entry)
    previous = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            if entry["class"].startswith("transformers."):
                module = cls(cls.config_class(**entry["config"]))
            else:
                module = cls(**entry["config"])
    finally:
        torch.set_default_dtype(previous)
    # SVD's one-element mix_factor parameters are made with torch.Tensor([...]), which ignores the device
    # context: moved too, so a forward on meta tensors meets no CPU tensor
    return module.to(device).eval()


def meta_params(entry: dict) -> int:
    """Parameters of `entry` built on the meta device."""
    return sum(p.numel() for p in build(entry).parameters())


def find_entry(model: str, component: str, entries: dict | None = None) -> tuple[str, dict]:
    """(key, entry) of the entry that fills `component` of `model`; KeyError naming both if none does."""
    entries = fullsize_entries() if entries is None else entries
    for key, entry in entries.items():
        if model in entry["models"] and entry["component"] == component:
            return key, entry
    raise KeyError(f"no full-size entry for {model}'s {component}")


# --- what a family's loader loads ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Load:
    """One `from_pretrained(cls, model, **kwargs)` call a family's `load` made."""

    cls: type
    model: str
    subfolder: str | None
    dtype: Any
    given: tuple[str, ...]  # components passed in (None or a module): not loaded from `model`


class _Recorder:
    """Stands in for `Runtime`: `pipeline` calls the loader with the family's GPU dtype."""

    def pipeline(self, family: str, model: str, loader, gpu_dtype: str = "float16", agent: str | None = None):
        import torch

        return loader(getattr(torch, gpu_dtype))


def _stub() -> Any:
    # what a loaded pipeline offers the family loaders that read it (SDXL's shared parts, Wan 2.2's check,
    # a flow shift's scheduler config)
    return SimpleNamespace(text_encoder_2=object(), vae=object(), config=SimpleNamespace(expand_timesteps=True),
                           scheduler=SimpleNamespace(config={}))


def recorded_loads(family: str, spec: Any) -> list[Load]:
    """Every `from_pretrained` call of family `family`'s `load(spec, rt)`, made without loading anything.

    Example:
        >>> [load.cls.__name__ for load in recorded_loads("ltx", get_preset("ltx").spec("extend"))]
        ['LTXConditionPipeline']
    """
    from mora.tools import weights
    from mora.tools.toolset import _MODULES

    loads: list[Load] = []

    def record(model: str):
        def served(cls, **kwargs):
            given = tuple(k for k, v in kwargs.items() if k not in ("dtype", "variant", "subfolder")
                          and (v is None or not isinstance(v, str | bool | int | float)))
            loads.append(Load(cls, model, kwargs.get("subfolder"), kwargs.get("dtype"), given))
            return _stub()
        return served

    models = [m for m in (spec.model, spec.refiner) if m]
    saved = {m: weights._IN_MEMORY.get(m) for m in models}
    try:
        weights._IN_MEMORY.update({m: record(m) for m in models})
        _MODULES[family].load(spec, _Recorder())
    finally:
        for m, old in saved.items():
            if old is None:
                weights._IN_MEMORY.pop(m, None)
            else:
                weights._IN_MEMORY[m] = old
    return loads


def _weighted(types: tuple) -> bool:
    import torch

    return any(isinstance(t, type) and issubclass(t, torch.nn.Module) for t in types)


def absent_components() -> dict[str, list[str]]:
    """model id -> the optional components its repo lacks (null in its model_index.json), from the JSON."""
    from mora.data import fullsize_architectures

    return fullsize_architectures()["_absent_components"]["models"]


def needed_components(loads: list[Load]) -> dict[tuple[str, str], Any]:
    """(model, component) -> dtype for every component with weights the loads take from a model.

    A pipeline needs its weighted components (typed `torch.nn.Module` in its signature) except those
    passed in and those its repo lacks (`absent_components`, each one the class lists as optional); a
    part with weights loaded on its own (a subfolder) is needed in its dtype.
    """
    from diffusers import DiffusionPipeline

    absent = absent_components()
    needed: dict[tuple[str, str], Any] = {}
    for load in loads:
        if isinstance(load.cls, type) and issubclass(load.cls, DiffusionPipeline):
            lacks = set(absent.get(load.model, ()))
            for name, types in load.cls._get_signature_types().items():
                if _weighted(types) and name not in load.given and name not in lacks:
                    needed.setdefault((load.model, name), load.dtype)
        elif load.subfolder and _weighted((load.cls,)):  # not a processor
            needed[(load.model, load.subfolder)] = load.dtype
    return needed


@contextlib.contextmanager
def quiet_transformers():
    """transformers' warnings about missing optional backends (torchvision) off while building."""
    import logging

    log = logging.getLogger("transformers")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)

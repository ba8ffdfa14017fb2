"""Device and dtype policy, the process-wide pipeline cache and its memory policy (where weights come
from: `mora.tools.weights`).

Pipelines load lazily on first use, once per process, keyed by (family, model, device, dtype,
profile). The caller chooses device and dtype; `auto` picks CUDA, then MPS, then CPU, and fp16/bf16
on a GPU, fp32 on a CPU. A pipeline is either moved to its device (profiles `fast`, `balanced`)
or offloaded (`low-vram`), never both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from mora import memory
from mora.config import PROFILES
from mora.errors import Cancelled, InputError
from mora.tools import parallel, speed
from mora.tools.quiet import no_library_bars
from mora.tools.weights import load_preset_loras, model_source

logger = logging.getLogger(__name__)

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.RLock()
# The memory policy's view of the cache (`mora.memory`): each pipeline's measured bytes on its device,
# the ones it moved to the CPU (moved back when used) and the ones it loaded in low-vram.
_RESIDENT: dict[tuple, memory.Resident] = {}
_OFFLOADED: set[tuple] = set()
_FORCED_LOW_VRAM: set[tuple] = set()
# The running job's "was I cancelled?" check (`cancellable`), read by each Runtime made under it: a
# context variable, so the runner sets it once for a job and no tool or family signature carries it.
_CANCELLED: ContextVar[Callable[[], bool] | None] = ContextVar("mora_cancelled", default=None)


@contextlib.contextmanager
def cancellable(cancelled: Callable[[], bool] | None) -> Iterator[None]:
    """Within this block, every `Runtime` made polls `cancelled()` after each denoising step.

    Example:
        >>> with cancellable(lambda: False):
        ...     Runtime(device="cpu").cancelled is not None
        True
    """
    token = _CANCELLED.set(cancelled)
    try:
        yield
    finally:
        _CANCELLED.reset(token)


@functools.cache
def takes_step_callback(cls: type) -> bool:
    """Whether the diffusers pipeline class's `__call__` takes `callback_on_step_end`."""
    return "callback_on_step_end" in inspect.signature(cls.__call__).parameters


def resolve_device(device: str | None = "auto") -> str:
    """`auto` -> `cuda`, else `mps`, else `cpu`; checks that an explicit device exists.

    Example:
        >>> resolve_device("cpu")
        'cpu'
    """
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device: {device!r} but no CUDA GPU is available; use --device cpu or auto")
        if ":" in device:
            index = device.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise InputError(
                    f"--device: {device!r} does not exist (this machine has {torch.cuda.device_count()} "
                    "CUDA device(s)); use cuda or cuda:N with a valid N"
                )
        return device
    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError("--device: 'mps' but MPS is not available; use --device cpu or auto")
        return device
    raise InputError(f"--device: {device!r} is not a device; use auto, cpu, cuda, cuda:N or mps")


_DTYPES = {"float16": "float16", "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float32": "float32", "fp32": "float32"}


def resolve_dtype(dtype: str | Any = "auto", device: str = "cpu", gpu_default: str = "float16"):
    """`auto` -> the family's GPU dtype on CUDA/MPS (fp16 or bf16), float32 on a CPU."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype or "auto").lower()
    if name == "auto":
        name = "float32" if device == "cpu" else gpu_default
        if name == "bfloat16" and device == "mps":
            name = "float16"
    if name not in _DTYPES:
        raise InputError(f"dtype: {dtype!r} is not supported; use auto, float16, bfloat16 or float32")
    return getattr(torch, _DTYPES[name])


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise InputError(f"--profile: {profile!r} is not a profile; use one of {', '.join(PROFILES)}")
    return profile


def get_pipeline(key: tuple, loader: Callable[[], Any]) -> Any:
    """Return the cached pipeline for `key`, calling `loader()` once on first use."""
    with _LOCK:
        pipe = _CACHE.get(key)
        if pipe is None:
            logger.info("loading %s %s on %s (%s, profile %s)", *key)
            pipe = loader()
            _CACHE[key] = pipe
        return pipe


def cached_keys() -> list[tuple]:
    """Keys of the pipelines loaded in this process."""
    with _LOCK:
        return list(_CACHE)


def release(family: str | None = None) -> int:
    """Drop cached pipelines (all, or one family's) and free their memory; returns how many.

    Use between agents on a small GPU: the next call loads what it needs again.
    """
    with _LOCK:
        keys = [k for k in _CACHE if family is None or k[0] == family]
    return _drop(keys, f" of family {family}" if family else "")


def _drop(keys: list[tuple], what: str = "") -> int:
    """Remove these pipelines from the cache and free their memory; returns how many."""
    with _LOCK:
        for k in keys:
            del _CACHE[k]
            _RESIDENT.pop(k, None)
            _OFFLOADED.discard(k)
            _FORCED_LOW_VRAM.discard(k)
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
    if keys:
        logger.info("released %d pipeline(s)%s", len(keys), what)
    return len(keys)


def place(pipe: Any, device: str, profile: str) -> Any:
    """Put a pipeline on its device for a profile (see `mora.tools.profiles`)."""
    from mora.tools.profiles import apply

    apply(pipe, device, profile)
    return pipe


def variant(spec: Any, dtype: Any) -> str | None:
    """The weights variant to download: the repo's fp16 files when running in fp16 (half the download)."""
    import torch

    return spec.settings.fp16_variant if dtype == torch.float16 else None


def generator(seed: int):
    """A CPU generator: the same seed gives the same noise on every device."""
    import torch

    return torch.Generator(device="cpu").manual_seed(int(seed))


def _models(model: str) -> frozenset[str]:
    """The model ids a pipeline cache name holds: `a`, `a#variant`, `refiner+base`."""
    return frozenset(part.split("#", 1)[0] for part in model.split("+"))


class Runtime:
    """Where and how pipelines run: device, dtype setting, profile, progress bars.

    Args:
        device: `auto`, `cpu`, `cuda`, `cuda:N` or `mps`.
        dtype: `auto` (fp16/bf16 on GPU, fp32 on CPU), `float16`, `bfloat16` or `float32`.
        profile: one of `mora.config.PROFILES` (`mora.tools.profiles`; `auto` picks one by free GPU memory).
        progress: show the diffusion step bars.
        adapter: a trained adapter (`mora.adapters.load_adapter`): its LoRA goes into the pipelines of
            the agents it trained and their conditioning gets its modulation tokens. Duck-typed
            (`has`, `apply`, `append`, `sha256`): the tools never import the training package.
        cancelled: polled after every denoising step (`step_end`); True stops the call with
            `mora.errors.Cancelled`. Default: the job's, set by the runner (`cancellable`).
        memory_budget: bytes the models' weights may take on the device before the memory policy
            (`mora.memory`) releases or offloads others; default: a CUDA card's memory less the working
            reserve, no limit on a CPU or MPS.
        cache, cache_threshold, attention: the step cache and attention backend (`mora.tools.speed`);
            resolved here, so an unavailable one is an InputError before any load.
        gpus: the processes each denoiser's attention is split across (`mora.tools.parallel`; 1: none).
    """

    def __init__(self, device: str = "auto", dtype: str = "auto", profile: str = "balanced", progress: bool = True,
                 adapter: Any = None, cancelled: Callable[[], bool] | None = None, memory_budget: int | None = None,
                 cache: str | None = None, cache_threshold: float | None = None, attention: str = "auto", gpus: int = 1):
        self.gpus = gpus
        self.adapter = adapter  # a trained adapter (mora.adapters.Adapter) or None
        self.cancelled = cancelled if cancelled is not None else _CANCELLED.get()
        self.device = resolve_device(device)
        self.dtype_setting = dtype
        self.profile = check_profile(profile)
        if self.profile == "auto":
            from mora.tools.profiles import auto_profile

            self.profile = auto_profile(self.device)
        self.speed = speed.resolve(cache, cache_threshold, attention, self.profile, self.device)
        self.speed_applied: dict[str, dict] = {}  # family -> the cache and backend its pipeline runs with
        self.progress = progress
        self.preset_loras: dict[str, tuple] = {}  # model id -> a preset's LoRA adapters (mora.config.LoraAdapter)
        self.memory_budget = memory_budget  # bytes weights may take on the device (None: the card's, mora.memory)
        self.needed_later: Callable[[], list[str]] | None = None  # the models the rest of the route uses
        self.memory_events: list[dict] = []  # the memory policy's decisions (mora.memory.Decision.record)
        self.in_use: set[tuple] = set()  # pipelines the running step got: never moved during it (begin_step)
        resolve_dtype(dtype, self.device)  # validate now, not at first load

    def dtype(self, gpu_default: str = "float16"):
        return resolve_dtype(self.dtype_setting, self.device, gpu_default)

    def modulated(self, agent: str | None) -> bool:
        """Whether the adapter trained `agent` (its pipeline carries LoRA, its conditioning z)."""
        return agent is not None and self.adapter is not None and self.adapter.has(agent)

    def pipeline(self, family: str, model: str, loader: Callable[[Any], Any], gpu_dtype: str = "float16",
                 agent: str | None = None) -> Any:
        """The cached pipeline for (family, model, device, dtype, profile); `loader(dtype)` builds it.

        With an adapter that trained `agent`, the pipeline gets the adapter's LoRA and is cached
        under a key naming the adapter, so the plain pipeline and the adapted one never mix.
        """
        dtype = self.dtype(gpu_dtype)
        adapted = self.modulated(agent)
        name = f"{model}+adapter:{self.adapter.sha256[:16]}" if adapted else model
        loras = self.preset_loras.get(model.split("#", 1)[0], ())
        if loras:  # the preset's adapters are part of what is loaded, so of the cache key
            name += "+lora:" + ",".join(f"{a.source}@{a.weight:g}" for a in loras)
        key = (family, name, self.device, str(dtype).removeprefix("torch."), self.profile + self.speed.key
               + (f"+gpus:{self.gpus}" if self.gpus > 1 else ""))

        def load():
            with no_library_bars():
                pipe = loader(dtype)
                if loras:
                    load_preset_loras(pipe, loras)
                if adapted:
                    self.adapter.apply(pipe, agent)
                speed.apply(pipe, family, self.speed)  # before placing: `fast` compiles what the hooks wrap
                parallel.enable(pipe, family, self.gpus)  # --gpus N: the denoisers' attention split across processes
                return place(pipe, self.device, placed)

        with _LOCK:
            key, placed = self._make_room(key, model, dtype)
            pipe = get_pipeline(key, load)
            if key not in _RESIDENT:
                self._measure(key, model, pipe, placed)
            self.in_use.add(key)
        self.speed_applied[family] = getattr(pipe, "_mora_speed", None) or speed.applied(self.speed, family)
        pipe.set_progress_bar_config(disable=not self.progress)  # a finished bar stays: its last state drawn
        return pipe

    def begin_step(self) -> None:
        """A tool step starts: the previous step's pipelines may move again."""
        self.in_use = set()

    def reset_step_state(self) -> None:
        """Clear the step caches' state in the pipelines this step used. diffusers clears it at the end of
        a completed call only, so a call stopped half-way (cancelled, an error) would hand the next call
        stale activations to reuse."""
        for key in self.in_use:
            for component in getattr(_CACHE.get(key), "components", {}).values():
                if getattr(component, "is_cache_enabled", False):
                    component._reset_stateful_cache()

    def _make_room(self, key: tuple, model: str, dtype: Any) -> tuple[tuple, str]:
        """Apply the memory policy before `key` loads (or moves back from the CPU); returns the key to use
        and the profile to place it in (low-vram when the pipeline alone is over the budget)."""
        from mora.tools.residency import device_budget, estimate

        twin = (*key[:4], "low-vram" + key[4].removeprefix(self.profile))  # the same speed options and --gpus
        if key in _CACHE and key not in _OFFLOADED:
            return key, self.profile
        if twin in _FORCED_LOW_VRAM:
            return twin, "low-vram"
        incoming = _RESIDENT[key].bytes if key in _OFFLOADED else estimate(model, dtype.itemsize, model_source)
        budget = device_budget(self.device, self.memory_budget)
        busy = _models(model).union(*(_RESIDENT[k].models for k in self.in_use if k in _RESIDENT))  # this step's
        resident = [dataclasses.replace(r, pinned=bool(r.models & busy)) for k, r in _RESIDENT.items()
                    if k in _CACHE and k not in _OFFLOADED and k != key]
        later = None if self.needed_later is None else set(self.needed_later())
        decision = memory.plan(resident, incoming, budget, needed_later=later, can_offload=self.device != "cpu")
        if decision.release or decision.offload or decision.low_vram:
            logger.info("memory policy before %s %s: %s", key[0], model, decision.record())
            self.memory_events.append({"load": f"{key[0]} {model}", **decision.record(), "budget_bytes": budget,
                                       "incoming_bytes": incoming})
        for k in decision.offload:
            _CACHE[k].to("cpu")
            _OFFLOADED.add(k)
        if decision.release or decision.offload:
            _drop(decision.release, " (memory policy)")  # also empties CUDA's cache after offloading
        if key in _OFFLOADED:
            _CACHE[key].to(self.device)
            _OFFLOADED.discard(key)
        elif decision.low_vram and self.profile != "low-vram":
            _FORCED_LOW_VRAM.add(twin)
            return twin, "low-vram"
        return key, self.profile

    def _measure(self, key: tuple, model: str, pipe: Any, placed: str) -> None:
        """Record what a newly loaded pipeline keeps on the device (tensors shared with others not counted)."""
        from mora.tools.residency import device_bytes, pointers

        others = pointers(p for k, p in _CACHE.items() if k != key)
        size, _ = device_bytes(pipe, self.device, others)
        _RESIDENT[key] = memory.Resident(key, _models(model), size, offloadable=placed in ("balanced", "fast"))


    def step_end(self, pipe: Any, then: Callable[..., dict] | None = None) -> dict:
        """The keyword arguments that make a pipeline call stop within one denoising step when the job is cancelled.

        Every family passes them to its pipeline call: `pipe(..., **rt.step_end(pipe))`. The callback
        raises `Cancelled` when `self.cancelled()` says so, else runs `then` (a family's own
        `callback_on_step_end` function, if it has one) and returns what diffusers expects.

        Example:
            >>> image = pipe(prompt="a fox", num_inference_steps=50, **rt.step_end(pipe)).images[0]
        """
        check = self.cancelled
        if check is None or not takes_step_callback(type(pipe)):
            return {"callback_on_step_end": then} if then is not None else {}

        def on_step_end(pipeline: Any, step: int, timestep: Any, tensors: dict) -> dict:
            if check():
                raise Cancelled(f"cancelled at denoising step {step + 1} of {type(pipeline).__name__}")
            return then(pipeline, step, timestep, tensors) if then is not None else tensors

        return {"callback_on_step_end": on_step_end}

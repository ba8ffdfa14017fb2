"""Device and dtype policy, model loading and the process-wide pipeline cache.

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
from pathlib import Path
from typing import Any

from mora import memory
from mora.config import PROFILES
from mora.errors import Cancelled, InputError, ModelUnavailableError, one_line
from mora.tools import parallel, speed
from mora.tools.load_errors import read_weights
from mora.tools.quiet import no_library_bars

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


def load_preset_loras(pipe: Any, loras: tuple) -> Any:
    """Load a preset's LoRA adapters into `pipe` (diffusers' `load_lora_weights`) at their weights.

    A Hub adapter (`repo` and `file`) is read from the local Hugging Face cache first, then the Hub;
    if neither has it, `ModelUnavailableError` names it and the fixes, as for models (`from_pretrained`).
    """
    names = []
    for index, lora in enumerate(loras):
        name = f"preset_{index}"
        if lora.repo:
            _load_hub_lora(pipe, lora, name)
        else:
            path = Path(lora.path)
            where = {"weight_name": path.name} if path.is_file() else {}
            pipe.load_lora_weights(str(path.parent if path.is_file() else path), adapter_name=name, **where)
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[lora.weight for lora in loras])
    logger.info("loaded preset LoRA adapters %s", ", ".join(lora.source for lora in loras))
    return pipe


def _load_hub_lora(pipe: Any, lora: Any, name: str) -> None:
    """`load_lora_weights(repo, weight_name=file)`: tiny or local folders as they are, else cache then Hub."""
    source = model_source(lora.repo)
    if Path(source).is_dir():
        pipe.load_lora_weights(source, weight_name=lora.file, adapter_name=name)
        return
    hub_errors = _hub_errors()
    try:
        pipe.load_lora_weights(source, weight_name=lora.file, adapter_name=name, local_files_only=True)
        return
    except hub_errors as local_error:
        logger.debug("%s not in the local Hugging Face cache (%s); trying the Hub", lora.source, local_error)
    try:
        pipe.load_lora_weights(source, weight_name=lora.file, adapter_name=name)
    except hub_errors as error:
        raise ModelUnavailableError(
            f"LoRA {lora.file!r} of {lora.repo!r} is not available: no local copy and the Hugging Face Hub could "
            f"not provide it ({one_line(error, limit=120)}); {download_fix([f'{lora.repo} {lora.file}'])}"
        ) from error


def model_source(model: str) -> str:
    """Turn a preset's model reference into something `from_pretrained` takes.

    `tiny/<name>` is built on first use; an existing local directory is used as is; anything
    else is a Hub id.
    """
    if model.startswith("tiny/"):
        from mora.tools import tiny_modern

        if model.removeprefix("tiny/") in tiny_modern.BUILDERS:  # the modern families' toy models
            return str(tiny_modern.ensure(model))
        if model.removeprefix("tiny/") in tiny_modern.LORA_BUILDERS:  # toy few-step LoRAs
            return str(tiny_modern.ensure_lora(model))
        from mora.tools.tiny import ensure_tiny

        return str(ensure_tiny(model))
    return str(Path(model).expanduser()) if Path(model).expanduser().is_dir() else model


# model id -> builder(cls, **from_pretrained_kwargs) returning a pipeline built in memory.
_IN_MEMORY: dict[str, Callable[..., Any]] = {}


def register_model(model: str, build: Callable[..., Any]) -> None:
    """Serve `model` from `build(cls, **kwargs)` instead of loading weights (benchmarks with random weights).

    The pipeline then goes through the same cache, placement and profiles as a loaded one.
    """
    _IN_MEMORY[model] = build


# The Hub's HTTP errors come from whichever HTTP client huggingface_hub uses: `httpx2` (hub 2.x),
# `httpx` (hub 1.x) or `requests` (hub 0.x); each module's base error class, when it is installed.
_HTTP_ERROR_CLASSES = (("httpx2", ("HTTPError", "InvalidURL")), ("httpx", ("HTTPError", "InvalidURL")),
                       ("requests", ("RequestException",)))


def _hub_errors() -> tuple[type[BaseException], ...]:
    """What "these weights are not to be had" looks like: hub errors, offline mode, missing files,
    and every error of the HTTP client (no DNS, refused, timed out, proxy, TLS, a bad HF_ENDPOINT).

    Anything else (a TypeError in a pipeline class, a bug of ours) is not caught: it is a bug, not
    "download the model".
    """
    import importlib

    from huggingface_hub import errors

    found: list[type[BaseException]] = [OSError, errors.HfHubHTTPError, errors.OfflineModeIsEnabled,
                                        errors.HFValidationError]
    for module_name, names in _HTTP_ERROR_CLASSES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found += [getattr(module, name) for name in names if isinstance(getattr(module, name, None), type)]
    return tuple(found)


def download_fix(models: list[str]) -> str:
    """The fixes for missing weights, as one clause (the `hf` command ships with huggingface_hub >= 1.0)."""
    return ("run with --preset tiny for an offline smoke test; download them where the Hub is reachable ("
            + "; ".join(f"hf download {m}" for m in models)
            + ") and point HF_HOME at that cache; or give a local directory in place of each id")


def from_pretrained(cls: type, model: str, **kwargs: Any):
    """`cls.from_pretrained(model, **kwargs)` that turns "weights not available" into one clear error.

    Tries the local Hugging Face cache first (no network), then the Hub. If both fail, raises
    `ModelUnavailableError` naming the model and the fixes instead of the hub client's traceback.
    Weights that are here but cannot be read (a corrupt file, a full disk, no permission) raise
    `ModelLoadError` saying so, at once: the Hub would hand back the same cached files.
    """
    if model in _IN_MEMORY:
        return _IN_MEMORY[model](cls, **kwargs)
    source = model_source(model)
    if Path(source).is_dir():
        return read_weights(cls, model, source, **kwargs)
    hub_errors = _hub_errors()
    try:
        return read_weights(cls, model, source, local_files_only=True, **kwargs)
    except hub_errors as local_error:
        logger.debug("%s not in the local Hugging Face cache (%s); trying the Hub", model, local_error)
    try:
        return read_weights(cls, model, source, **kwargs)
    except hub_errors as error:
        raise ModelUnavailableError(
            f"model {model!r} is not available: no local copy and the Hugging Face Hub could not provide it "
            f"({one_line(error, limit=120)}); {download_fix([model])}"
        ) from error


HUB_REQUEST_TIMEOUT_S = 5.0  # one metadata request to the Hub
HUB_CHECK_DEADLINE_S = 10.0  # the whole availability check, however many models and whatever the network does


def model_local(model: str, filename: str = "model_index.json") -> bool:
    """Whether `model` loads without the network: tiny, in memory, a local directory or in the Hugging
    Face cache (a few file-system lookups; never a request).

    Example:
        >>> model_local("tiny/svd")
        True
    """
    if model.startswith("tiny/") or model in _IN_MEMORY or Path(model).expanduser().is_dir():
        return True
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, filename)  # a LoRA repo: its weight file
    return isinstance(cached, str) and Path(cached).is_file()


def model_available(model: str, filename: str = "model_index.json") -> bool:
    """Whether `model` can load without surprises: local (`model_local`), or on a Hub this machine
    reaches (one metadata request, `HUB_REQUEST_TIMEOUT_S` per network phase; never in offline
    mode). Every network failure is "not available".

    Example:
        >>> model_available("tiny/svd")
        True
    """
    if model_local(model, filename):
        return True
    from huggingface_hub import constants, model_info

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        model_info(model, timeout=HUB_REQUEST_TIMEOUT_S)
        return True
    except _hub_errors() as error:
        logger.debug("%s: the Hub does not provide it here (%s: %s)", model, type(error).__name__, error)
        return False


def _availability(models: list[str], deadline_s: float, files: dict[str, str] | None = None) -> dict[str, bool]:
    """model -> available: local models at once in this thread, each other one (a Hub request) in its
    own daemon thread, all within `deadline_s`.

    Local models take no thread: `mora serve` checks every submitted job, and a thread per model
    per request made those checks queue on the GIL. httpx's timeouts bound each network phase, not
    a whole request (a server that trickles bytes never trips them), so the deadline is enforced
    here: a model whose check has not ended by then counts as unavailable and its thread is left to
    end on its own (daemon: it never holds the process open). A check that raised something other
    than a network error re-raises here.
    """
    import threading
    import time

    files = files or {}  # repo -> the file to look for (LoRA repos); a model: its model_index.json
    named = {m: (files[m],) if m in files else () for m in models}
    results: dict[str, bool] = {m: True for m in models if model_local(m, *named[m])}
    failures: dict[str, BaseException] = {}

    def check(model: str) -> None:
        try:
            results[model] = model_available(model, *named[model])
        except BaseException as error:  # handed to the caller's thread, which re-raises it
            failures[model] = error

    threads = [threading.Thread(target=check, args=(m,), name=f"mora-hub-check-{m}", daemon=True)
               for m in models if m not in results]
    for thread in threads:
        thread.start()
    end = time.monotonic() + deadline_s
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    if failures:
        raise next(iter(failures.values()))
    late = [m for m in models if m not in results]
    if late:
        logger.debug("the Hub did not answer within %gs for %s", deadline_s, ", ".join(late))
    return {m: results.get(m, False) for m in models}


def check_models(models: list[str], preset_name: str, deadline_s: float = HUB_CHECK_DEADLINE_S,
                 loras: dict[str, str] | None = None) -> None:
    """Every model (and Hub LoRA repo, `loras`: repo -> file) a route needs is available, checked before its
    first step; one line if not.

    The whole check ends within `deadline_s` whatever the network does (no DNS, refused, a server
    that never answers, HTTP 5xx, a proxy error): a model not confirmed by then is missing.

    Raises:
        ModelUnavailableError: naming every missing model and the fixes (CLI exit 2).

    Example:
        >>> check_models(["tiny/svd"], "tiny")
    """
    loras = loras or {}
    available = _availability(list(dict.fromkeys([*models, *loras])), deadline_s, loras)
    missing = [m for m, ok in available.items() if not ok]
    if missing:
        raise ModelUnavailableError(
            f"--preset: {preset_name} needs {len(missing)} model(s) that are neither on this machine nor reachable "
            f"on the Hugging Face Hub: {', '.join(missing)}; "
            f"{download_fix([f'{m} {loras[m]}' if m in loras else m for m in missing])}"
        )


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

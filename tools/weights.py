"""Where a pipeline's weights come from, and whether they can be had before a job starts.

- `model_source`: a preset's model reference (`tiny/<name>`, a local directory, a Hub id) as
  `from_pretrained` takes it; `register_model` serves an id from a builder in memory (benchmarks).
- `from_pretrained` and `load_preset_loras`: the local Hugging Face cache first, then the Hub; weights
  that cannot be had are one `ModelUnavailableError` naming them and the fixes.
- `check_models`: every model and LoRA of a route available (or not), within a deadline, before the
  first step.

The pipeline cache, devices and profiles are `mora.tools.runtime`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mora.errors import ModelUnavailableError, one_line
from mora.tools.load_errors import read_weights

logger = logging.getLogger(__name__)


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

"""Step caches and attention backends: diffusers 0.42's hooks on a pipeline's denoiser(s).

- `--cache` (`mora.config.CACHES`): `first-block` (FirstBlockCache: when the first transformer block's
  residual changed by less than `--cache-threshold` since the last step, the other blocks are skipped and
  their cached residual reused), `taylor` (TaylorSeer: attention outputs predicted by a Taylor series
  between full steps; no threshold), `mag` (MagCache: needs magnitude ratios calibrated per model, which
  diffusers ships for Flux only, so every family here refuses it), `none`.
  Caches are methods of diffusers' transformer models (`CacheMixin.enable_cache`), hooked on their
  registered transformer blocks and keyed by the cache context the transformer pipelines set; the UNet
  families (SDXL, InstructPix2Pix, SVD) have neither, so they refuse an explicit `--cache`.
  Not given, the cache is the profile's: `fast` turns on `FAST_CACHE` on the families that take it.
- `--attention` (`mora.config.ATTENTION_BACKENDS`): `sdpa` (torch's scaled_dot_product_attention,
  diffusers' `native` backend and its default: nothing is set), `flash` (flash-attn), `sage`
  (SageAttention, 8-bit: approximate), `auto` (flash where it is installed on a CUDA device, else sdpa:
  the fastest exact one). A backend is set with `set_attention_backend` on the transformer families'
  denoisers, whose attention processors dispatch through diffusers' backends; UNet attention calls
  torch's SDPA directly, so those families run sdpa.

An unavailable choice is an InputError (exit 2) before anything loads: `resolve` (options and device)
and `check_route` (the route's families). What each pipeline got is `applied(speed, family)`,
recorded per tool call in the manifest. This module imports no torch at import time.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

from mora.config import ATTENTION_BACKENDS, CACHES
from mora.errors import InputError

logger = logging.getLogger(__name__)

# What `fast` turns on. FirstBlockCache is the usual pick for video transformers; the choice awaits GPU
# measurement (issue 33 item 5, benchmarks pending): change it here when the benchmarks say otherwise.
FAST_CACHE = "first-block"
THRESHOLDS = {"first-block": 0.05}  # the caches that take --cache-threshold, with diffusers 0.42's default
# Families whose denoiser is a diffusers transformer (CacheMixin, attention dispatched through backends).
TRANSFORMER_FAMILIES = ("ltx", "wan", "wan22", "wan-vace", "qwen-image", "qwen-image-edit")
# Wan VACE adds control hints to the hidden states between its blocks: a skipped chain of blocks returns
# a cached residual that already holds them, and the hints would be added twice; TaylorSeer predicts
# attention outputs inside each block, so it composes with the hints.
_SKIPS_BLOCKS = ("first-block", "mag")
_NO_BLOCK_SKIPPING = ("wan-vace",)
# family -> calibrated MagCache ratios: none of Mora's families has them (diffusers 0.42 ships FLUX_MAG_RATIOS only).
MAG_RATIOS: dict[str, Any] = {}
BACKENDS = {"sdpa": "native", "flash": "flash", "sage": "sage"}  # ours -> diffusers' AttentionBackendName
_PACKAGES = {"flash": ("flash_attn", "pip install flash-attn --no-build-isolation"),
             "sage": ("sageattention", "pip install sageattention")}
_DENOISERS = ("transformer", "transformer_2")  # Wan 2.2 A14B has a second expert


def takes_cache(family: str, cache: str) -> bool:
    """Whether `family`'s denoiser takes `cache` (`none` always)."""
    if cache == "none":
        return True
    if family not in TRANSFORMER_FAMILIES or (cache in _SKIPS_BLOCKS and family in _NO_BLOCK_SKIPPING):
        return False
    return cache != "mag" or family in MAG_RATIOS


@dataclass(frozen=True)
class Speed:
    """A job's cache and attention backend, resolved (`resolve`).

    Args:
        cache: one of `CACHES`; the profile's when the job gave none.
        threshold: the cache's threshold (None for a cache without one).
        attention: the backend, `sdpa`, `flash` or `sage` (`auto` resolved).
        explicit: the job asked for this cache itself (refused where a family cannot take it), rather
            than getting the profile's (applied where a family takes it).
    """

    cache: str = "none"
    threshold: float | None = None
    attention: str = "sdpa"
    explicit: bool = False

    @property
    def key(self) -> str:
        """The part of a pipeline cache key: empty for today's defaults, so their keys stay as they were."""
        cache = "" if self.cache == "none" else f"+cache:{self.cache}" + (f"@{self.threshold:g}" if self.threshold else "")
        return cache + ("" if self.attention == "sdpa" else f"+attention:{self.attention}")


def applied(speed: Speed, family: str) -> dict:
    """What `family`'s pipeline runs with: `{"cache": "first-block@0.05" or "none", "attention": ...}`.

    Example:
        >>> applied(Speed("first-block", 0.05), "sdxl")
        {'cache': 'none', 'attention': 'sdpa'}
    """
    cache = "none"
    if speed.cache != "none" and takes_cache(family, speed.cache):
        cache = speed.cache + (f"@{speed.threshold:g}" if speed.threshold is not None else "")
    return {"cache": cache, "attention": speed.attention if family in TRANSFORMER_FAMILIES else "sdpa"}


def check_choices(cache: str | None, threshold: float | None, profile: str) -> None:
    """What the options alone can tell: `mag` has no ratios, a threshold needs a cache that has one.

    Example:
        >>> check_choices("taylor", 0.1, "balanced")
        InputError: cache_threshold: 0.1 is for first-block, and taylor has no threshold; drop ...
    """
    if cache == "mag":
        raise InputError("'mag' needs magnitude ratios calibrated for each model, and diffusers 0.42 ships them for "
                         "Flux only, none for Mora's families; use --cache first-block or taylor", param="cache")
    chosen = cache if cache is not None else FAST_CACHE if profile == "fast" else None if profile == "auto" else "none"
    if threshold is not None and chosen is not None and chosen not in THRESHOLDS:
        raise InputError(f"{threshold:g} is for {' or '.join(THRESHOLDS)}, and this job's cache ({chosen}) has no "
                         f"threshold; add --cache {next(iter(THRESHOLDS))} or drop --cache-threshold",
                         param="cache_threshold")


def check_route(cache: str | None, attention: str, families: dict[str, str], preset: str) -> None:
    """An explicit cache or backend every model of the route can take; `families` is role -> family.

    Raises:
        InputError: naming the first family that cannot, and the fix.
    """
    for role, family in families.items():
        if cache is not None and not takes_cache(family, cache):
            why = ("it adds control hints between its blocks, which a skipped run of blocks would add twice"
                   if family in _NO_BLOCK_SKIPPING else "it is a UNet; diffusers 0.42's step caches hook the "
                   "blocks of transformer models")
            raise InputError(f"{cache!r} cannot run on {family} (preset {preset}'s {role} model): {why}; use "
                             f"--cache none, or a preset whose models are transformers (modern)", param="cache")
        if attention in _PACKAGES and family not in TRANSFORMER_FAMILIES:
            raise InputError(f"{attention!r} cannot run on {family} (preset {preset}'s {role} model): its UNet "
                             "attention calls torch's SDPA directly; use --attention auto or sdpa", param="attention")


def best_attention(device: str) -> str:
    """`auto`: flash on a CUDA device with flash-attn installed, else sdpa (sage is approximate: never auto)."""
    return "flash" if device.startswith("cuda") and importlib.util.find_spec(_PACKAGES["flash"][0]) else "sdpa"


def check_attention(attention: str, device: str) -> str:
    """The backend `attention` resolves to on `device`; one line if it cannot run there.

    Example:
        >>> check_attention("auto", "cpu")
        'sdpa'
    """
    if attention not in ATTENTION_BACKENDS:
        raise InputError(f"{attention!r} is not a backend; use one of {', '.join(ATTENTION_BACKENDS)}",
                         param="attention")
    if attention == "auto":
        return best_attention(device)
    if attention in _PACKAGES:
        module, install = _PACKAGES[attention]
        if not device.startswith("cuda"):
            raise InputError(f"{attention!r} needs a CUDA GPU and the device is {device}; use --attention auto or "
                             "sdpa, or run on a CUDA device", param="attention")
        if importlib.util.find_spec(module) is None:
            raise InputError(f"{attention!r} needs the {module} package, which is not installed; {install}, or use "
                             "--attention auto or sdpa", param="attention")
    return attention


def resolve(cache: str | None, threshold: float | None, attention: str, profile: str, device: str) -> Speed:
    """The job's `Speed` on `device` in `profile` (resolved: not `auto`).

    Example:
        >>> resolve(None, None, "auto", "fast", "cpu")
        Speed(cache='first-block', threshold=0.05, attention='sdpa', explicit=False)
    """
    if cache is not None and cache not in CACHES:
        raise InputError(f"{cache!r} is not a cache; use one of {', '.join(CACHES)}", param="cache")
    check_choices(cache, threshold, profile)  # profile resolved here: not auto
    chosen = cache if cache is not None else FAST_CACHE if profile == "fast" else "none"
    return Speed(cache=chosen, threshold=threshold if threshold is not None else THRESHOLDS.get(chosen),
                 attention=check_attention(attention, device), explicit=cache is not None)


def apply(pipe: Any, family: str, speed: Speed) -> dict:
    """Put `speed`'s cache and backend on `pipe`'s denoiser(s) where `family` takes them; returns what was
    applied (`applied`, less a profile's cache a toy model cannot take), also kept as `pipe._mora_speed`.

    Called before the profile places the pipeline, so `fast`'s compile sees the hooks.
    """
    record = applied(speed, family)
    denoisers = [d for d in (getattr(pipe, name, None) for name in _DENOISERS) if d is not None]
    if record["cache"] != "none" and not all(_has_blocks(d, speed) for d in denoisers):
        record["cache"] = "none"  # the profile's cache, where the model cannot take it (`_has_blocks`)
    if record["cache"] != "none":
        for denoiser in denoisers:
            denoiser.enable_cache(_cache_config(speed))
    if record["attention"] != "sdpa":
        for denoiser in denoisers:
            denoiser.set_attention_backend(BACKENDS[record["attention"]])
    if record != {"cache": "none", "attention": "sdpa"}:
        logger.info("%s: cache %s, attention %s", family, record["cache"], record["attention"])
    pipe._mora_speed = record
    return record


def _has_blocks(denoiser: Any, speed: Speed) -> bool:
    """Whether the model has blocks for the cache to skip. FirstBlockCache decides on the first block and
    caches the rest: a one-block model has no rest (diffusers 0.42 fails with "pop from empty list"); only
    toy models are that small (tiny-ltx). An explicit --cache is refused there, the profile's is not applied."""
    if speed.cache != "first-block":
        return True
    from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS

    blocks = sum(len(m) for name, m in denoiser.named_children() if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS)
    if blocks < 2 and speed.explicit:
        raise InputError(f"'first-block' skips the blocks after the first, and this {type(denoiser).__name__} has "
                         f"{blocks}; use --cache none or taylor", param="cache")
    return blocks >= 2


def _cache_config(speed: Speed) -> Any:
    from diffusers import FirstBlockCacheConfig, TaylorSeerCacheConfig

    if speed.cache == "first-block":
        return FirstBlockCacheConfig(threshold=speed.threshold)
    return TaylorSeerCacheConfig()

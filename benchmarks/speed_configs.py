"""The speed options side by side (issue 33 item 5): `benchmarks/run.py --speed`.

One job (text-to-video: the preset's `text_to_image`, then its `image_to_video`), one device, one process,
one row per configuration, each in a fresh `mora.Toolset` (models released in between):

- `default`: the first preset of `--presets` as a job runs it today: profile balanced, cache none, sdpa.
  Every ratio is against this row.
- one row per cache of `mora.config.CACHES` other than none (`--cache-threshold` for the caches that take
  one); one per attention backend other than auto and sdpa (auto is one of the others: flash where it
  is installed on a CUDA device, else sdpa, the default row).
- one row per further preset of `--presets`, run as the default row is (a name not defined in this
  checkout is skipped with a note: `modern-fast` is being added).

A configuration the code refuses is a row saying so, with the code's own one-line reason (the checks
the job's doors make: `speed.resolve`, `speed.check_route`), and nothing runs for it: `mag` for every
family today, flash and sage on a CPU or without their packages, a cache on a UNet family.

Per row: seconds per clip (the timed run of the job, after one warm-up run), the peak memory of its
tool calls (`tool_calls[].peak_memory`: the CUDA allocator's peak on a GPU, the process's peak RSS on a
CPU), and the denoisers' transformer blocks: block calls (forward hooks on each block), blocks run
(calls in which any of the block's layers ran: a block the cache skips is still called, by the cache's
hook, but runs none of its layers) and layer calls (calls of the modules inside the blocks: TaylorSeer
predicts the attention modules' outputs, so it saves the layers inside them, not whole blocks).

`--scale full` serves the transformer presets' models (Qwen-Image-2512, Wan 2.2 TI2V-5B) from their
public configs in `mora.data` with random weights, under their own model ids, as run.py does for the
paper's models (`register_full_modern`); tokenizers are the tiny in-code ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import fullsize  # noqa: E402  (benchmarks/)

from mora.config import ATTENTION_BACKENDS, CACHES, PRESETS  # noqa: E402

ROLES = ("text_to_image", "image_to_video")  # the job: a first frame, then the clip
PRESETS_BY_SCALE = {"tiny": "tiny-modern,tiny-modern-fast", "full": "modern,modern-fast"}
DEFAULT = dict(profile="balanced", cache="none", attention="sdpa")  # today's default: what every ratio is against
DEFAULT_CACHE, DEFAULT_ATTENTION = DEFAULT["cache"], DEFAULT["attention"]
CACHE_ROWS = tuple(c for c in CACHES if c != DEFAULT_CACHE)
# auto resolves to one of the others (flash or sdpa), so it has no row of its own
ATTENTION_ROWS = tuple(a for a in ATTENTION_BACKENDS if a not in ("auto", DEFAULT_ATTENTION))
HEADERS = ["config", "preset", "cache", "attention", "status", "s/clip", "peak GB", "vs default",
           "block calls", "blocks run", "blocks skipped", "layer calls", "layers vs default"]
GB = 1e9
PROMPT = "a red fox running through fresh snow at sunrise, cinematic, detailed fur"


@dataclasses.dataclass(frozen=True)
class Config:
    """One row: the preset and the options its jobs get (`threshold` None: the cache's default)."""

    name: str
    preset: str
    cache: str = DEFAULT_CACHE
    threshold: float | None = None
    attention: str = DEFAULT_ATTENTION


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speed", action="store_true",
                        help="time the speed configurations side by side instead of the profiles: the default, "
                             "each cache, each attention backend and each preset of --presets (benchmarks/README.md)")
    parser.add_argument("--presets", help="with --speed: comma-separated presets, the first the default row's "
                                          f"(default: {PRESETS_BY_SCALE['tiny']} at tiny scale, "
                                          f"{PRESETS_BY_SCALE['full']} at full); a name not defined is skipped")
    parser.add_argument("--cache-threshold", type=float,
                        help="with --speed: the threshold of the caches that take one (default: the cache's own)")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`args.presets` as a list (the scale's default when not given); errors through `parser.error`."""
    if not args.speed:
        for flag in ("presets", "cache_threshold"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag.replace('_', '-')}: only with --speed; add --speed or drop it")
        return
    names = [p.strip() for p in (args.presets or PRESETS_BY_SCALE[args.scale]).split(",") if p.strip()]
    if not names or names[0] not in PRESETS:
        first = names[0] if names else ""
        parser.error(f"--presets: the first preset ({first!r}) is the default row's and must exist; choose from "
                     f"{', '.join(PRESETS)}")
    args.presets = list(dict.fromkeys(names))
    if args.cache_threshold is not None and args.cache_threshold <= 0:
        parser.error(f"--cache-threshold: {args.cache_threshold:g} is not a positive threshold")


def configs(presets: list[str], threshold: float | None) -> list[Config]:
    """The rows in order: the default, each cache, each backend (on the first preset), each further preset.
    `threshold` goes to the caches that take one (`speed.THRESHOLDS`)."""
    from mora.tools.speed import THRESHOLDS

    first = presets[0]
    rows = [Config("default", first)]
    rows += [Config(f"cache {c}", first, cache=c, threshold=threshold if c in THRESHOLDS else None)
             for c in CACHE_ROWS]
    rows += [Config(f"attention {a}", first, attention=a) for a in ATTENTION_ROWS]
    rows += [Config(f"preset {p}", p) for p in presets[1:]]
    return rows


def refusal(config: Config, device: str) -> str | None:
    """Why the code refuses `config` on `device` (its one-line InputError), or None where it runs."""
    from mora.config import get_preset
    from mora.errors import InputError
    from mora.tools import speed

    if config.preset not in PRESETS:
        return f"skipped: preset {config.preset!r} is not defined in this checkout"
    preset = get_preset(config.preset)
    try:
        resolved = speed.resolve(config.cache, config.threshold, config.attention, DEFAULT["profile"], device)
        speed.check_route(config.cache, resolved.attention, {r: preset.spec(r).family for r in ROLES}, preset.name)
    except InputError as error:
        kind = "unavailable" if error.param == "attention" else "refused"
        return f"{kind}: {error}"
    return None


# --- counting the blocks' work ---------------------------------------------------------------------


class BlockCounter:
    """Block calls, blocks that ran any layer, and layer calls (every module inside a block) in the transformer
    blocks of denoisers."""

    def __init__(self) -> None:
        self.calls = self.run = self.layers = 0
        self._hooks: list[Any] = []
        self._open: list[int] = []

    def attach(self, denoiser: Any) -> None:
        from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS

        for name, blocks in denoiser.named_children():
            if name not in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS:
                continue
            for block in blocks:
                self._hooks.append(block.register_forward_pre_hook(self._enter))
                self._hooks.append(block.register_forward_hook(self._leave))
                self._hooks += [m.register_forward_hook(self._layer) for m in block.modules() if m is not block]

    def reset(self) -> None:
        self.calls = self.run = self.layers = 0

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _enter(self, *_: Any) -> None:
        self._open.append(self.layers)

    def _leave(self, *_: Any) -> None:
        self.calls += 1
        self.run += int(self.layers > self._open.pop())

    def _layer(self, *_: Any) -> None:
        self.layers += 1

    def snapshot(self) -> dict[str, int]:
        return dict(block_calls=self.calls, blocks_run=self.run, blocks_skipped=self.calls - self.run,
                    layer_calls=self.layers)


def job_denoisers(tools: Any) -> list[Any]:
    """Load (or fetch from the pipeline cache) the job's pipelines; their transformer denoisers."""
    from mora.tools import speed
    from mora.tools.toolset import _MODULES

    out = []
    for role in ROLES:
        spec = tools.preset.spec(role)
        pipe = _MODULES[spec.family].load(spec, tools.runtime)
        if spec.family in speed.TRANSFORMER_FAMILIES:
            out += [d for d in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if d]
    return out


# --- timing ------------------------------------------------------------------------------------------


def run_job(tools: Any, seed: int) -> dict:
    """One clip: the first frame, then the video; seconds and the peak memory of its tool calls."""
    import torch

    cuda = tools.device.startswith("cuda")
    first = len(tools.calls)
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    frame = tools.text_to_image(prompt=PROMPT, seed=seed)
    tools.image_to_video(image_path=frame, prompt=PROMPT, seed=seed)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    calls = tools.calls[first:]
    peaks = [c["peak_memory"] for c in calls if c.get("peak_memory")]
    return dict(seconds=seconds, peak_bytes=max((p["bytes"] for p in peaks), default=None),
                peak_measure=peaks[-1]["measure"] if peaks else None,
                applied={c["tool"]: f"cache {c['cache']}, attention {c['attention']}" for c in calls})


def bench_config(args: argparse.Namespace, config: Config, preset: Any, workdir: Path) -> dict:
    """Load, warm up and time the job in `config` on `preset` (`config.preset` with run.py's --steps and
    --size applied)."""
    from mora import Toolset
    from mora.tools import runtime

    runtime.release()  # one configuration's models resident at a time
    tools = Toolset(preset=preset, device=args.device, dtype=args.dtype, profile=DEFAULT["profile"],
                    output_dir=workdir / config.name.replace(" ", "-"), progress=False, cache=config.cache,
                    cache_threshold=config.threshold, attention=config.attention)
    counter = BlockCounter()
    started = time.perf_counter()
    denoisers = job_denoisers(tools)
    load_s = time.perf_counter() - started
    for denoiser in denoisers:
        counter.attach(denoiser)
    try:
        warm = run_job(tools, args.seed)
        counter.reset()
        timed = run_job(tools, args.seed)
    finally:
        counter.remove()
        runtime.release()
    log(f"[speed] {config.name}: warm-up {warm['seconds']:.2f} s, timed {timed['seconds']:.3f} s")
    blocks = counter.snapshot() if denoisers else dict.fromkeys(counter.snapshot())  # UNets: no transformer blocks
    return dict(dataclasses.asdict(config), status="ran", load_s=load_s, warmup_s=warm["seconds"], **timed, **blocks)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- report ------------------------------------------------------------------------------------------


def rows(results: list[dict]) -> list[list[str]]:
    """One table row per configuration; ratios against the default row (its seconds / this row's, this row's
    layer calls / its). A row that did not run shows the first word of its status (`notes`: the reason)."""
    base = results[0] if results and results[0]["status"] == "ran" else None
    out = []
    for r in results:
        cells = [r["name"], r["preset"], r["cache"] + ("" if r["threshold"] is None else f"@{r['threshold']:g}"),
                 r["attention"]]
        if r["status"] != "ran":
            out.append(cells + [r["status"].split(":")[0]] + ["-"] * (len(HEADERS) - len(cells) - 1))
            continue
        ratio = f"{base['seconds'] / r['seconds']:.2f}x" if base else "n/a"
        layers = (f"{100 * (r['layer_calls'] / base['layer_calls'] - 1):+.1f}%"
                  if base and base["layer_calls"] and r["layer_calls"] is not None else "n/a")
        peak = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / GB:.2f}"
        counts = [("n/a" if r[k] is None else str(r[k])) for k in ("block_calls", "blocks_run", "blocks_skipped",
                                                                   "layer_calls")]
        out.append(cells + ["ran", f"{r['seconds']:.3f}", peak, ratio, *counts, layers])
    return out


def notes(results: list[dict]) -> list[str]:
    """`config: reason` for each row that did not run."""
    return [f"{r['name']}: {r['status']}" for r in results if r["status"] != "ran"]


def describe_job(preset: Any) -> str:
    """The job's models and settings on `preset`, one line."""
    parts = []
    for role in ROLES:
        spec = preset.spec(role)
        s = spec.settings
        frames = f", {s.num_frames} frames" if hasattr(s, "num_frames") else ""
        size_text = f"{s.width}x{s.height}" if getattr(s, "width", None) else f"max area {getattr(s, 'max_area', '?')}"
        parts.append(f"{role} {spec.family} ({spec.model}), {s.steps} steps, {size_text}{frames}")
    return "; ".join(parts)


# --- --scale full: the transformer presets' models with random weights --------------------------------


def _part(arch: dict, model: str, component: str, device: str, dtype: Any) -> Any:
    """`model`'s `component` built from its entry in `arch` on `device` in `dtype` (random weights)."""
    entries = {k: v for k, v in arch.items() if not k.startswith("_")}
    return fullsize.build(fullsize.find_entry(model, component, entries)[1], device, dtype)


def _build_qwen_image(model: str, arch: dict, device: str, cls: Any, *, dtype: Any, **_: Any) -> Any:
    from mora.tools.tiny_modern import _qwen_parts, _qwen_tokenizer

    scheduler = _qwen_parts(seed=0)[2]  # Qwen-Image's published scheduler settings, as the tiny twin has them
    return cls(scheduler=scheduler, vae=_part(arch, model, "vae", device, dtype), tokenizer=_qwen_tokenizer(),
               text_encoder=_part(arch, model, "text_encoder", device, dtype),
               transformer=_part(arch, model, "transformer", device, dtype))


def _build_wan22_ti2v(model: str, arch: dict, device: str, cls: Any, *, dtype: Any, subfolder: str | None = None,
                      vae: Any = None, **_: Any) -> Any:
    """Wan 2.2 TI2V-5B; `wan_loader.load_wan` asks for the VAE alone first (float32), then passes it in."""
    from mora.tools.tiny import _t5_tokenizer
    from mora.tools.tiny_modern import _unipc

    if subfolder is not None:
        return _part(arch, model, subfolder, device, dtype)
    return cls(tokenizer=_t5_tokenizer(), text_encoder=_part(arch, model, "text_encoder", device, dtype),
               vae=vae if vae is not None else _part(arch, model, "vae", device, dtype), scheduler=_unipc(5.0),
               image_processor=None, image_encoder=None, transformer=_part(arch, model, "transformer", device, dtype),
               transformer_2=None, boundary_ratio=None, expand_timesteps=True)


FULL_BUILDERS = {"qwen-image": _build_qwen_image, "wan22": _build_wan22_ti2v}  # family -> builder


def register_full_modern(arch: dict, device: str, presets: list[str]) -> list[str]:
    """Serve the job's models of `presets` from random weights on `device` (`weights.register_model`), where
    the family has a builder here and `arch` has the model's transformer; returns the model ids served."""
    import functools

    from mora.config import get_preset
    from mora.tools.weights import register_model

    entries = [v for k, v in arch.items() if not k.startswith("_")]
    served = []
    for name in presets:
        for role in ROLES if name in PRESETS else ():
            spec = get_preset(name).spec(role)
            if spec.family in FULL_BUILDERS and any(spec.model in e["models"] for e in entries):
                register_model(spec.model, functools.partial(FULL_BUILDERS[spec.family], spec.model, arch, device))
                served.append(spec.model)
    return list(dict.fromkeys(served))

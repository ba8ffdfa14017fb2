#!/usr/bin/env python
"""Side by side: Mora's jobs under the paper code's runtime choices and under each execution profile.

    python benchmarks/run.py --scale tiny --device cpu      # toy models: seconds, for CI (not a performance claim)
    python benchmarks/run.py --scale full --device cuda     # full-size architectures, random weights, one GPU
    python benchmarks/run.py --scale full --dry-run         # build full-size on the meta device, check sizes

`full` builds every model from the public config.json values in the package's
mora/data/fullsize_architectures.json (`mora.data`; `--arch PATH` for another) with random weights (they take as long as real weights),
in memory on the target device, and serves them through `mora.tools.weights.register_model`, so
the jobs run the real code path: a `mora.Toolset` on a preset with the paper's settings (preset
`mora`), the pipeline cache, placement and profiles. `tiny` runs preset `tiny`.

Profiles timed, one at a time (`runtime.release()` in between, so only one profile's models are
resident): `paper` (the paper code's choices: fp16, SDXL and InstructPix2Pix resident, SVD with
model CPU offload, decode chunks of 12), `balanced`, `fast`, `low-vram`. Per profile and task:
model build/load time, one warm-up run (includes torch.compile where `fast` compiles), one timed
run. Per component of the timed run (text encoders, denoisers, VAE encode/decode, image encoder):
seconds, calls, peak GPU memory, and achieved TFLOP/s, from FLOPs counted once with
`torch.utils.flop_counter.FlopCounterMode` in a separate pass (profile balanced, uncompiled).

The last line of stdout is `speedup X.XX`: paper seconds / fast seconds of the text-to-video job.
Progress goes to stderr; tables to stdout; `--json PATH` writes everything.

    python benchmarks/run.py --scale tiny --device cpu --speed --threads 1   # the speed options side by side

`--speed` times, instead of the profiles, the speed configurations of issue 33 in one table (same job,
same device): the default (balanced, cache none, sdpa), each step cache, each attention backend and
each preset of `--presets`, with seconds per clip, peak memory, the ratio to the default and the
denoisers' transformer block calls the caches skip (benchmarks/speed_configs.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("mora") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO / "src"))

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (train.py, the tests): fullsize.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed_configs  # noqa: E402  (benchmarks/)
import video_dry_run  # noqa: E402  (benchmarks/)

from mora.config import PROFILES as ALL_PROFILES  # noqa: E402  (after the path above)

TASKS = ("text-to-video", "image-to-video", "extend", "connect")
# The profiles measured: paper first (the baseline every row is compared with); not auto, which runs one
# of the others.
MEASURED = ("paper", *(p for p in ALL_PROFILES if p not in ("paper", "auto")))
PROMPT = "a red fox running through fresh snow at sunrise, cinematic, detailed fur"
INSTRUCTION = "make it a snowy evening"
GB = 1e9  # the goals are in GB

# Goals from the issue (figures to report against, not tests): one H100, --scale full.
GOAL_FAST_S = 32.0
GOAL_SPEEDUP = 4.0
GOAL_SVD_STEP_S = 0.33
GOAL_LOW_VRAM_GB = 24.0
GOAL_LOW_VRAM_SLOWDOWN = 1.5

FULL = "bench-full"  # model ids served from memory by register_model
FULL_IDS = {
    "sdxl-base": f"{FULL}/sdxl-base-1.0", "sdxl-refiner": f"{FULL}/sdxl-refiner-1.0",
    "pix2pix": f"{FULL}/instruct-pix2pix", "svd": f"{FULL}/svd-img2vid-xt", "ltx": f"{FULL}/ltx-video",
}

# LTX-Video's scheduler: FlowMatchEulerDiscreteScheduler's defaults, as in mora.tools.tiny (LTXConditionPipeline
# passes explicit timesteps; the time per step does not depend on the schedule).
# SVD-XT's scheduler_config.json (as in mora.tools.tiny).
SVD_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
    num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002, steps_offset=1,
    timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True,
)

# Dry-run checks: (pipeline, component, JSON key or None, note)
CHECKS = (
    ("sdxl-base", "unet", "sdxl_base_unet", ""),
    ("sdxl-base", "vae", "sdxl_vae", ""),
    ("sdxl-base", "text_encoder", "sdxl_text_encoder_clip_l", ""),
    ("sdxl-base", "text_encoder_2", "sdxl_text_encoder_2_bigg", ""),
    ("sdxl-refiner", "unet", "sdxl_refiner_unet", "text_encoder_2 and vae shared with the base"),
    ("pix2pix", "unet", "instruct_pix2pix_unet", ""),
    ("pix2pix", "vae", "sd15_vae", ""),
    ("pix2pix", "text_encoder", "sd15_text_encoder_clip_l", ""),
    ("svd", "unet", "svd_xt_unet", ""),
    ("svd", "vae", "svd_vae_temporal_decoder", ""),
    ("svd", "image_encoder", "svd_image_encoder_vit_h14", ""),
    ("ltx", "transformer", "ltx_video_2b_transformer", ""),
    ("ltx", "vae", "ltx_095_vae", ""),
    ("ltx", "text_encoder", "t5_v1_1_xxl_encoder", ""),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- arguments ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line: every flag, its default and its help (checked by `parse_args`)."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scale", choices=("tiny", "full"), default="tiny",
                        help="tiny: preset tiny (toy models); full: full-size architectures, random weights")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--tasks", default="text-to-video",
                        help=f"comma-separated, from {','.join(TASKS)} (text-to-video always runs first: "
                             "it makes the other tasks' inputs and the speedup line)")
    parser.add_argument("--profiles", default=",".join(MEASURED),
                        help=f"comma-separated, from {','.join(MEASURED)} (paper and fast required)")
    parser.add_argument("--steps", type=int, help="override every model's denoising steps (quick checks only)")
    parser.add_argument("--size", help="override every model's working size, WxH (quick checks only)")
    parser.add_argument("--dtype", default="auto", help="auto (fp16/bf16 on GPU as each family's, fp32 on CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's); 1 is steadier on a "
                                                    "busy shared CPU")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP-counting pass (no TFLOP/s)")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --scale full: build every model on the meta device, check parameter counts, exit")
    parser.add_argument("--arch", type=Path, help="fullsize_architectures.json (default: $MORA_FULLSIZE_ARCH, "
                                                  "else the package's, mora/data/)")
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    parser.add_argument("--keep", type=Path, help="keep generated images and videos in this directory")
    speed_configs.add_arguments(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The checked arguments: task and profile lists in run order, `size` as (W, H), `device` normalised,
    and `arch_data` (the architectures JSON) for a full-scale run. Errors exit through `parser.error`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.tasks = _task_list(parser, args.tasks)
    args.profiles = _profile_list(parser, args.profiles)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads: {args.threads} is not a positive number of threads")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps: {args.steps} is not a positive number of steps")
    if args.size is not None:
        args.size = _parse_size(parser, args.size)
    speed_configs.check_arguments(parser, args)
    if args.dry_run:
        if args.scale != "full":
            parser.error("--dry-run: only with --scale full (it checks the full-size models without a GPU)")
        return args
    device = _check_device(parser, args.device, args.scale)
    if args.scale == "full":
        args.arch_data = load_arch(args.arch, parser)
    args.device = device
    return args


def _task_list(parser: argparse.ArgumentParser, value: str) -> list[str]:
    tasks = [t.strip() for t in value.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        parser.error(f"--tasks: {bad[0]!r} is not a task; choose from {', '.join(TASKS)}")
    # text-to-video always, first: its frame and video are the other tasks' inputs
    return ["text-to-video"] + [t for t in TASKS[1:] if t in tasks]


def _profile_list(parser: argparse.ArgumentParser, value: str) -> list[str]:
    profiles = [p.strip() for p in value.split(",") if p.strip()]
    bad = [p for p in profiles if p not in MEASURED]
    if bad:
        parser.error(f"--profiles: {bad[0]!r} is not a profile; choose from {', '.join(MEASURED)}")
    if "paper" not in profiles or "fast" not in profiles:
        parser.error("--profiles: must include paper and fast (the speedup line compares them)")
    return [p for p in MEASURED if p in profiles]


def _parse_size(parser: argparse.ArgumentParser, value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        parser.error(f"--size: {value!r} is not WxH, e.g. 64x48")
    if width < 8 or height < 8 or width % 8 or height % 8:
        parser.error(f"--size: {value!r}: both sides must be multiples of 8 (the models' size multiple)")
    return width, height


def _check_device(parser: argparse.ArgumentParser, given: str, scale: str) -> str:
    """`given` lower-cased, once it names a usable device; a note on stderr for full-size models on a CPU."""
    device = given.strip().lower()
    if device != "cpu" and not device.startswith("cuda"):
        parser.error(f"--device: {given!r} is not cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(
                f"--device {given}: no CUDA GPU is available on this machine (torch {torch.__version__}, "
                "torch.cuda.is_available() is False). Run it on a machine with an NVIDIA GPU, use --device cpu, "
                "or check the full-size models without a GPU: --scale full --dry-run"
            )
        from mora.errors import InputError
        from mora.tools.runtime import resolve_device

        try:
            resolve_device(device)  # cuda:N with a valid N
        except InputError as error:
            parser.error(str(error))
    elif scale == "full":
        log("note: full-size models on a CPU take hours and tens of GB of memory; --steps and --size make it a "
            "functional check")
    return device


def arch_candidates(given: Path | None) -> list[Path]:
    """Where the architectures come from: `given` (--arch), else $MORA_FULLSIZE_ARCH, else the package's file."""
    from importlib import resources

    from mora.data import FULLSIZE_FILE

    if given:
        return [given]
    env = os.environ.get("MORA_FULLSIZE_ARCH")
    return [Path(env)] if env else [Path(str(resources.files("mora.data").joinpath(FULLSIZE_FILE)))]


def load_arch(given: Path | None, parser: argparse.ArgumentParser | None = None) -> dict:
    for path in arch_candidates(given):
        if path.is_file():
            return json.loads(path.read_text())
    message = (f"--arch: {', '.join(map(str, arch_candidates(given)))} is not a file; pass --arch PATH to a "
               "fullsize_architectures.json")
    if parser:
        parser.error(message)
    raise SystemExit(message)


# --- the presets ---------------------------------------------------------------------------------


def with_overrides(preset, steps: int | None = None, size: tuple[int, int] | None = None):
    """`preset` with every role's steps and working size replaced (None: unchanged)."""
    from mora.config import Preset, with_settings

    if steps is None and size is None:
        return preset
    w, h = size or (None, None)
    roles = {}
    for role, spec in preset.roles.items():
        fields = {f.name for f in dataclasses.fields(spec.settings)}
        wanted = dict(steps=steps, width=w, height=h, max_area=w * h if size else None)
        roles[role] = with_settings(spec, **{k: v for k, v in wanted.items() if k in fields})
    return Preset(name=preset.name, description=preset.description, roles=MappingProxyType(roles))


def full_preset(steps: int | None = None, size: tuple[int, int] | None = None):
    """Preset `mora`'s settings (the paper's) on the in-memory full-size models."""
    from mora.config import PRESETS, Preset

    mora = PRESETS["mora"]
    ids = {"text_to_image": FULL_IDS["sdxl-base"], "image_to_image": FULL_IDS["pix2pix"],
           "image_to_video": FULL_IDS["svd"], "extend": FULL_IDS["svd"], "connect": FULL_IDS["ltx"]}
    roles = {}
    for role, spec in mora.roles.items():
        refiner = FULL_IDS["sdxl-refiner"] if spec.refiner else None
        roles[role] = dataclasses.replace(spec, model=ids[role], refiner=refiner)
    preset = Preset(name=FULL, description="preset mora's settings on full-size models with random weights",
                    roles=MappingProxyType(roles))
    return with_overrides(preset, steps, size)


@contextlib.contextmanager
def building(device: str, dtype):
    """Create modules directly on `device` in `dtype` (as transformers' from_pretrained does with dtypes)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def _ready(module, dtype):
    if any(p.dtype != dtype for p in module.parameters()):  # built in dtype already; this is a safety net
        module = module.to(dtype=dtype)
    return module.eval()  # from_pretrained returns eval-mode models


def _cfg(arch: dict, key: str, **changes) -> dict:
    """The config.json values of `arch[key]`, with `changes` applied."""
    return {**arch[key]["config"], **changes}


# The builders below take `(arch, device)` first (bound by `full_builders`), then what `register_model`
# passes: the pipeline class and from_pretrained's keyword arguments (unused ones ignored).


def _build_sdxl_base(arch: dict, device: str, cls, *, dtype, **_):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from mora.tools.tiny import _clip_tokenizer, _euler

    with building(device, dtype):
        unet = UNet2DConditionModel(**_cfg(arch, "sdxl_base_unet"))
        vae = AutoencoderKL(**_cfg(arch, "sdxl_vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**_cfg(arch, "sdxl_text_encoder_clip_l")))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**_cfg(arch, "sdxl_text_encoder_2_bigg")))
    return cls(
        vae=_ready(vae, dtype), text_encoder=_ready(text_encoder, dtype), tokenizer=_clip_tokenizer(),
        text_encoder_2=_ready(text_encoder_2, dtype), tokenizer_2=_clip_tokenizer(),
        unet=_ready(unet, dtype), scheduler=_euler(),
    )


def _build_sdxl_refiner(arch: dict, device: str, cls, *, dtype, text_encoder_2, vae, **_):
    # mora.tools.sdxl passes the base's second text encoder and VAE, as the paper's code shares them
    from diffusers import UNet2DConditionModel

    from mora.tools.tiny import _clip_tokenizer, _euler

    with building(device, dtype):
        unet = UNet2DConditionModel(**_cfg(arch, "sdxl_refiner_unet"))
    return cls(
        vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=text_encoder_2, tokenizer_2=_clip_tokenizer(),
        unet=_ready(unet, dtype), scheduler=_euler(), requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )


def _build_pix2pix(arch: dict, device: str, cls, *, dtype, **_):
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mora.tools.tiny import _clip_tokenizer

    with building(device, dtype):
        unet = UNet2DConditionModel(**_cfg(arch, "instruct_pix2pix_unet"))
        vae = AutoencoderKL(**_cfg(arch, "sd15_vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**_cfg(arch, "sd15_text_encoder_clip_l")))
    return cls(
        vae=_ready(vae, dtype), text_encoder=_ready(text_encoder, dtype), tokenizer=_clip_tokenizer(),
        unet=_ready(unet, dtype),
        scheduler=EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _build_svd(arch: dict, device: str, cls, *, dtype, **_):
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    with building(device, dtype):
        unet = UNetSpatioTemporalConditionModel(**_cfg(arch, "svd_xt_unet"))
        vae = AutoencoderKLTemporalDecoder(**_cfg(arch, "svd_vae_temporal_decoder"))
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**_cfg(arch, "svd_image_encoder_vit_h14")))
    return cls(
        vae=_ready(vae, dtype), image_encoder=_ready(encoder, dtype), unet=_ready(unet, dtype),
        scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER),
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )


def _build_ltx(arch: dict, device: str, cls, *, dtype, **_):
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    from mora.tools.tiny import _t5_tokenizer

    with building(device, dtype):
        transformer = LTXVideoTransformer3DModel(**_cfg(arch, "ltx_video_2b_transformer"))
        vae = AutoencoderKLLTXVideo(**_cfg(arch, "ltx_095_vae"))
        text_encoder = T5EncoderModel(T5Config(**_cfg(arch, "t5_v1_1_xxl_encoder")))
    return cls(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=_ready(vae, dtype),
        text_encoder=_ready(text_encoder, dtype), tokenizer=_t5_tokenizer(),
        transformer=_ready(transformer, dtype),
    )


FULL_BUILDERS = {"sdxl-base": _build_sdxl_base, "sdxl-refiner": _build_sdxl_refiner, "pix2pix": _build_pix2pix,
                 "svd": _build_svd, "ltx": _build_ltx}


def full_builders(arch: dict, device: str) -> dict[str, Callable[..., Any]]:
    """model id -> `build(cls, **from_pretrained_kwargs)` for `register_model`, from the JSON configs."""
    return {FULL_IDS[name]: functools.partial(build, arch, device) for name, build in FULL_BUILDERS.items()}


def register_full(arch: dict, device: str) -> None:
    from mora.tools.weights import register_model

    for model_id, build in full_builders(arch, device).items():
        register_model(model_id, build)


# --- dry run: full-size models on the meta device --------------------------------------------------


def meta_pipelines(arch: dict) -> tuple[dict[str, Any], float]:
    """label -> every full-size pipeline, built on the meta device in its family's dtype (no weights),
    and the seconds the building took (imports not included)."""
    import torch
    from diffusers import (
        LTXConditionPipeline,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        StableVideoDiffusionPipeline,
    )

    builders = full_builders(arch, "meta")
    started = time.perf_counter()
    fp16, bf16 = torch.float16, torch.bfloat16
    base = builders[FULL_IDS["sdxl-base"]](StableDiffusionXLPipeline, dtype=fp16, variant="fp16")
    pipes = {
        "sdxl-base": base,
        "sdxl-refiner": builders[FULL_IDS["sdxl-refiner"]](
            StableDiffusionXLImg2ImgPipeline, dtype=fp16, text_encoder_2=base.text_encoder_2, vae=base.vae),
        "pix2pix": builders[FULL_IDS["pix2pix"]](StableDiffusionInstructPix2PixPipeline, dtype=fp16,
                                                 safety_checker=None, requires_safety_checker=False),
        "svd": builders[FULL_IDS["svd"]](StableVideoDiffusionPipeline, dtype=fp16, variant="fp16"),
        "ltx": builders[FULL_IDS["ltx"]](LTXConditionPipeline, dtype=bf16),
    }
    return pipes, time.perf_counter() - started


def _param_check(params: int, entry: dict | None) -> tuple[str, str, str, bool]:
    """(params in the JSON, verified, check, is a mismatch) for a component built with `params` parameters.

    Only a verified JSON entry can mismatch; an unverified one is reported with its difference.
    """
    if entry is None:
        return "-", "-", "no JSON entry", False
    expected, verified = f"{entry['params']:,}", "yes" if entry.get("verified") else "no"
    if params == entry["params"]:
        return expected, verified, "ok" if entry.get("verified") else "= JSON (entry unverified)", False
    if entry.get("verified"):
        return expected, verified, "MISMATCH", True
    change = 100 * (params - entry["params"]) / entry["params"]
    return expected, verified, f"differs {change:+.2f}% (entry unverified)", False


def _check_rows(pipes: dict[str, Any], arch: dict) -> tuple[list[list[str]], int]:
    """One row per entry of `CHECKS` (built against JSON parameter counts), and the number of mismatches."""
    rows, mismatches = [], 0
    for label, attr, key, note in CHECKS:
        module = getattr(pipes[label], attr)
        params = sum(p.numel() for p in module.parameters())
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters()})
        devices = sorted({p.device.type for p in module.parameters()})
        expected, verified, check, mismatch = _param_check(params, arch.get(key) if key else None)
        mismatches += int(mismatch)
        rows.append([f"{label}.{attr}", type(module).__name__, f"{params:,}", expected, verified, check,
                     "/".join(dtypes) + " on " + "/".join(devices), note])
    return rows, mismatches


def _pipeline_totals(pipes: dict[str, Any]) -> list[list[str]]:
    """One row per pipeline: its parameters, a module shared between its components counted once."""
    import torch

    totals = []
    for label, pipe in pipes.items():
        seen, n = set(), 0
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module) and id(module) not in seen:
                seen.add(id(module))
                n += sum(p.numel() for p in module.parameters())
        totals.append([label, type(pipe).__name__, f"{n:,}", f"{2 * n / GB:.1f}"])
    return totals


def dry_run(args: argparse.Namespace) -> int:
    """Build every full-size model on the meta device and check its parameter count against the JSON.

    Returns the exit status: 1 if a verified count does not match, else 0.
    """
    import torch

    arch = load_arch(args.arch)
    pipes, seconds = meta_pipelines(arch)

    print(f"Mora benchmark dry run: full-size models built on the meta device in {seconds:.1f} s "
          "(no weights allocated)")
    print(f"torch {torch.__version__}, diffusers {_version('diffusers')}, transformers {_version('transformers')}")
    print(f"architectures: {next(p for p in arch_candidates(args.arch) if p.is_file())}")
    print()
    rows, mismatches = _check_rows(pipes, arch)
    print(table(["component", "class", "params (built)", "params (JSON)", "verified", "check", "dtype", "note"],
                rows))
    if any("cpu" in row[6] for row in rows):
        print("(cpu: the one-element time_mixer.mix_factor parameters, made with torch.Tensor([...]), which "
              "ignores the device context; placement moves them with their model)")
    print()
    print(table(["pipeline", "class", "params (incl. shared)", "GB at 2 bytes/param"], _pipeline_totals(pipes)))
    print()
    unused = sorted(set(k for k in arch if not k.startswith("_")) - {c[2] for c in CHECKS if c[2]})
    if unused:
        print(f"not timed (preset mora's roles do not use them): {', '.join(unused)}")
    print()
    steps = video_dry_run.video_dry_run()
    print(f"video steps of every built-in preset, denoiser forward on meta tensors ({video_dry_run.__name__}.py):")
    print(table(video_dry_run.HEADERS, video_dry_run.rows(steps)))
    mismatches += sum(not step.ok for step in steps)
    mora = full_preset(args.steps, args.size)
    print("job settings (preset mora, the paper's): " + describe_t2v(mora))
    print("full run: python benchmarks/run.py --scale full --device cuda")
    verified = sum(1 for c in CHECKS if c[2] and arch.get(c[2], {}).get("verified"))
    print(f"dry run: {verified - mismatches}/{verified} verified parameter counts match"
          + ("" if not mismatches else f"; {mismatches} MISMATCH"))
    return 1 if mismatches else 0


# --- timing ----------------------------------------------------------------------------------------

HOOKED = ("text_encoder", "text_encoder_2", "image_encoder", "unet", "transformer")


class ComponentTimer:
    """Seconds, calls, peak GPU memory and (in a counting pass) FLOPs per pipeline component.

    Forward pre/post hooks on the top-level modules; `vae.encode`/`vae.decode` are wrapped, since
    pipelines call them directly rather than through forward. A module shared by two pipelines
    (SDXL's refiner uses the base's text_encoder_2 and VAE) is timed once, under the family name.
    """

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.names: dict[tuple, str] = {}
        self.counter = None  # a FlopCounterMode during the counting pass
        self.reset()

    def reset(self) -> None:
        self.seconds: dict[tuple, float] = defaultdict(float)
        self.calls: dict[tuple, int] = defaultdict(int)
        self.peak: dict[tuple, int] = defaultdict(int)
        self.flops: dict[tuple, int] = defaultdict(int)
        self.job_peak = 0
        self._open: dict[tuple, tuple[float, int]] = {}

    def attach(self, label: str, pipe: Any) -> None:
        import torch

        for attr in HOOKED:
            module = getattr(pipe, attr, None)
            if isinstance(module, torch.nn.Module) and self._register(("module", id(module)), label, attr):
                key = ("module", id(module))
                module.register_forward_pre_hook(self._hook(self._start, key))
                module.register_forward_hook(self._hook(self._stop, key))
        vae = getattr(pipe, "vae", None)
        if vae is not None:
            for method in ("encode", "decode"):
                key = (f"vae.{method}", id(vae))
                if self._register(key, label, f"vae.{method}"):
                    setattr(vae, method, self._wrap(getattr(vae, method), key))

    def _register(self, key: tuple, label: str, attr: str) -> bool:
        if key in self.names:  # shared with an earlier pipeline: name it after the family
            if not self.names[key].startswith(f"{label}."):
                self.names[key] = f"{label.split('-')[0]}.{attr}"
            return False
        self.names[key] = f"{label}.{attr}"
        return True

    def _hook(self, fn: Callable, key: tuple) -> Callable:
        import torch

        # Never traced by torch.compile (fast compiles whole denoisers): it runs eagerly around them.
        return torch.compiler.disable(lambda *args: fn(key))

    def _wrap(self, method: Callable, key: tuple) -> Callable:
        @functools.wraps(method)
        def timed(*args, **kwargs):
            self._start(key)
            try:
                return method(*args, **kwargs)
            finally:
                self._stop(key)

        return timed

    def _start(self, key: tuple) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.job_peak = max(self.job_peak, torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
        flops = self.counter.get_total_flops() if self.counter is not None else 0
        self._open[key] = (time.perf_counter(), flops)

    def _stop(self, key: tuple) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak[key] = max(self.peak[key], torch.cuda.max_memory_allocated())
        started, flops = self._open.pop(key)
        self.seconds[key] += time.perf_counter() - started
        self.calls[key] += 1
        if self.counter is not None:
            self.flops[key] += self.counter.get_total_flops() - flops

    def snapshot(self) -> dict[str, dict]:
        out = {}
        for key, seconds in self.seconds.items():
            out[self.names[key]] = dict(seconds=seconds, calls=self.calls[key],
                                        peak_bytes=self.peak[key] if self.cuda else None, flops=self.flops[key])
        return out


def task_pipelines(tools: Any, task: str) -> list[tuple[str, Any]]:
    """Load (or fetch from the cache) the pipelines `task` uses: [(label, pipeline)]."""
    from mora.tools import ltx, pix2pix, sdxl, svd

    families = {"svd": svd, "ltx": ltx, "pix2pix": pix2pix}
    preset, rt = tools.preset, tools.runtime
    out: list[tuple[str, Any]] = []

    def video(role: str) -> None:
        spec = preset.spec(role)
        out.append((spec.family, families[spec.family].load(spec, rt)))

    if task == "text-to-video":
        base, refiner = sdxl.load(preset.spec("text_to_image"), rt)
        out += [("sdxl-base", base)] + ([("sdxl-refiner", refiner)] if refiner is not None else [])
        video("image_to_video")
    elif task == "image-to-video":
        out.append(("pix2pix", pix2pix.load(preset.spec("image_to_image"), rt)))
        video("image_to_video")
    elif task == "extend":
        video("extend")
    elif task == "connect":
        video("connect")
    return out


def run_task(tools: Any, task: str, made: dict, seed: int) -> None:
    """One job through the Toolset, as the agents call it (route: ARCHITECTURE.md)."""
    if task == "text-to-video":
        made["frame"] = tools.text_to_image(prompt=PROMPT, seed=seed)
        made["video"] = tools.image_to_video(image_path=made["frame"], prompt=PROMPT, seed=seed)
    elif task == "image-to-video":
        edited = tools.edit_image(image_path=made["frame"], instruction=INSTRUCTION, seed=seed)
        tools.image_to_video(image_path=edited, prompt=PROMPT, seed=seed)
    elif task == "extend":
        tools.extend_video(video_path=made["video"], seed=seed)
    elif task == "connect":  # the video to its own start: a loop transition
        tools.connect_videos(first_video=made["video"], second_video=made["video"], seed=seed)


def timed_job(tools: Any, task: str, made: dict, seed: int, timer: ComponentTimer) -> dict:
    import torch

    timer.reset()
    cuda = timer.cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    first_call = len(tools.calls)
    started = time.perf_counter()
    run_task(tools, task, made, seed)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = max(timer.job_peak, torch.cuda.max_memory_allocated()) if cuda else None
    return dict(seconds=seconds, peak_bytes=peak, components=timer.snapshot(),
                tool_calls=[dict(tool=c["tool"], seconds=c["seconds"]) for c in tools.calls[first_call:]])


def count_flops(tools: Any, timer: ComponentTimer, tasks: list[str], made: dict, seed: int) -> dict[str, dict]:
    """FLOPs per component of each task, counted once (uncompiled, balanced) with FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    # On a CPU, SDPA dispatches to a kernel torch's table does not list; count it as SDPA.
    extra = {}
    cpu_op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_op is not None:
        extra[cpu_op] = cpu_sdpa
    out = {}
    for task in tasks:
        with FlopCounterMode(display=False, custom_mapping=extra) as counter:
            timer.counter = counter
            try:
                job = timed_job(tools, task, made, seed, timer)
            finally:
                timer.counter = None
        out[task] = {name: c["flops"] for name, c in job["components"].items()}
        out[task]["(total)"] = counter.get_total_flops()
        log(f"[flops] {task}: {counter.get_total_flops() / 1e12:.3f} TFLOP counted in {job['seconds']:.1f} s")
    return out


def bench_profile(args, preset, profile: str, workdir: Path, flop_pass: bool) -> dict:
    """Load, warm up and time every task in one profile; optionally count FLOPs with its models."""
    import torch

    from mora import Toolset
    from mora.tools.profiles import decode_chunk

    cuda = args.device.startswith("cuda")
    tools = Toolset(preset=preset, device=args.device, dtype=args.dtype, profile=profile,
                    output_dir=workdir / profile, progress=False)
    timer = ComponentTimer(cuda)
    made: dict = {}
    result = dict(profile=profile, applied={}, tasks={}, oom_retries=[])
    for task in args.tasks:
        started = time.perf_counter()
        if cuda:
            torch.cuda.synchronize()
        for label, pipe in task_pipelines(tools, task):
            if label not in result["applied"]:
                timer.attach(label, pipe)
                result["applied"][label] = list(getattr(pipe, "_mora_profile", []))
        if cuda:
            torch.cuda.synchronize()
        load_s = time.perf_counter() - started
        log(f"[{profile}] {task}: models ready in {load_s:.1f} s")
        warm = timed_job(tools, task, made, args.seed, timer)
        log(f"[{profile}] {task}: warm-up {warm['seconds']:.2f} s")
        timed = timed_job(tools, task, made, args.seed, timer)
        log(f"[{profile}] {task}: timed {timed['seconds']:.2f} s")
        result["tasks"][task] = dict(load_s=load_s, warmup_s=warm["seconds"], **timed)
    video = preset.spec("image_to_video")
    if video.family == "svd":  # the frames per VAE decode call, as svd.generate computes them
        result["svd_decode_chunk"] = decode_chunk(profile, args.device, video.settings.decode_chunk_size,
                                                  video.settings.num_frames, video.settings.width, video.settings.height)
    result["oom_retries"] = list(tools.oom_retries)
    result["final_profile"] = tools.runtime.profile
    if flop_pass:
        result["flops"] = count_flops(tools, timer, args.tasks, made, args.seed)
    return result


# --- report ----------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.ljust(widths[i]) if i == 0 or not _numeric(c) else c.rjust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    return cell.replace(".", "", 1).replace(",", "").replace("x", "").replace("-", "", 1).replace("+", "", 1) \
        .rstrip("%").strip().isdigit() \
        or cell == "n/a"


def _gb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / GB:.2f}"


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def describe_t2v(preset) -> str:
    t2i, i2v = preset.spec("text_to_image"), preset.spec("image_to_video")
    refiner = f"base+refiner (refiner from {t2i.settings.high_noise_frac})" if t2i.refiner else "base"
    return (f"SDXL {refiner}, {t2i.settings.steps} steps at {t2i.settings.width}x{t2i.settings.height}; then "
            f"{i2v.settings.segments} chained {i2v.family.upper()} calls of {i2v.settings.num_frames} frames, "
            f"{i2v.settings.steps} steps, motion bucket {i2v.settings.motion_bucket_id}, noise aug "
            f"{i2v.settings.noise_aug_strength}, {i2v.settings.width}x{i2v.settings.height}")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return f"{props.name} ({props.total_memory / GB:.0f} GB)"
    return f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def _print_run_lines(args: argparse.Namespace, title: str) -> None:
    """The title, date, device and versions every table starts with (the figures mean nothing without them)."""
    import torch

    scale_note = "" if args.scale == "full" else " (toy models with random weights: NOT performance figures)"
    print(f"{title}, scale {args.scale}{scale_note}")
    print(f"date {datetime.now().strftime('%Y-%m-%d %H:%M')}; device {args.device}: {device_name(args.device)}")
    print(f"torch {torch.__version__}, diffusers {_version('diffusers')}, transformers {_version('transformers')}, "
          f"mora {_version('mora')}; dtype {args.dtype}; seed {args.seed}")


def _print_header(args: argparse.Namespace, preset) -> None:
    """What ran, where, with which versions and job settings."""
    _print_run_lines(args, "Mora benchmark")
    print(f"tasks: {', '.join(args.tasks)}; profiles: {', '.join(args.profiles)}")
    print(f"text-to-video job: {describe_t2v(preset)}")
    print()


def _applied_rows(results: dict[str, dict]) -> list[list[str]]:
    """Per profile and pipeline: what the profile applied, SVD's decode chunk, and any out-of-memory fallback."""
    rows = []
    for profile, res in results.items():
        for label, applied in res["applied"].items():
            rows.append([profile, label, ", ".join(applied) or "defaults"])
        if "svd_decode_chunk" in res:
            rows.append([profile, "svd decode chunk (frames)", str(res["svd_decode_chunk"])])
        if res["oom_retries"]:
            rows.append([profile, "OUT OF MEMORY", f"fell back: {res['oom_retries']} (final {res['final_profile']})"])
    return rows


def _job_rows(tasks: list[str], results: dict[str, dict], paper: dict[str, float]) -> list[list[str]]:
    """Per task and profile: load, warm-up and timed seconds, peak memory, and the speed relative to paper."""
    rows = []
    for task in tasks:
        for profile, res in results.items():
            t = res["tasks"][task]
            rows.append([task, profile, f"{t['load_s']:.2f}", f"{t['warmup_s']:.2f}",
                         f"{max(0.0, t['warmup_s'] - t['seconds']):.2f}", f"{t['seconds']:.3f}", _gb(t["peak_bytes"]),
                         f"{paper[task] / t['seconds']:.2f}x"])
    return rows


def _component_rows(t: dict, task_flops: dict[str, int]) -> list[list[Any]]:
    """The components of one timed run `t`, then what they leave unaccounted for, then the total."""
    rows, accounted = [], 0.0
    for name, c in sorted(t["components"].items()):
        accounted += c["seconds"]
        f = task_flops.get(name)
        rows.append([name, c["calls"], f"{c['seconds']:.3f}", f"{c['seconds'] / c['calls']:.4f}",
                     _gb(c["peak_bytes"]), "n/a" if f is None else f"{f / 1e9:,.1f}",
                     "n/a" if not f else f"{f / c['seconds'] / 1e12:.3f}"])
    rows.append(["other (schedulers, image/video I/O, Python)", "-", f"{t['seconds'] - accounted:.3f}", "-",
                 "-", "-", "-"])
    rows.append(["total", "-", f"{t['seconds']:.3f}", "-", _gb(t["peak_bytes"]),
                 "n/a" if "(total)" not in task_flops else f"{task_flops['(total)'] / 1e9:,.1f}",
                 "n/a" if not task_flops.get("(total)") else
                 f"{task_flops['(total)'] / t['seconds'] / 1e12:.3f}"])
    return rows


def _side_by_side_rows(task: str, results: dict[str, dict]) -> list[list[str]]:
    """Seconds per component of `task`'s timed run, one column per profile (0.000: not used there)."""
    names = sorted({n for res in results.values() for n in res["tasks"][task]["components"]})
    rows = []
    for name in names + ["total"]:
        row = [name]
        for res in results.values():
            t = res["tasks"][task]
            row.append(f"{t['seconds']:.3f}" if name == "total" else
                       f"{t['components'].get(name, {}).get('seconds', 0.0):.3f}")
        rows.append(row)
    return rows


def _print_components(task: str, results: dict[str, dict], task_flops: dict[str, int]) -> None:
    for profile, res in results.items():
        print(f"== {task}, profile {profile}: components of the timed run ==")
        print(table(["component", "calls", "seconds", "s/call", "peak GPU GB", "GFLOP", "TFLOP/s"],
                    _component_rows(res["tasks"][task], task_flops)))
        print()
    print(f"== {task}: seconds per component, side by side ==")
    print(table(["component", *[f"{p} s" for p in results]], _side_by_side_rows(task, results)))
    print()


def _verdict(ok: bool, full_gpu: bool) -> str:
    # The goals are for full-size models on a GPU; anything else says nothing about them.
    return ("met" if ok else "missed") if full_gpu else "n/a (not --scale full on a GPU)"


def _goal_rows(args: argparse.Namespace, preset, results: dict[str, dict], fast_s: float,
               speedup: float) -> list[list[str]]:
    """The issue's goals (GOAL_*): target, measured, and whether it was met."""
    full_gpu = args.scale == "full" and args.device.startswith("cuda")
    video = preset.spec("image_to_video")
    step_label = (f"{video.family} denoiser step (CFG batch 2 x {video.settings.num_frames} frames, "
                  f"{video.settings.width}x{video.settings.height})")
    rows = [
        ["text-to-video in fast", f"<= {GOAL_FAST_S:.0f} s", f"{fast_s:.2f} s",
         _verdict(fast_s <= GOAL_FAST_S, full_gpu)],
        ["fast vs paper (text-to-video)", f">= {GOAL_SPEEDUP:.0f}x", f"{speedup:.2f}x",
         _verdict(speedup >= GOAL_SPEEDUP, full_gpu)],
    ]
    denoiser = f"{video.family}.{'unet' if video.family == 'svd' else 'transformer'}"
    for profile, res in results.items():
        c = res["tasks"]["text-to-video"]["components"].get(denoiser)
        if c:
            step = c["seconds"] / c["calls"]
            rows.append([f"{step_label}, {profile}", f"<= {GOAL_SVD_STEP_S} s", f"{step:.4f} s",
                         _verdict(step <= GOAL_SVD_STEP_S, full_gpu) if profile == "fast" else "-"])
    if "low-vram" in results:
        low = results["low-vram"]["tasks"]["text-to-video"]
        rows.append(["low-vram peak GPU memory", f"<= {GOAL_LOW_VRAM_GB:.0f} GB", _gb(low["peak_bytes"]) + " GB",
                     _verdict(low["peak_bytes"] is not None and low["peak_bytes"] <= GOAL_LOW_VRAM_GB * GB, full_gpu)])
        slow = low["seconds"] / fast_s
        rows.append(["low-vram time vs fast", f"<= {GOAL_LOW_VRAM_SLOWDOWN}x", f"{slow:.2f}x",
                     _verdict(slow <= GOAL_LOW_VRAM_SLOWDOWN, full_gpu)])
    return rows


def report(args, preset, results: dict[str, dict], flops: dict[str, dict] | None) -> float:
    """Print every table to stdout: settings, what each profile applied, the jobs, their components, the goals.

    Returns the speedup: paper seconds / fast seconds of the text-to-video job.
    """
    _print_header(args, preset)

    print("== what each profile applied ==")
    print(table(["profile", "pipeline", "applied"], _applied_rows(results)))
    print()

    paper = {task: results["paper"]["tasks"][task]["seconds"] for task in args.tasks}
    print("== jobs (warm-up and compile reported separately, never hidden) ==")
    print(table(["task", "profile", "build/load s", "warm-up s (incl. compile)", "warm-up - timed s", "timed s",
                 "peak GPU GB", "vs paper"], _job_rows(args.tasks, results, paper)))
    print()

    for task in args.tasks:
        _print_components(task, results, (flops or {}).get(task, {}))

    fast_s = results["fast"]["tasks"]["text-to-video"]["seconds"]
    speedup = paper["text-to-video"] / fast_s
    print("== goals (one H100, --scale full; figures, not tests) ==")
    print(table(["goal", "target", "measured", "verdict"], _goal_rows(args, preset, results, fast_s, speedup)))
    print()
    return speedup


def _print_speed_header(args: argparse.Namespace, preset) -> None:
    _print_run_lines(args, "Mora speed configurations")
    print(f"job (text-to-video, one clip) on {preset.name}: {speed_configs.describe_job(preset)}")
    print()


def _speed_row(args: argparse.Namespace, config, workdir: Path) -> dict:
    """One configuration's row: refused (the code's reason), failed (the error, traceback on stderr), or run."""
    import traceback

    from mora.config import PRESETS

    reason = speed_configs.refusal(config, args.device)
    if reason:
        return dict(dataclasses.asdict(config), status=reason)
    # --steps applies to the first preset's rows; another preset's steps are part of what it is (few-step
    # distilled weights run at their own count, and a fixed-step sampler refuses any other)
    steps = args.steps if config.preset == args.presets[0] else None
    preset = with_overrides(PRESETS[config.preset], steps, args.size)
    try:
        return speed_configs.bench_config(args, config, preset, workdir)
    except Exception as error:  # one configuration failing (out of memory, weights missing) leaves the others
        log(traceback.format_exc())
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return dict(dataclasses.asdict(config), status=f"failed: {type(error).__name__}: {first[:200]}")


def speed_main(args: argparse.Namespace) -> int:
    """`--speed`: the speed configurations side by side. Exit 1 if a configuration failed to run."""
    import torch

    from mora.config import PRESETS

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scale == "full":
        served = speed_configs.register_full_modern(args.arch_data, args.device, args.presets)
        log(f"[speed] full-size models with random weights: {', '.join(served) or 'none'}")
    with contextlib.ExitStack() as stack:
        workdir = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mora-speed-")))
        results = [_speed_row(args, c, workdir) for c in speed_configs.configs(args.presets, args.cache_threshold)]
    _print_speed_header(args, with_overrides(PRESETS[args.presets[0]], args.steps, args.size))
    print("== speed configurations (vs default: default seconds / this row's; blocks: the denoisers' "
          "transformer blocks over the timed clip) ==")
    print(table(speed_configs.HEADERS, speed_configs.rows(results)))
    for note in speed_configs.notes(results):
        print(f"- {note}")
    measures = sorted({r["peak_measure"] for r in results if r.get("peak_measure")})
    print(f"peak memory: the largest of the clip's tool calls ({', '.join(measures) or 'none measured'})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(scale=args.scale, device=args.device, device_name=device_name(args.device),
                                             date=datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
                                             diffusers=_version("diffusers"), configs=results), indent=1, default=str))
    return 1 if any(r["status"].startswith("failed") for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        return dry_run(args)
    if args.speed:
        return speed_main(args)
    import torch

    from mora.config import PRESETS
    from mora.tools import runtime

    if args.threads:
        torch.set_num_threads(args.threads)

    if args.scale == "full":
        register_full(args.arch_data, args.device)
        preset = full_preset(args.steps, args.size)
    else:
        preset = with_overrides(PRESETS["tiny"], args.steps, args.size)
    results: dict[str, dict] = {}
    flops = None
    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = args.keep
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mora-bench-")))
        for profile in args.profiles:
            runtime.release()  # one profile's models resident at a time
            torch._dynamo.reset()
            flop_pass = profile == "balanced" and not args.no_flops
            results[profile] = bench_profile(args, preset, profile, workdir, flop_pass)
            flops = results[profile].get("flops", flops)
        runtime.release()
        if flops is None and not args.no_flops:  # balanced was not timed: count with a balanced load anyway
            torch._dynamo.reset()
            flops = bench_profile(args, preset, "balanced", workdir, True)["flops"]
            runtime.release()
    speedup = report(args, preset, results, flops)
    if args.json:
        payload = dict(scale=args.scale, device=args.device, device_name=device_name(args.device),
                       tasks=args.tasks, profiles=results, flops=flops, speedup=speedup,
                       date=datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
                       diffusers=_version("diffusers"), settings=describe_t2v(preset))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=1, default=str))
    print(f"speedup {speedup:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

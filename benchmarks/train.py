#!/usr/bin/env python
"""Training step cost, side by side: the coupled objective vs --no-coupling, cached encodings vs --no-cache.

    python benchmarks/train.py --scale tiny --device cpu              # toy models: the script works (CI)
    python benchmarks/train.py --scale full --device cuda             # SDXL base + SVD-XT, random weights
    python benchmarks/train.py --scale full --dry-run                 # no GPU: meta-device sizes and FLOPs

`full` builds SDXL base 1.0 (UNet, VAE, both text encoders) and SVD-XT (UNet, VAE, CLIP ViT-H image
encoder) from the public configs in mora/data/fullsize_architectures.json (`mora.data`; `--arch PATH` for
another) with random weights, directly on
the device, through the helpers of benchmarks/run.py (`register_full`, served by
`mora.tools.weights.register_model`), so training loads them through its real loading path. Settings
are the training defaults: LoRA rank 16 on the UNets' attention, 1 modulation token, 512x288,
14 frames, batch 1, bf16 frozen weights, fp32 LoRA and z, gradient checkpointing, AdamW.
`tiny` runs preset `tiny` at 64x64, 4 frames: the numbers say the script works, nothing about speed.
The data is one synthetic clip of `--source-frames` frames (default 80: 10 s at 8 fps) at
`--source-size` (default 596x336, WebVid-10M's clip size), whose windows the loader decodes,
cover-crops and resizes to the training size as it does real data. (Before 2026-12-06 the clip was
frames + 2 frames at the training size, so decoding it cost next to nothing.)

Per configuration (coupling on, coupling off, then coupling on with --no-cache twice: with the
`--workers` DataLoader processes `mora train` starts to decode the windows ahead (its default), and
with none, decoding in the training process; models released in between): model load seconds, one
warm-up step (with the cache, it also encodes the clip once), then `--steps` timed optimizer steps
fed as `Trainer.run` feeds them (data loading included); mean and median seconds
per step; peak memory (the CUDA allocator's peak on a GPU; on a CPU the process's max RSS, which
only grows, so later columns include earlier ones).
Then the mean per-step split of the timed steps (metrics.jsonl's `phase_seconds`: data, encode,
forward, backward, optimizer; CUDA synchronised at each boundary). The dry run times nothing: on
the meta device it counts one full-size step's FLOPs per phase (encode, forward, backward), cached
and --no-cache, with `torch.utils.flop_counter` and the same phase rules (`StepTimer`).

Goals: one H100, full size: <= 1.0 s per step and <= 40 GB peak (issue 12); on tiny, cached
training no slower than --no-cache (issue 30 restates issue 21's 1.5x: on tiny the UNets dominate a
step, so the cache's gain is a full-size figure, about 21% of a step's FLOPs), read against the
--no-cache run with the default workers, what `mora train --no-cache` does. (Until 2026-12-06 the script decoded the
--no-cache windows in the training process whatever the workers, which overstated the cache's gain.)
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("mora") is None:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO / "src"))

GOAL_S_PER_STEP = 1.0
# The source clip's size. Training data are videos at their own size, cover-cropped and resized to
# the training size by the loader; WebVid-10M, the usual text-video training set, has 596x336 clips.
SOURCE_SIZE = "596x336"
SOURCE_FRAMES = 80  # 10 s at 8 fps; WebVid's clips average about 18 s at 25-30 fps (hundreds of frames)
GOAL_PEAK_GB = 40.0
H100_BF16_TFLOPS = 989.0  # NVIDIA's H100 SXM datasheet: dense BF16 tensor-core peak


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def bench_run_module():
    """benchmarks/run.py as a module (its full-size builders and table printer), without copying them."""
    spec = importlib.util.spec_from_file_location("mora_bench_run", Path(__file__).with_name("run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/train.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (default 5)")
    parser.add_argument("--size", help="training size WxH (default: 64x64 tiny, 512x288 full)")
    parser.add_argument("--frames", type=int, help="frames per clip (default: 4 tiny, 14 full)")
    parser.add_argument("--source-size", default=SOURCE_SIZE, help=f"size WxH of the synthetic source clip, which "
                        f"the loader cover-crops to --size (default {SOURCE_SIZE}: WebVid-10M's clips)")
    parser.add_argument("--source-frames", type=int, default=SOURCE_FRAMES, help="frames of the source clip, of "
                        f"which each step reads a window of --frames (default {SOURCE_FRAMES}: 10 s at 8 fps)")
    parser.add_argument("--workers", type=int, help="DataLoader processes decoding the --no-cache windows ahead "
                        "(default: mora train's --workers default)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--optimizer", default="adamw", choices=("adamw", "adamw8bit"))
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--arch", type=Path, help="fullsize_architectures.json (default as benchmarks/run.py)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --scale full: build the models on the meta device, attach LoRA, check the "
                             "modulation widths, estimate static memory and count a step's FLOPs per phase, "
                             "cached and --no-cache (no GPU, no weights, no time)")
    args = parser.parse_args(argv)
    if args.dry_run and args.scale != "full":
        parser.error("--dry-run: only with --scale full")
    if args.steps < 1:
        parser.error(f"--steps: {args.steps} is not a positive number of steps")
    from mora.errors import InputError
    from mora.training.config import parse_size

    try:
        args.size = parse_size(args.size or ("64x64" if args.scale == "tiny" else "512x288"))
    except InputError as error:
        parser.error(str(error).replace("--train-size", "--size"))
    w, _, h = args.source_size.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and int(w) >= 16 and int(h) >= 16 and int(w) % 2 == 0 and int(h) % 2 == 0):
        parser.error(f"--source-size: {args.source_size!r} is not WxH with even sides of at least 16 (H.264's "
                     "4:2:0); pass e.g. 596x336")
    args.source_size = (int(w), int(h))
    args.frames = args.frames or (4 if args.scale == "tiny" else 14)
    from mora.training import TrainConfig

    args.workers = TrainConfig.model_fields["workers"].default if args.workers is None else args.workers
    if args.workers < 1:
        parser.error(f"--workers: {args.workers}; the script also runs --no-cache with no workers, so pass at least 1")
    if args.source_frames < args.frames:
        parser.error(f"--source-frames: {args.source_frames} is fewer than the {args.frames} frames a step reads; "
                     f"pass at least {args.frames}")
    device = args.device.strip().lower()
    if device != "cpu" and not device.startswith("cuda"):
        parser.error(f"--device: {args.device!r} is not cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: no CUDA GPU is available on this machine; use --device cpu")
    elif args.scale == "full" and not args.dry_run:
        log("note: full-size training steps on a CPU take minutes each and tens of GB of memory")
    args.device = device
    return args


def write_clip(folder: Path, size: tuple[int, int], frames: int) -> Path:
    """A captioned synthetic clip (a moving gradient) of `frames` frames at `size`."""
    import numpy as np

    from mora import media

    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    video = np.stack([np.stack([(x * 255 // max(1, width - 1) + 5 * t) % 256, y * 255 // max(1, height - 1),
                                np.full_like(x, (40 + 20 * t) % 256)], axis=-1).astype(np.uint8)
                      for t in range(frames)])
    media.write_video(video, folder / "clip.mp4", fps=8)
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "clip.mp4", "text": "a red fox in snow"}) + "\n")
    return folder


def bench_config(args: argparse.Namespace, preset: Any, data: Path, workdir: Path, coupling: bool,
                 cache: bool = True, workers: int = 0) -> dict:
    """Load the models, one warm-up step, `--steps` timed steps; seconds per step and peak memory.

    The steps are fed as `Trainer.run` feeds them: with `--no-cache` and `workers`, the windows come
    decoded from the DataLoader processes (`StepFeed.prefetched`).
    """
    import torch

    from mora.training import TrainConfig, Trainer
    from mora.training.report import peak_memory_gb

    cuda = args.device.startswith("cuda")
    name = f"coupling {'on' if coupling else 'off'}{'' if cache else f', --no-cache --workers {workers}'}"
    cfg = TrainConfig(data=data, out=workdir / name.replace(" ", "-").replace(",", ""), preset=preset,
                      steps=args.steps + 1, rank=args.rank, coupling=coupling, train_size=args.size,
                      train_frames=args.frames, device=args.device, optimizer=args.optimizer, cache=cache,
                      workers=workers)
    trainer = Trainer(cfg, progress=False)
    started = time.perf_counter()
    trainer.prepare()
    load_s = time.perf_counter() - started
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds, losses, splits = [], [], []
    ahead = trainer.feed.prefetched(0)
    for step in range(args.steps + 1):
        started = time.perf_counter()
        record = trainer.train_step(step, next(ahead) if ahead is not None else None)
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
        losses.append(record["loss"])
        splits.append(record["phase_seconds"])
        log(f"[{name}] step {step + 1}: {seconds[-1]:.3f} s, loss {record['loss']:.4f}")
    del ahead  # its worker processes end with it
    trainer.close()
    timed = seconds[1:]  # the first step pays one-time costs (kernel selection, allocator growth)
    result = dict(coupling=coupling, cache=cache, workers=None if cache else workers, load_s=load_s, warmup_s=seconds[0], mean_s=statistics.mean(timed),
                  median_s=statistics.median(timed), peak_gb=peak_memory_gb(args.device), losses=losses,
                  split={k: statistics.mean(s[k] for s in splits[1:]) for k in splits[0]},
                  trainable=sum(p.numel() for m in trainer.models.values() for p in m.lora_params + [m.z]))
    del trainer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def dry_run(args: argparse.Namespace, bench: Any) -> int:
    """Full-size models on the meta device: trainable parameters, z widths and a static memory estimate."""
    import torch

    from mora.adapters.lora import add_lora
    from mora.training.models import load_pipeline

    bench.register_full(bench.load_arch(args.arch), "meta")
    preset = bench.full_preset()
    rows, frozen_total, trainable_total = [], 0, 0
    for agent in ("text_to_image_agent", "image_to_video_agent"):
        pipe = load_pipeline(preset, agent, "meta", torch.bfloat16)
        frozen = sum(p.numel() for m in pipe.components.values() if isinstance(m, torch.nn.Module)
                     for p in m.parameters())
        width = pipe.unet.config.cross_attention_dim
        if agent == "text_to_image_agent":  # z_2 is prompt_embeds-wide: both text encoders, concatenated
            source = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
        else:  # z_4 is image_embeds-wide: the CLIP projection
            source = pipe.image_encoder.config.projection_dim
        lora = sum(p.numel() for p in add_lora(pipe.unet, args.rank))
        trainable = lora + width  # one modulation token
        frozen_total, trainable_total = frozen_total + frozen, trainable_total + trainable
        rows.append([agent, type(pipe.unet).__name__, f"{frozen:,}", f"{lora:,}", f"{width}",
                     "ok" if source == width else f"MISMATCH ({source})"])
    print("Mora training dry run: full-size models on the meta device (no weights allocated)")
    print(bench.table(["agent", "denoiser", "frozen params", f"LoRA params (rank {args.rank})", "z width",
                       "encoder width = z width"], rows))
    static = frozen_total * 2 + trainable_total * 16  # bf16 frozen; fp32 param, grad, Adam m and v
    print(f"static memory: {frozen_total * 2 / 1e9:.1f} GB frozen bf16 weights + {trainable_total * 16 / 1e9:.2f} GB "
          f"trainable state (fp32 parameters, gradients, AdamW moments) = {static / 1e9:.1f} GB before activations "
          f"(goal: <= {GOAL_PEAK_GB:.0f} GB peak with activations; measure with --device cuda)")
    flop_split(args, preset, bench)
    return 0


class MetaCaptions:
    """The caption cache's interface (`EncodingCache.get`) for meta tensors, which cannot go to the CPU."""

    def __init__(self) -> None:
        from mora.training.encodings import EncodingCache

        self.text_key, self.memory = EncodingCache.text_key, {}

    def get(self, key: str, compute: Any) -> dict:
        if key not in self.memory:
            self.memory[key] = compute()
        return self.memory[key]


def meta_batches(args: argparse.Namespace, models: dict) -> tuple[Any, Any]:
    """(--no-cache batch, cached batch) of one clip on the meta device; the cached one's latents,
    CLIP embedding and caption embeddings are encoded here, outside the count, as the cache holds them."""
    import torch

    from mora.adapters.modulation import clip_image_tokens
    from mora.training.coupled import A2, A4, Batch, sdxl_caption_embeds

    width, height = args.size
    texts = ["a red fox in snow"]
    plain = Batch(first=torch.empty(1, 3, height, width, device="meta"), last=torch.empty(1, 3, height, width, device="meta"),
                  texts=texts, fps=[8.0], clips=torch.empty(1, args.frames, 3, height, width, device="meta"))
    with torch.no_grad():
        dists = {}
        for kind, agent, pixels in (("sdxl_first", A2, plain.first), ("svd_clip", A4, plain.clips.flatten(0, 1))):
            dist = models[agent].pipe.vae.encode(pixels.to(models[agent].dtype)).latent_dist
            dists[kind] = (dist.mean, dist.std)
        captions = MetaCaptions()
        sdxl_caption_embeds(models[A2].pipe, [*texts, ""], captions)
        embeds = clip_image_tokens(models[A4].pipe, plain.first, 1)
    cached = Batch(first=plain.first, last=plain.last, texts=texts, fps=[8.0], dists=dists, captions=captions,
                   first_image_embeds=embeds)
    return plain, cached


def count_step(models: dict, batch: Any, cfg: Any) -> dict[str, float]:
    """FLOPs of one step's phases (encode, forward, backward), counted on the meta device: the same
    exclusive phases `StepTimer` times, with FLOPs for its clock."""
    from torch.utils.flop_counter import FlopCounterMode

    from mora.training.coupled import compute_losses
    from mora.training.objectives import Draws
    from mora.training.timing import StepTimer, time_encoders

    with FlopCounterMode(display=False) as counter:
        timer = StepTimer(clock=counter.get_total_flops)
        handles = time_encoders([m.pipe for m in models.values()], lambda: timer)
        try:
            with timer.phase("forward"):
                losses = compute_losses(models, batch, Draws.for_samples(0, 0, [0]), cfg)
            with timer.phase("backward"):
                losses.total.backward()
        finally:
            for handle in handles:
                handle.remove()
    for m in models.values():
        for p in [*m.lora_params, m.z]:
            p.grad = None
    return {k: v for k, v in timer.seconds.items() if k in ("encode", "forward", "backward")}


def flop_split(args: argparse.Namespace, preset: Any, bench: Any) -> None:
    """Print the per-step FLOPs of encode, forward and backward, cached vs --no-cache, at full size.

    Counted with `torch.utils.flop_counter` on the meta device (matmuls, convolutions, attention;
    no weights, no time): what the cache removes from a step, in compute, before a GPU says in seconds.
    """
    import torch

    from mora.training.config import TrainConfig
    from mora.training.models import build_agent

    models = {a: build_agent(preset, a, "meta", torch.bfloat16, rank=args.rank, mod_tokens=1, gradient_checkpointing=True)
              for a in ("text_to_image_agent", "image_to_video_agent")}
    # A4 on A2's estimate (the coupled case, 1 - --real-frame-p of the samples): CLIP and the VAE run on it each step.
    cfg = TrainConfig(data=Path("unused"), out=Path("unused"), preset=preset, real_frame_p=0.0).validate()
    plain, cached = meta_batches(args, models)
    rows = {"on": count_step(models, cached, cfg), "off": count_step(models, plain, cfg)}
    print(f"per-step FLOPs (TFLOP, counted on the meta device; {args.size[0]}x{args.size[1]}, {args.frames} frames, "
          "batch 1, coupled, A4 on A2's estimate)")
    print(bench.table(["cache", "encode", "forward", "backward", "total"],
                      [[k, *(f"{v[p] / 1e12:.2f}" for p in ("encode", "forward", "backward")),
                        f"{sum(v.values()) / 1e12:.2f}"] for k, v in rows.items()]))
    total = {k: sum(v.values()) for k, v in rows.items()}
    print(f"--no-cache computes {total['off'] / total['on']:.2f}x the FLOPs of a cached step; the GPU run says what "
          f"that is in seconds (kernels differ in speed per FLOP)")
    print(f"floor at 100% of an H100's {H100_BF16_TFLOPS:.0f} dense bf16 TFLOP/s: {total['on'] / 1e12 / H100_BF16_TFLOPS:.3f} "
          f"s per cached step (real steps take several times this; the GPU run measures them)")


CONFIG_COLUMNS = ("coupling", "cache", "workers")


def config_cells(r: dict) -> list[str]:
    """A configuration's cells under CONFIG_COLUMNS (workers: the --no-cache decoders; - with the cache)."""
    return ["on" if r["coupling"] else "off", "on" if r["cache"] else "off",
            "-" if r["workers"] is None else str(r["workers"])]


def print_split(results: list[dict], bench: Any) -> None:
    """Mean seconds per phase of the timed steps (metrics.jsonl's `phase_seconds`), per configuration."""
    phases = list(results[0]["split"])
    rows = [[*config_cells(r), *(f"{r['split'][k]:.4f}" for k in phases), f"{r['mean_s'] - sum(r['split'].values()):.4f}",
             f"{r['mean_s']:.4f}"] for r in results]
    print("per-step split, mean seconds of the timed steps (other: the step's bookkeeping outside the phases)")
    print(bench.table([*CONFIG_COLUMNS, *phases, "other", "step"], rows))


def report(args: argparse.Namespace, results: list[dict], bench: Any) -> None:
    import torch

    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"Mora training benchmark: --scale {args.scale} on {args.device} ({device}), torch {torch.__version__}")
    models = "SDXL base + SVD-XT, random weights" if args.scale == "full" else "preset tiny: toy SDXL + SVD"
    print(f"agents text_to_image_agent + image_to_video_agent ({models}); LoRA rank {args.rank}, "
          f"1 mod token, {args.size[0]}x{args.size[1]}, {args.frames} frames, batch 1, optimizer {args.optimizer}, "
          f"{args.steps} timed steps after 1 warm-up; source clip {args.source_size[0]}x{args.source_size[1]}, "
          f"{args.source_frames} frames")
    memory = "peak GPU GB" if args.device.startswith("cuda") else "peak RSS GB (process)"
    rows = [[*config_cells(r), f"{r['load_s']:.1f}", f"{r['warmup_s']:.3f}", f"{r['mean_s']:.3f}",
             f"{r['median_s']:.3f}", "n/a" if r["peak_gb"] is None else f"{r['peak_gb']:.2f}",
             f"{r['trainable'] / 1e6:.2f}M"] for r in results]
    print(bench.table([*CONFIG_COLUMNS, "load s", "warm-up s", "s/step (mean)", "s/step (median)", memory,
                       "trainable"], rows))
    print_split(results, bench)
    on, off, uncached, inline = results
    print(f"coupling costs {on['mean_s'] / off['mean_s']:.2f}x the time of --no-coupling per step")
    speedup = uncached["mean_s"] / on["mean_s"]
    print(f"cached: {1 / on['mean_s']:.2f} steps/s, --no-cache with {args.workers} workers (mora train's way): "
          f"{1 / uncached['mean_s']:.2f} steps/s -> {speedup:.2f}x"
          + (f" (goal on tiny: not slower, >= 1.0x: {'met' if speedup >= 1.0 else 'NOT met'}; the gain is a "
             "full-size figure)" if args.scale == "tiny" else ""))
    print(f"--no-cache with no workers (decoding in the training process): {1 / inline['mean_s']:.2f} steps/s -> "
          f"cached is {inline['mean_s'] / on['mean_s']:.2f}x")
    if args.scale == "full" and args.device.startswith("cuda"):
        for r in results:
            ok = r["mean_s"] <= GOAL_S_PER_STEP and (r["peak_gb"] or 0) <= GOAL_PEAK_GB
            print(f"goal (H100, <= {GOAL_S_PER_STEP} s/step, <= {GOAL_PEAK_GB:.0f} GB), coupling "
                  f"{'on' if r['coupling'] else 'off'}: {r['mean_s']:.3f} s, {r['peak_gb']:.1f} GB -> "
                  f"{'met' if ok else 'NOT met'}")
    elif args.scale == "tiny":
        print("tiny models: these figures show the script works; they say nothing about full-size speed")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    bench = bench_run_module()
    if args.dry_run:
        return dry_run(args, bench)
    preset = "tiny"
    if args.scale == "full":
        bench.register_full(bench.load_arch(args.arch), args.device)
        preset = bench.full_preset()
    with tempfile.TemporaryDirectory(prefix="mora-train-bench-") as tmp:
        workdir = Path(tmp)
        data = write_clip(workdir / "data", args.source_size, args.source_frames)
        results = [bench_config(args, preset, data, workdir, coupling) for coupling in (True, False)]
        results += [bench_config(args, preset, data, workdir, True, cache=False, workers=w) for w in (args.workers, 0)]
    report(args, results, bench)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

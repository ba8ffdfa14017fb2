#!/usr/bin/env python
"""Many jobs: one `mora` process per job vs one `mora batch` (warm models) vs `mora batch --ray`.

    python benchmarks/batch.py                                        # 12 tiny jobs on the CPU (a few minutes)
    python benchmarks/batch.py --preset mora --device cuda --workers 0   # full size, one Ray actor per GPU

The same jobs (the six tasks in turn, each with its own seed) run three ways, each from a fresh
process, so every mode pays its own imports and model loading:

- `separate`: one `mora <task> ...` command per job, one after another (what users do today).
- `batch`: one `mora batch JOBS.jsonl`: one process, models loaded once and kept warm.
- `ray`: `mora batch JOBS.jsonl --ray --workers N`: a local Ray instance and N CPU actors
  (`--workers 0`: no `--workers`, so one actor per GPU). Needs `pip install 'mora[ray]'`.

Before timing, one untimed batch of the six tasks builds (tiny) or downloads (full size) every
model, so no mode pays that. Reported: wall seconds, jobs per minute, and each mode's speed-up over
`separate`. Goal (the issue): warm batch >= 3x separate processes on tiny. Tiny numbers measure
Mora's overhead (imports, model loading, orchestration), not the models: they are toys.
The last line of stdout is `batch speedup X.XX`. `--json PATH` writes everything.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TASK_ORDER = ("text-to-video", "image-to-video", "extend", "edit", "connect", "simulate")
# argv positions of each task's inputs (`mora <task> POSITIONAL... [--image IMAGE]`)
POSITIONALS = {"text-to-video": ("prompt",), "image-to-video": ("image", "prompt"), "extend": ("video", "prompt"),
               "edit": ("video", "instruction"), "connect": ("video_a", "video_b", "prompt"), "simulate": ("prompt",)}
GOAL_BATCH_SPEEDUP = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny", help="models (default tiny: toy, offline)")
    p.add_argument("--device", default=None, help="device of every job (default: cpu for tiny presets, else auto)")
    p.add_argument("--jobs", type=int, default=12, help="number of jobs (the six tasks in turn; default 12)")
    p.add_argument("--workers", type=int, default=2, help="Ray CPU actors (default 2; 0: one actor per GPU)")
    p.add_argument("--modes", default="separate,batch,ray", help="which of separate, batch, ray to time")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process (default 1)")
    p.add_argument("--keep", type=Path, help="keep the inputs and outputs here (default: a temp dir, removed)")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    args.device = args.device or ("cpu" if args.preset.startswith("tiny") else "auto")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    return args


def mora_cmd() -> list[str]:
    script = Path(sys.executable).with_name("mora")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mora.cli"]


def make_inputs(folder: Path) -> dict[str, str]:
    """A short moving gradient (two variants) and an image, as the tasks' input files."""
    from mora import media

    def gradient(num_frames: int, shift: int, width: int = 96, height: int = 64) -> np.ndarray:
        y, x = np.mgrid[0:height, 0:width]
        return np.stack([np.stack([(x * 255 // (width - 1) + t * shift) % 256, y * 255 // (height - 1),
                                   np.full_like(x, (60 + 20 * t) % 256)], axis=-1).astype(np.uint8)
                         for t in range(num_frames)])

    folder.mkdir(parents=True, exist_ok=True)
    media.write_video(gradient(8, 3), folder / "clip.mp4", fps=8)
    media.write_video(gradient(8, 9), folder / "clip_b.mp4", fps=8)
    media.write_image(media.Video(gradient(1, 3), fps=1).pil_frames()[0], folder / "frame.png")
    return {"image": str(folder / "frame.png"), "video": str(folder / "clip.mp4"), "video_b": str(folder / "clip_b.mp4")}


def make_jobs(n: int, files: dict[str, str]) -> list[dict]:
    """`n` jobs cycling through the six tasks, seeds 0..n-1."""
    inputs = {
        "text-to-video": {"prompt": "a red fox running through snow"},
        "image-to-video": {"image": files["image"], "prompt": "the fox leaps over a log"},
        "extend": {"video": files["video"], "prompt": "the fox stops and looks around"},
        "edit": {"video": files["video"], "instruction": "make it autumn"},
        "connect": {"video_a": files["video"], "video_b": files["video_b"]},
        "simulate": {"prompt": "a village by a river at sunrise"},
    }
    return [{"id": f"job{i:02d}", "task": task, **inputs[task], "seed": i}
            for i, task in ((i, TASK_ORDER[i % len(TASK_ORDER)]) for i in range(n))]


def separate_cmd(job: dict, out: Path, common: list[str]) -> list[str]:
    positional = [job[k] for k in POSITIONALS[job["task"]] if k in job]
    return [*mora_cmd(), job["task"], *positional, "--seed", str(job["seed"]), "--out", str(out), *common]


def batch_cmd(jobs_file: Path, out_dir: Path, common: list[str], extra: list[str]) -> list[str]:
    """`mora batch ...`, or the same through the Python API where the CLI has no batch command yet."""
    if _has_batch_command():
        return [*mora_cmd(), "batch", str(jobs_file), "--out-dir", str(out_dir), *common, *extra]
    options = {"preset": common[common.index("--preset") + 1], "device": common[common.index("--device") + 1]}
    if "--ray" in extra:
        options["ray"] = True
        if "--workers" in extra:
            options["workers"] = int(extra[extra.index("--workers") + 1])
    code = ("import json, sys, mora; "
            "r = mora.batch(sys.argv[1], out_dir=sys.argv[2], progress=False, **json.loads(sys.argv[3])); "
            "sys.exit(r.exit_code)")
    return [sys.executable, "-c", code, str(jobs_file), str(out_dir), json.dumps(options)]


def _has_batch_command() -> bool:
    proc = subprocess.run([*mora_cmd(), "batch", "--help"], capture_output=True, text=True)
    return proc.returncode == 0


def timed(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with open(log, "a", encoding="utf-8") as out:
        rc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    return time.perf_counter() - started, rc


def run_mode(mode: str, jobs: list[dict], work: Path, common: list[str], env: dict, workers: int) -> dict:
    out_dir = work / mode
    jobs_file = work / "jobs.jsonl"
    log = work / f"{mode}.log"
    print(f"[{mode}] {len(jobs)} jobs ...", file=sys.stderr, flush=True)
    if mode == "separate":
        seconds, failures = 0.0, 0
        for job in jobs:
            s, rc = timed(separate_cmd(job, out_dir / f"{job['id']}.mp4", common), env, log)
            seconds, failures = seconds + s, failures + (rc != 0)
    else:
        extra = ["--ray", *(["--workers", str(workers)] if workers else [])] if mode == "ray" else []
        seconds, rc = timed(batch_cmd(jobs_file, out_dir, common, extra), env, log)
        failures = rc != 0
    made = sum(1 for job in jobs if (out_dir / f"{job['id']}.mp4").is_file())
    return {"mode": mode, "seconds": round(seconds, 2), "jobs": len(jobs), "videos": made, "failed": int(failures),
            "jobs_per_min": round(60.0 * made / seconds, 2) if seconds else 0.0, "log": str(log)}


def report(rows: list[dict], args: argparse.Namespace) -> str:
    base = next((r for r in rows if r["mode"] == "separate"), None)
    lines = [f"{'mode':<10} {'jobs':>4} {'videos':>6} {'seconds':>8} {'jobs/min':>9} {'vs separate':>12}"]
    for r in rows:
        ratio = r["jobs_per_min"] / base["jobs_per_min"] if base and base["jobs_per_min"] else None
        r["speedup"] = round(ratio, 2) if ratio else None
        lines.append(f"{r['mode']:<10} {r['jobs']:>4} {r['videos']:>6} {r['seconds']:>8.1f} {r['jobs_per_min']:>9.1f} "
                     f"{'' if ratio is None else f'{ratio:.2f}x':>12}")
    batch = next((r for r in rows if r["mode"] == "batch"), None)
    if batch and batch.get("speedup"):
        verdict = "met" if batch["speedup"] >= GOAL_BATCH_SPEEDUP else "NOT met"
        lines.append(f"goal: warm batch >= {GOAL_BATCH_SPEEDUP:.0f}x separate processes: {verdict}")
    lines.append(f"preset {args.preset}, device {args.device}, OMP_NUM_THREADS={args.threads}, "
                 f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.machine()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "ray" in args.modes and importlib.util.find_spec("ray") is None:
        print("ray is not installed (pip install 'mora[ray]'): skipping the ray mode", file=sys.stderr)
        args.modes.remove("ray")
    work = args.keep or Path(tempfile.mkdtemp(prefix="mora-batch-bench-"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    if args.preset.startswith("tiny"):
        env["HF_HUB_OFFLINE"] = "1"
    env.pop("OAI_CONFIG_LIST", None)  # no LLM: the deterministic route, as in the tests
    try:
        jobs = make_jobs(args.jobs, make_inputs(work / "inputs"))
        (work / "jobs.jsonl").write_text("".join(json.dumps(j) + "\n" for j in jobs), encoding="utf-8")
        common = ["--preset", args.preset, "--device", args.device, "--quiet"]
        warm = work / "warmup.jsonl"  # builds or downloads every model once, untimed
        warm.write_text("".join(json.dumps(j) + "\n" for j in jobs[:len(TASK_ORDER)]), encoding="utf-8")
        print("[warm-up] building/loading every model once (untimed) ...", file=sys.stderr, flush=True)
        timed(batch_cmd(warm, work / "warmup", common, []), env, work / "warmup.log")
        rows = [run_mode(mode, jobs, work, common, env, args.workers) for mode in args.modes]
        print(report(rows, args))
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                            indent=2))
        batch = next((r for r in rows if r["mode"] == "batch"), {})
        print(f"batch speedup {batch.get('speedup') or 0:.2f}")
        return 0 if all(r["videos"] == r["jobs"] for r in rows) else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

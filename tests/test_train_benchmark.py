"""benchmarks/train.py (issue 21): it runs on tiny, and it feeds --no-cache steps as `mora train` does
(windows decoded ahead by the DataLoader workers), so its cached-vs---no-cache ratio is the one users get."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "train.py"
SMALL = ["--scale", "tiny", "--device", "cpu", "--steps", "1", "--threads", "1", "--size", "32x32",
         "--source-size", "64x48", "--source-frames", "8"]


def _bench_module():
    spec = importlib.util.spec_from_file_location("mora_benchmark_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # four configurations, each loading the tiny models
def test_train_benchmark_runs_every_configuration_on_tiny(tmp_path):
    result = subprocess.run([sys.executable, str(BENCH), *SMALL, "--json", str(tmp_path / "bench.json")],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    from mora.training import TrainConfig
    from mora.training.timing import PHASES

    workers = TrainConfig.model_fields["workers"].default
    rows = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert [(r["coupling"], r["cache"], r["workers"]) for r in rows] == [
        (True, True, None), (False, True, None), (True, False, workers), (True, False, 0)]
    for r in rows:
        assert set(r["split"]) == set(PHASES) and r["mean_s"] > 0 and len(r["losses"]) == 2
    assert f"--no-cache with {workers} workers (mora train's way)" in result.stdout
    assert "(goal on tiny: not slower, >= 1.0x: " in result.stdout
    assert "--no-cache with no workers (decoding in the training process)" in result.stdout


def test_train_benchmark_rejects_no_workers():
    result = subprocess.run([sys.executable, str(BENCH), *SMALL, "--workers", "0"], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode == 2
    assert "--workers: 0;" in result.stderr and "pass at least 1" in result.stderr


@pytest.mark.slow  # loads the tiny models
def test_no_cache_steps_get_their_windows_from_the_workers(tmp_path, monkeypatch):
    """The step is fed decoded windows (as `Trainer.run` does with --workers), not left to decode inline."""
    from mora.training import Trainer

    bench = _bench_module()
    args = bench.parse_args([*SMALL, "--workers", "1"])
    data = bench.write_clip(tmp_path / "data", args.source_size, args.source_frames)
    fed = []
    train_step = Trainer.train_step

    def recording(self, step, windows=None):
        fed.append(windows is not None)
        return train_step(self, step, windows)

    monkeypatch.setattr(Trainer, "train_step", recording)
    ahead = bench.bench_config(args, "tiny", data, tmp_path, True, cache=False, workers=1)
    inline = bench.bench_config(args, "tiny", data, tmp_path, True, cache=False, workers=0)
    assert fed == [True, True, False, False]
    assert ahead["workers"] == 1 and inline["workers"] == 0
    assert ahead["losses"] == pytest.approx(inline["losses"], rel=1e-5)  # the same steps either way


@pytest.mark.slow  # builds SDXL and SVD-XT at full size on the meta device (no weights): about a minute
def test_full_dry_run_counts_a_steps_flops_per_phase():
    result = subprocess.run([sys.executable, str(BENCH), "--scale", "full", "--dry-run"], capture_output=True,
                            text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in lines if line.split()[:1] in (["on"], ["off"])}
    cached, plain = rows["on"], rows["off"]  # encode, forward, backward, total (TFLOP)
    assert all(v > 0 for v in cached + plain)
    assert cached[0] < plain[0] and cached[1:3] == plain[1:3]  # the cache removes encoder work, nothing else
    assert abs(sum(cached[:3]) - cached[3]) < 0.02 and abs(sum(plain[:3]) - plain[3]) < 0.02
    ratio = next(line for line in lines if line.startswith("--no-cache computes"))
    assert f"{plain[3] / cached[3]:.2f}x" in ratio

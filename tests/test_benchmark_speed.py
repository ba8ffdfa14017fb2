"""`benchmarks/run.py --speed` (issue 33 item 5): the speed configurations side by side on tiny models (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mora.config import ATTENTION_BACKENDS, CACHES

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "run.py"
sys.path.insert(0, str(REPO / "benchmarks"))
import speed_configs  # noqa: E402  (benchmarks/)


def _bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # MORA_HOME: the test session's private cache (conftest)
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


@pytest.fixture(scope="module")
def speed_run(tmp_path_factory) -> tuple[str, dict]:
    """The smallest run: 4 steps (TaylorSeer predicts from its fourth), 32x32, a first-block threshold far
    above the toy models' step-to-step change (every step after the first reuses the blocks), a UNet preset
    and a preset that does not exist beside the transformer one."""
    out = tmp_path_factory.mktemp("speed") / "speed.json"
    result = _bench("--scale", "tiny", "--device", "cpu", "--speed", "--steps", "4", "--size", "32x32",
                    "--cache-threshold", "5", "--threads", "1", "--presets", "tiny-modern,tiny,tiny-modern-fast,no-such-preset",
                    "--json", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads(out.read_text())


def test_one_row_per_configuration_in_order(speed_run):
    stdout, data = speed_run
    names = [r["name"] for r in data["configs"]]
    assert names == (["default"] + [f"cache {c}" for c in CACHES if c != "none"]
                     + [f"attention {a}" for a in ATTENTION_BACKENDS if a not in ("auto", "sdpa")]
                     + ["preset tiny", "preset tiny-modern-fast", "preset no-such-preset"])
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("config "))
    assert lines[header].split() == " ".join(speed_configs.HEADERS).split()
    table = lines[header + 2: header + 2 + len(names)]
    assert all(line.startswith(name + "  ") for line, name in zip(table, names, strict=True)), table
    assert "NOT performance figures" in stdout


def test_the_default_row_is_todays_default_and_every_ratio_is_against_it(speed_run):
    stdout, data = speed_run
    rows = {r["name"]: r for r in data["configs"]}
    default = rows["default"]
    assert (default["preset"], default["cache"], default["attention"], default["status"]) == \
        ("tiny-modern", "none", "sdpa", "ran")
    assert default["applied"] == {"text_to_image": "cache none, attention sdpa",
                                  "image_to_video": "cache none, attention sdpa"}
    assert default["seconds"] > 0 and default["peak_bytes"] > 0 and default["blocks_skipped"] == 0
    for name in ("default", "cache first-block", "cache taylor", "preset tiny"):
        line = next(line for line in stdout.splitlines() if line.startswith(name + "  "))
        assert f" {default['seconds'] / rows[name]['seconds']:.2f}x " in line, line


def test_first_block_skips_whole_blocks_and_taylor_skips_layers(speed_run):
    _, data = speed_run
    rows = {r["name"]: r for r in data["configs"]}
    none, first, taylor = rows["default"], rows["cache first-block"], rows["cache taylor"]
    assert first["applied"]["image_to_video"] == "cache first-block@5, attention sdpa"
    # the cache's hook still calls every block; the skipped ones run none of their layers
    assert first["block_calls"] == none["block_calls"] > 0
    assert 0 < first["blocks_run"] < none["blocks_run"] == none["block_calls"]
    assert first["blocks_skipped"] == none["block_calls"] - first["blocks_run"]
    assert first["layer_calls"] < none["layer_calls"]
    # TaylorSeer predicts attention outputs inside blocks: every block runs, fewer of its layers do
    assert taylor["blocks_run"] == none["blocks_run"] and taylor["layer_calls"] < none["layer_calls"]


def test_refused_unavailable_and_missing_rows_say_why_and_run_nothing(speed_run):
    stdout, data = speed_run
    rows = {r["name"]: r for r in data["configs"]}
    assert rows["cache mag"]["status"].startswith("refused: ") and "ratios" in rows["cache mag"]["status"]
    if not torch.cuda.is_available():
        for backend in ("flash", "sage"):
            status = rows[f"attention {backend}"]["status"]
            assert status.startswith("unavailable: ") and "CUDA" in status
    assert rows["preset no-such-preset"]["status"].startswith("skipped: ")
    for name, row in rows.items():
        if row["status"] != "ran":
            assert "seconds" not in row
            assert f"- {name}: {row['status']}" in stdout
    unet = rows["preset tiny"]  # UNet families: the job runs, there are no transformer blocks to count
    assert unet["status"] == "ran" and unet["block_calls"] is None


def test_a_cache_on_a_unet_preset_is_refused_with_the_codes_reason():
    config = speed_configs.configs(["tiny"], None)[1]
    assert (config.cache, config.preset) == ("first-block", "tiny")
    reason = speed_configs.refusal(config, "cpu")
    assert reason.startswith("refused: ") and "UNet" in reason and "\n" not in reason


def test_the_threshold_goes_to_the_caches_that_take_one():
    caches = {c.cache: c.threshold for c in speed_configs.configs(["tiny-modern"], 0.2) if c.cache != "none"}
    assert caches == {"first-block": 0.2, "mag": None, "taylor": None}


@pytest.mark.parametrize("args, words", [
    (["--presets", "tiny-modern"], "only with --speed"),
    (["--cache-threshold", "0.1"], "only with --speed"),
    (["--speed", "--presets", "no-such-preset,tiny-modern"], "must exist"),
    (["--speed", "--cache-threshold", "0"], "positive"),
])
def test_bad_speed_arguments_are_one_line_exit_2(args, words):
    result = _bench("--scale", "tiny", "--device", "cpu", *args, timeout=120)
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr


def test_full_scale_serves_the_transformer_presets_models_from_their_configs():
    """The full-size builders, on the meta device, through the families' own loaders."""
    import fullsize

    from mora.config import get_preset
    from mora.data import fullsize_architectures
    from mora.tools import weights
    from mora.tools.toolset import _MODULES

    saved = dict(weights._IN_MEMORY)
    try:
        served = speed_configs.register_full_modern(fullsize_architectures(), "meta", ["modern", "not-a-preset"])
        modern = get_preset("modern")
        assert served == [modern.spec(role).model for role in speed_configs.ROLES]
        for role in speed_configs.ROLES:
            spec = modern.spec(role)
            pipe = _MODULES[spec.family].load(spec, fullsize._Recorder())
            key, entry = fullsize.find_entry(spec.model, "transformer")
            assert sum(p.numel() for p in pipe.transformer.parameters()) == entry["params"], key
    finally:
        weights._IN_MEMORY.clear()
        weights._IN_MEMORY.update(saved)


def test_another_preset_runs_at_its_own_steps(speed_run):
    """--steps 4 is the first preset's; tiny-modern-fast keeps 4 Lightning steps and 3 DMD steps, no CFG."""
    _, data = speed_run
    fast = next(r for r in data["configs"] if r["name"] == "preset tiny-modern-fast")
    assert fast["status"] == "ran", fast["status"]
    assert fast["block_calls"] == 2 * 4 + 2 * 3  # two blocks each: Qwen-Image 4 steps, Wan 2.2 3 steps

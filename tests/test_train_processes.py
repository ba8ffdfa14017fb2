"""Training that scales (issue 21, item 9): per-sample draws, --grad-accum, several processes.

A sample's noise, timesteps and dropout come from its own generator (seed, step, position in the
step's global batch), so how a step's samples are split (micro-batches, processes) does not change
what is computed: 1 process with batch 2 == batch 1 with --grad-accum 2 == 2 processes with batch 1
(gloo on the CPU), within float tolerance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import gradient_frames
from safetensors.torch import load_file

from mora import media

FAST = dict(preset="tiny", train_size=(64, 64), train_frames=4, rank=4, gradient_checkpointing=False, device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two different clips, so each sample of a 2-clip batch differs."""
    folder = tmp_path_factory.mktemp("clips")
    lines = []
    for i, name in enumerate(("a.mp4", "b.mp4")):
        media.write_video(gradient_frames(5, 64, 64, shift=3 + 20 * i), folder / name, fps=8)
        lines.append(json.dumps({"file_name": name, "text": ["a red fox", "a boat on a lake"][i]}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _weights(adapter: Path) -> dict:
    out = dict(load_file(str(adapter / "modulation.safetensors")))
    for agent in ("text_to_image_agent", "image_to_video_agent"):
        out.update({f"{agent}/{k}": v for k, v in load_file(str(adapter / f"{agent}.safetensors")).items()})
    return out


def _assert_same(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        # AdamW moves each weight by up to ~lr per step whatever its gradient's size, so float noise in a
        # small gradient can shift it by a fraction of that: allow 5% of the largest move (2 steps x lr 1e-2)
        np.testing.assert_allclose(wa[key].numpy(), wb[key].numpy(), rtol=0, atol=1e-3, err_msg=key)


def _train(data, out, **options):
    from mora.training import train

    return train(data, out, steps=2, lr=1e-2, mod_lr=1e-1, progress=False, **{**FAST, **options})


def test_a_samples_draws_do_not_depend_on_its_batch_or_micro_batch(data, tmp_path):
    from mora.training.objectives import Draws

    both = Draws.for_samples(0, 5, [0, 1]).randn((3,), __import__("torch").zeros(1))
    second = Draws.for_samples(0, 5, [1]).randn((3,), __import__("torch").zeros(1))
    np.testing.assert_array_equal(both[1].numpy(), second[0].numpy())
    batch2 = _train(data, tmp_path / "b2", batch_size=2)
    accum2 = _train(data, tmp_path / "a2", batch_size=1, grad_accum=2)
    _assert_same(batch2.adapter_dir, accum2.adapter_dir)
    np.testing.assert_allclose(batch2.final_loss, accum2.final_loss, rtol=1e-4)
    assert accum2.manifest["config"]["grad_accum"] == 2


@pytest.mark.slow
def test_two_gloo_processes_with_batch_1_equal_one_process_with_batch_2(data, tmp_path):
    one = _train(data, tmp_path / "one", batch_size=2)
    proc = subprocess.run([sys.executable, "-m", "mora.cli", "train", "--data", str(data), "--out",
                           str(tmp_path / "two"), "--processes", "2", "--preset", "tiny", "--device", "cpu",
                           "--steps", "2", "--lr", "1e-2", "--mod-lr", "1e-1", "--train-size", "64x64",
                           "--train-frames", "4", "--rank", "4", "--no-gradient-checkpointing", "--batch-size", "1",
                           "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("final loss") == 1  # process 0 reports
    _assert_same(one.adapter_dir, tmp_path / "two" / "adapter")
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]  # one writer: no duplicated lines
    expected = [json.loads(line)["loss"] for line in one.metrics_path.read_text().splitlines()]
    np.testing.assert_allclose([r["loss"] for r in records], expected, rtol=1e-4)

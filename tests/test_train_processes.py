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
from conftest import LONG, gradient_frames
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


def _train(data, out, **options):
    from mora.training import train

    return train(data, out, steps=2, lr=1e-2, mod_lr=1e-1, progress=False, **{**FAST, **options})


def _first_gradients(data, out, monkeypatch, **options) -> tuple[list, float]:
    """The step-1 gradients (averaged over micro-batches and processes, before clipping) and the final loss.

    Gradients, not trained weights: AdamW's first update is about lr * sign(g), so float noise in a
    near-zero gradient moves a weight by up to lr (a flaky 1e-3 check), and AdamW tells a gradient
    from twice it only through clipping and eps; summed (not averaged) micro-batches double the gradients.
    """
    from mora.training import trainer as trainer_module

    seen, average = [], trainer_module.average_gradients

    def recording(params, processes):
        average(params, processes)
        if not seen:
            seen.append([p.grad.detach().clone() if p.grad is not None else None for p in params])

    monkeypatch.setattr(trainer_module, "average_gradients", recording)
    result = _train(data, out, **options)
    monkeypatch.undo()
    return seen[0], result.final_loss


def _assert_same_gradients(ga: list, gb: list) -> None:
    assert len(ga) == len(gb) and all((a is None) == (b is None) for a, b in zip(ga, gb, strict=True))
    pairs = [(a, b) for a, b in zip(ga, gb, strict=True) if a is not None]
    scale = max(float(a.abs().max()) for a, _ in pairs)
    assert scale > 0
    for i, (a, b) in enumerate(pairs):  # noise measured ~2e-5 of the largest gradient; a sum doubles it
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-3 * scale, err_msg=f"tensor {i}")


def test_a_samples_draws_do_not_depend_on_its_batch_or_micro_batch(data, tmp_path, monkeypatch):
    from mora.training.objectives import Draws

    both = Draws.for_samples(0, 5, [0, 1]).randn((3,), __import__("torch").zeros(1))
    second = Draws.for_samples(0, 5, [1]).randn((3,), __import__("torch").zeros(1))
    np.testing.assert_array_equal(both[1].numpy(), second[0].numpy())
    grads2, loss2 = _first_gradients(data, tmp_path / "b2", monkeypatch, batch_size=2)
    grads_accum, loss_accum = _first_gradients(data, tmp_path / "a2", monkeypatch, batch_size=1, grad_accum=2)
    _assert_same_gradients(grads2, grads_accum)
    np.testing.assert_allclose(loss2, loss_accum, rtol=1e-4)
    config = json.loads((tmp_path / "a2" / "train.json").read_text())["config"]
    assert config["grad_accum"] == 2


def test_batch_2_equals_grad_accum_2_with_a_long_caption_beside_a_short_one(tmp_path, monkeypatch):
    """Issue 30 item 2: the short caption was padded with empty windows in the batch (4e-2 relative in gradients)."""
    data = tmp_path / "clips"
    data.mkdir()
    lines = []
    for i, text in enumerate(("a red fox", LONG)):
        media.write_video(gradient_frames(5, 64, 64, shift=3 + 20 * i), data / f"{i}.mp4", fps=8)
        lines.append(json.dumps({"file_name": f"{i}.mp4", "text": text}))
    (data / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    agents = ("text_to_image_agent", "image_to_image_agent", "image_to_video_agent")
    grads2, loss2 = _first_gradients(data, tmp_path / "b2", monkeypatch, batch_size=2, agents=agents)
    grads_accum, loss_accum = _first_gradients(data, tmp_path / "a2", monkeypatch, batch_size=1, grad_accum=2,
                                               agents=agents)
    _assert_same_gradients(grads2, grads_accum)
    np.testing.assert_allclose(loss2, loss_accum, rtol=1e-4)


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
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]  # one writer: no duplicated lines
    expected = [json.loads(line) for line in one.metrics_path.read_text().splitlines()]
    np.testing.assert_allclose([r["loss"] for r in records], [r["loss"] for r in expected], rtol=1e-4)
    # the step-1 gradient norm (after the all-reduce, before clipping): a sum over processes instead of a mean
    # doubles it (weights are compared through the gradients: see _first_gradients)
    np.testing.assert_allclose(records[0]["grad_norm"], expected[0]["grad_norm"], rtol=1e-4)
    assert _weights(tmp_path / "two" / "adapter").keys() == _weights(one.adapter_dir).keys()


def _train_cli(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mora.cli", "train", "--data", str(data), "--out", str(out), "--processes", "2",
            "--preset", "tiny", "--device", "cpu", "--steps", "6", "--lr", "1e-2", "--mod-lr", "1e-1", "--train-size",
            "64x64", "--train-frames", "4", "--rank", "4", "--no-gradient-checkpointing", "--batch-size", "1",
            "--checkpoint-every", "1", "--quiet", *extra]


@pytest.mark.slow
def test_ctrl_c_and_resume_with_two_processes(data, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) stops both processes with exit
    130, one message and a complete checkpoint; `--resume` with two processes then ends where an
    uninterrupted two-process run ends."""
    import os
    import signal
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cli(data, run), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "step-2").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert err.count("mora: interrupted") == 1, err[-3000:]  # the launcher says it; its processes do not
    manifest = json.loads((run / "train.json").read_text())
    assert manifest["status"] == "interrupted"
    steps = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").iterdir())
    assert steps and max(steps) < 6 and not list((run / "checkpoints").glob(".*"))  # no half-written folder
    assert (run / "checkpoints" / f"step-{max(steps)}" / "state.json").is_file()

    resumed = subprocess.run(_train_cli(data, run, "--resume"), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = subprocess.run(_train_cli(data, tmp_path / "whole"), capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 7))  # each step once, none lost
    np.testing.assert_allclose([r["loss"] for r in records if "loss" in r],
                               [r["loss"] for r in expected if "loss" in r], rtol=1e-5)
    got, want = _weights(run / "adapter"), _weights(tmp_path / "whole" / "adapter")
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=0, atol=1e-5, err_msg=k)
    assert json.loads((run / "train.json").read_text())["status"] == "complete"

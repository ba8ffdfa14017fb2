"""`--ema` (issue 21, item 11): the adapter written is the moving average of theta_i and z_i."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import gradient_frames
from safetensors.torch import load_file

from mora import media

FAST = dict(preset="tiny", train_size=(64, 64), train_frames=4, rank=4, gradient_checkpointing=False, device="cpu")
A4 = "image_to_video_agent"


def test_the_adapter_is_the_moving_average_and_checkpoints_keep_it(tmp_path):
    from mora.training import TrainConfig, Trainer

    data = tmp_path / "clips"
    data.mkdir()
    media.write_video(gradient_frames(5, 64, 64), data / "a.mp4", fps=8)
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "text": "a red fox"}) + "\n")
    seen = []
    trainer = Trainer(TrainConfig(data=data, out=tmp_path / "run", steps=3, lr=1e-2, mod_lr=1e-1, ema=True,
                                  ema_decay=0.9, agents=(A4,), checkpoint_every=1, **FAST),
                      progress=False, callback=lambda r: seen.append(trainer.models[A4].z.detach().clone()))
    result = trainer.run()
    expected = seen[0]  # diffusers' EMAModel: decay 0, then min(0.9, (1 + s) / (10 + s)) for s = 1, 2, ...
    for s, z in enumerate(seen[1:], start=1):
        decay = min(0.9, (1 + s) / (10 + s))
        expected = decay * expected + (1 - decay) * z
    written = load_file(str(result.adapter_dir / "modulation.safetensors"))[A4]
    torch.testing.assert_close(written, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(written, seen[-1])  # not the last trained value
    assert json.loads((result.adapter_dir / "adapter.json").read_text())["ema"] == {"decay": 0.9}
    assert (tmp_path / "run" / "checkpoints" / "step-3" / "ema.pt").is_file()


def test_report_to_tensorboard_writes_events_or_says_how_to_install(tmp_path, monkeypatch):
    import importlib.util

    import pytest

    from mora.errors import InputError
    from mora.training import TrainConfig, train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(InputError, match=r"--report-to: tensorboard is not installed; pip install 'mora\[tensorboard\]'"):
        TrainConfig(data=tmp_path, out=tmp_path / "run", report_to="tensorboard", **FAST).validate()
    monkeypatch.undo()
    pytest.importorskip("tensorboard")  # the optional extra
    data = tmp_path / "clips"
    data.mkdir()
    media.write_video(gradient_frames(5, 64, 64), data / "a.mp4", fps=8)
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "text": "a red fox"}) + "\n")
    train(data, tmp_path / "run", steps=1, agents=(A4,), report_to="tensorboard", progress=False, **FAST)
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))


def _lora(unet) -> dict[str, torch.Tensor]:
    from mora.adapters.lora import lora_state

    return {k: v.clone() for k, v in lora_state(unet).items()}


def test_the_written_lora_is_the_moving_average_not_the_raw_weights(tmp_path, monkeypatch):
    """Issue 30 item 3: `lora_state` aliased the live parameters, so the LoRA written with `--ema` was the
    raw one (read after the average was swapped back out); validation and `Trainer.adapter()` too."""
    from types import SimpleNamespace

    from mora.adapters.lora import read_lora_file
    from mora.training import TrainConfig, Trainer

    data = tmp_path / "clips"
    data.mkdir()
    media.write_video(gradient_frames(5, 64, 64), data / "a.mp4", fps=8)
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "text": "a red fox"}) + "\n")
    validated = []

    def fake_run_job(job, hooks):  # validation's video: what matters here is the adapter it is given
        validated.append(read_lora_file(Path(job["adapter"]) / f"{A4}.safetensors")[0])
        media.write_video(gradient_frames(3, 64, 64), job["out"], fps=8)
        return SimpleNamespace(manifest={})

    monkeypatch.setattr("mora.workflows.runner.run_job", fake_run_job)
    seen = []
    trainer = Trainer(TrainConfig(data=data, out=tmp_path / "run", steps=3, lr=1e-2, mod_lr=1e-1, ema=True,
                                  ema_decay=0.9, agents=(A4,), validate_every=3, **FAST),
                      progress=False, callback=lambda r: seen.append(_lora(trainer.models[A4].pipe.unet)))
    result = trainer.run()
    expected = seen[0]
    for s, state in enumerate(seen[1:], start=1):
        decay = min(0.9, (1 + s) / (10 + s))
        expected = {k: decay * expected[k] + (1 - decay) * v for k, v in state.items()}
    written, _ = read_lora_file(result.adapter_dir / f"{A4}.safetensors")
    moved = [k for k in expected if not torch.allclose(expected[k], seen[-1][k])]
    assert moved  # the average differs from the raw weights somewhere: the check below can tell them apart
    for k in expected:
        torch.testing.assert_close(written[k], expected[k], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(validated[0][k], expected[k], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(trainer.adapter().lora_states[A4][k], expected[k], rtol=1e-5, atol=1e-7)
    live = _lora(trainer.models[A4].pipe.unet)  # the trained weights are back in place after each write
    assert all(torch.equal(live[k], seen[-1][k]) for k in moved)

"""`mora train` on the command line: flags derived from the options model, refusals that write nothing,
and the one rule for --resume / --overwrite (issues 19.4, 20.4, 20.5, 21.8)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import gradient_frames

from mora import media
from mora.errors import InputError

FAST = dict(preset="tiny", train_size=(64, 64), train_frames=4, rank=4, gradient_checkpointing=False, device="cpu")


def _train_parser():
    from mora.cli_parsers import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices["train"]


def test_every_training_option_is_a_flag_derived_from_the_model():
    from mora.training.config import NOT_FLAGS, LoopOptions, TrainConfig

    flags = {s for a in _train_parser()._actions for s in a.option_strings}
    for name in [*TrainConfig.model_fields, *LoopOptions.model_fields]:
        if name not in NOT_FLAGS or name in ("data", "out", "preset", "device", "seed", "resume"):
            assert "--" + name.replace("_", "-") in flags, name
    for flag in ("--cond-dropout", "--lr-schedule", "--warmup-steps", "--dtype", "--gradient-checkpointing",
                 "--no-gradient-checkpointing", "--coupling-noise", "--real-frame-p", "--motion-bucket-id",
                 "--noise-aug", "--overwrite", "--no-coupling", "--preset-file"):
        assert flag in flags, flag


def test_flags_reach_the_training_options(monkeypatch, tmp_path):
    from mora import cli
    from mora.training import trainer

    seen = {}

    def fake_train(data, out, **options):
        seen.update(options, data=data, out=out)
        raise InputError("stop here")

    monkeypatch.setattr(trainer, "train", fake_train)
    code = cli.main(["train", "--data", "d", "--out", str(tmp_path / "r"), "--preset", "tiny", "--cond-dropout",
                     "0.2", "--lr-schedule", "cosine", "--warmup-steps", "3", "--dtype", "float32",
                     "--no-gradient-checkpointing", "--coupling-noise", "0.05", "--real-frame-p", "0.5",
                     "--motion-bucket-id", "100", "--noise-aug", "0.02", "--agents", "image_to_video_agent",
                     "--train-size", "64x64", "--no-coupling", "--overwrite"])
    assert code == 2
    assert seen["cond_dropout"] == 0.2 and seen["lr_schedule"] == "cosine" and seen["warmup_steps"] == 3
    assert seen["dtype"] == "float32" and seen["gradient_checkpointing"] is False and seen["coupling"] is False
    assert seen["coupling_noise"] == 0.05 and seen["real_frame_p"] == 0.5 and seen["overwrite"] is True
    assert (seen["motion_bucket_id"], seen["noise_aug"], seen["preset"]) == (100, 0.02, "tiny")
    assert "rank" not in seen and "steps" not in seen  # not given: the model's defaults apply


def test_a_refused_train_prints_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "clips").mkdir()
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "mora.cli", "train", "--data", str(tmp_path / "clips"), "--out",
                           str(run), "--preset", "tiny", "--device", "cpu"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mora: error: --data:") and "metadata.jsonl" in lines[0]
    assert not run.exists()  # no RUN_DIR, no train.log


def test_a_new_run_over_an_earlier_one_needs_overwrite(tmp_path):
    from mora.training import train

    data = tmp_path / "clips"
    data.mkdir()
    media.write_video(gradient_frames(5, 64, 64), data / "a.mp4", fps=8)
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "text": "a fox"}) + "\n")
    run = tmp_path / "run"
    (run / "checkpoints" / "step-9").mkdir(parents=True)  # an earlier run's leftovers
    (run / "train.json").write_text("{}")
    with pytest.raises(InputError, match="already holds a training run; pass --resume to continue it, --overwrite"):
        train(data, run, steps=1, progress=False, **FAST)
    with pytest.raises(InputError, match="--overwrite: cannot be used with --resume"):
        train(data, run, steps=1, progress=False, overwrite=True, resume=True, **FAST)
    result = train(data, run, steps=1, progress=False, overwrite=True, **FAST)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-1"]
    assert result.manifest["status"] == "complete" and Path(result.adapter_dir).is_dir()
    with pytest.raises(InputError, match=r"--resume: .*never' has no checkpoint"):
        train(data, tmp_path / "never", steps=1, progress=False, resume=True, **FAST)


@pytest.mark.slow  # a 20-step tiny training run in a subprocess
def test_training_progress_off_a_terminal_is_whole_lines(tmp_path):
    """Written to a pipe, the training bar's redraws were `\\r` fragments (`train:   1%|  | 2/200`):
    now a whole line each tenth of the way, the last one at the final step."""
    data = tmp_path / "clips"
    data.mkdir()
    media.write_video(gradient_frames(5, 64, 64), data / "a.mp4", fps=8)
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "text": "a fox"}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "mora.cli", "train", "--data", str(data), "--out", str(tmp_path / "run"),
                           "--preset", "tiny", "--device", "cpu", "--steps", "20", "--train-size", "64x64",
                           "--train-frames", "4"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "%|" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train: ")]
    assert [line.split(" (")[0] for line in lines] == [f"train: {n}/20 steps" for n in range(2, 21, 2)], lines
    assert all(re.search(r"\(loss=\d+\.\d{4}\)$", line) for line in lines), lines

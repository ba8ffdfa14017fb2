"""A trained adapter drives every task: `mora train` on the command line, then `--adapter` (tiny, CPU)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from conftest import gradient_frames
from test_cli import _one_error_line, mora
from test_training import write_data

import mora as mora_api
from mora import media
from mora.errors import InputError

A2, A3, A4 = "text_to_image_agent", "image_to_image_agent", "image_to_video_agent"


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """`mora train` on the command line: 3 steps on one clip, A2 + A3 + A4, tiny preset."""
    root = tmp_path_factory.mktemp("train")
    data = write_data(root / "clips", [{"file_name": "fox.mp4", "text": "a red fox running through snow"}],
                      {"fox.mp4": gradient_frames(6, 96, 64)})
    proc = mora("train", "--data", str(data), "--out", "run", "--preset", "tiny", "--steps", "3",
                "--agents", f"{A2},{A3},{A4}", "--train-size", "64x64", "--train-frames", "4", "--rank", "4",
                "--lr", "1e-2", "--mod-lr", "1e-1", "--device", "cpu", "--quiet", cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("run/adapter  (3 steps") and "modulation text_to_image_agent" in proc.stdout
    assert proc.stderr.strip() == ""  # --quiet: no bar, no log lines (they go to run/train.log)
    assert "done: 3 steps" in (root / "run" / "train.log").read_text()
    return root / "run" / "adapter"


def _run(tmp_path, task, name, **kwargs):
    options = dict(preset="tiny", device="cpu", progress=False, seed=0, out=tmp_path / name, metrics=False)
    return mora_api.run(task, **{**options, **kwargs})


def test_the_adapter_changes_the_video_and_the_manifest_names_it(tmp_path, adapter_dir):
    base = _run(tmp_path, "text-to-video", "base.mp4", prompt="a red fox running through snow")
    adapted = _run(tmp_path, "text-to-video", "adapted.mp4", prompt="a red fox running through snow",
                   adapter=adapter_dir)
    entry = adapted.manifest["adapter"]
    meta = json.loads((adapter_dir / "adapter.json").read_text())
    assert entry["path"] == str(adapter_dir) and set(entry["agents"]) == {A2, A3, A4}
    assert entry["modulation"] == pytest.approx(meta["modulation"])  # ||z_i|| per agent, as trained
    assert "adapter" not in base.manifest
    assert not np.array_equal(media.read_video(base.video_path).frames, media.read_video(adapted.video_path).frames)


@pytest.mark.parametrize("task", ["image-to-video", "extend", "edit", "connect", "simulate"])
def test_every_task_runs_with_the_adapter(tmp_path, adapter_dir, task):
    clip = media.write_video(gradient_frames(5, 96, 64), tmp_path / "clip.mp4", fps=8)
    frame = media.write_image(media.read_frame(clip), tmp_path / "frame.png")
    inputs = {"image-to-video": dict(image=frame, prompt="the fox leaps"), "extend": dict(video=clip),
              "edit": dict(video=clip, instruction="make it snowy"), "connect": dict(video_a=clip, video_b=clip),
              "simulate": dict(prompt="a blocky village")}[task]
    result = _run(tmp_path, task, "out.mp4", adapter=adapter_dir, **inputs)
    identity = hashlib.sha256((adapter_dir / "adapter.json").read_bytes()).hexdigest()
    assert result.manifest["adapter"]["sha256"] == identity  # the adapter's identity: adapter.json's sha256
    assert result.video_path.is_file()


def test_adapter_for_other_base_models_is_exit_2_naming_both(tmp_path, adapter_dir):
    proc = mora("text-to-video", "a fox", "--preset", "tiny-ltx", "--adapter", str(adapter_dir), "--out", "x.mp4",
                cwd=tmp_path)
    if proc.returncode == 0:  # tiny-ltx shares tiny's SDXL: the adapter's other agents must be refused
        pytest.fail("an adapter for tiny's SVD was accepted with tiny-ltx's LTX video model")
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "--adapter" in line and "tiny" in line
    assert not (tmp_path / "x_artifacts").exists()


def test_missing_or_corrupt_adapter_is_an_input_error(tmp_path, adapter_dir):
    import shutil

    with pytest.raises(InputError, match="--adapter"):
        _run(tmp_path, "text-to-video", "a.mp4", prompt="a fox", adapter=tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(adapter_dir, broken)
    (broken / f"{A2}.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="--adapter"):
        _run(tmp_path, "text-to-video", "b.mp4", prompt="a fox", adapter=broken)
    assert not (tmp_path / "a_artifacts").exists() and not (tmp_path / "b_artifacts").exists()


def test_train_bad_data_is_exit_2_and_writes_nothing(tmp_path):
    data = write_data(tmp_path / "clips", [{"file_name": "missing.mp4", "text": "a fox"}])
    proc = mora("train", "--data", str(data), "--out", "run", "--preset", "tiny", "--steps", "1", cwd=tmp_path)
    assert proc.returncode == 2
    assert "missing.mp4" in proc.stderr
    assert not (tmp_path / "run").exists()  # a refused run writes nothing, not even train.log (issue 20.4)

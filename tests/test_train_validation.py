"""Validation while training (issue 21, item 11): real videos, a contact sheet and scores every K steps."""

from __future__ import annotations

import json

import pytest
from conftest import gradient_frames

from mora import media

FAST = dict(preset="tiny", train_size=(64, 64), train_frames=4, rank=4, gradient_checkpointing=False, device="cpu")


@pytest.mark.slow
def test_validate_every_writes_videos_scores_and_a_panel(tmp_path):
    from mora.adapters.adapter import load_adapter
    from mora.training import train

    data = tmp_path / "clips"
    data.mkdir()
    media.write_video(gradient_frames(5, 64, 64), data / "a.mp4", fps=8)
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "text": "a red fox"}) + "\n")
    run = tmp_path / "run"
    result = train(data, run, steps=2, validate_every=2, validation_prompt=["a boat on a lake"], ema=True,
                   progress=False, **FAST)
    folder = run / "validation" / "step-2"
    video = media.read_video(folder / "v1.mp4", argument="video")
    assert video.num_frames >= 2 and video.frames.shape[-1] == 3  # a real video
    assert (folder / "contact_sheet.png").read_bytes()[:4] == b"\x89PNG"
    assert load_adapter(folder / "adapter", "tiny").agents == ["text_to_image_agent", "image_to_video_agent"]
    manifest = json.loads((folder / "v1.json").read_text())
    assert manifest["adapter"]["sha256"] and manifest["prompt"] == "a boat on a lake"
    rows = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    row = next(r for r in rows if "validation" in r)
    assert row["step"] == 2 and row["validation"]["prompts"] == ["a boat on a lake"]
    assert row["validation"]["videos"] == ["validation/step-2/v1.mp4"]
    assert 0 <= row["validation"]["quality"][0] <= 1 and row["validation"]["scores"][0]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and (run / "loss.png").is_file()

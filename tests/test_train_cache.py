"""Cached encodings (issue 21, item 10): computed once per clip and caption, kept under RUN_DIR/cache,
reused by the next run, rebuilt when a clip changes; a cached run computes what --no-cache does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import gradient_frames

from mora import media

FAST = dict(preset="tiny", train_size=(64, 64), train_frames=4, rank=4, gradient_checkpointing=False, device="cpu")


def _run(data: Path, out: Path, **options):
    from mora.training import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(data=data, out=out, **{"steps": 2, "lr": 1e-2, "mod_lr": 1e-1, **FAST, **options}),
                      progress=False)
    return trainer, trainer.run()


def _losses(result) -> list[float]:
    return [json.loads(line)["loss"] for line in result.metrics_path.read_text().splitlines()]


@pytest.mark.slow  # five short runs
def test_the_cache_matches_no_cache_is_reused_and_rebuilt_when_a_clip_changes(tmp_path):
    data = tmp_path / "clips"
    data.mkdir()
    media.write_video(gradient_frames(6, 96, 64), data / "a.mp4", fps=8)
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "text": "a red fox"}) + "\n")
    run = tmp_path / "run"
    first, cached = _run(data, run)
    assert first.encodings.computed == 3  # the clip, its caption, the empty caption
    assert len(list((run / "cache").glob("*.safetensors"))) == 3
    _, plain = _run(data, tmp_path / "plain", cache=False)
    assert not (tmp_path / "plain" / "cache").exists()
    np.testing.assert_allclose(_losses(cached), _losses(plain), rtol=1e-4)  # the same computation
    again, repeated = _run(data, run, overwrite=True)
    assert again.encodings.computed == 0  # everything read back from RUN_DIR/cache
    np.testing.assert_allclose(_losses(repeated), _losses(cached), rtol=1e-6)
    media.write_video(gradient_frames(6, 96, 64, shift=40), data / "a.mp4", fps=8)  # the clip changes
    changed, _ = _run(data, run, overwrite=True)
    assert changed.encodings.computed == 1  # the clip again; the captions are still good
    index = json.loads((run / "cache" / "index.json").read_text())
    assert index["models"] == {"text_to_image_agent": "tiny/sdxl-base", "image_to_video_agent": "tiny/svd"}
    other, _ = _run(data, run, overwrite=True, agents=("image_to_video_agent",))  # other base models: cleared
    assert other.encodings.computed == 1 and len(list((run / "cache").glob("*.safetensors"))) == 1


def test_dataloader_workers_decode_ahead_without_changing_the_run(tmp_path):
    data = tmp_path / "clips"
    data.mkdir()
    lines = []
    for i in range(2):
        media.write_video(gradient_frames(6, 64, 64, shift=3 + 30 * i), data / f"{i}.mp4", fps=8)
        lines.append(json.dumps({"file_name": f"{i}.mp4", "text": f"clip {i}"}))
    (data / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    options = dict(cache=False, agents=("image_to_video_agent",), steps=3)
    _, inline = _run(data, tmp_path / "inline", workers=0, **options)
    trainer, ahead = _run(data, tmp_path / "ahead", workers=2, **options)
    assert trainer.prefetched(0) is not None
    np.testing.assert_allclose(_losses(ahead), _losses(inline), rtol=1e-6)

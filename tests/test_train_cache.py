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


def test_load_clip_decodes_through_its_window_only(tmp_path, monkeypatch):
    """--no-cache reads each step's window: the same frames as the whole clip's slice, and no frame after it."""
    from mora.training import data as data_module
    from mora.training.data import check_dataset, cover_crop, load_clip, window_start

    media.write_video(gradient_frames(24, 96, 64), tmp_path / "a.mp4", fps=8)
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "text": "a red fox"}) + "\n")
    clip = check_dataset(tmp_path, 4)[0]
    whole = media.read_video(tmp_path / "a.mp4").frames
    decoded, iter_frames = [], media.iter_frames

    def counting(*args, **kwargs):
        for frame in iter_frames(*args, **kwargs):
            decoded[-1] += 1
            yield frame

    monkeypatch.setattr(data_module.media, "iter_frames", counting)
    for step in range(4):
        decoded.append(0)
        start = window_start(clip, 4, 0, step)
        got = load_clip(clip, frames=4, size=(64, 64), seed=0, step=step)
        np.testing.assert_array_equal(got.frames, cover_crop(whole[start:start + 4], (64, 64)).frames)
        assert decoded[-1] == start + 4
    assert min(window_start(clip, 4, 0, s) for s in range(4)) + 4 < 24  # so a later frame was never decoded
    media.write_video(gradient_frames(3, 96, 64), tmp_path / "a.mp4", fps=8)  # the file shrank since the check
    with pytest.raises(Exception, match=r"^--data: 'a.mp4' now has \d+ frames, fewer than the 24 it had"):
        load_clip(clip, frames=4, size=(64, 64), seed=0, step=0)

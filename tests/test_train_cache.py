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
    assert trainer.feed.prefetched(0) is not None
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
    with pytest.raises(Exception, match=r"^--data: 'a.mp4' now has fewer than \d+ frames, not the 24 it had"):
        load_clip(clip, frames=4, size=(64, 64), seed=0, step=0)


@pytest.mark.slow  # three short runs
def test_a4s_clip_embedding_of_the_real_first_frame_comes_from_the_cache(tmp_path):
    """Without coupling A4 is conditioned on the real first frame: its CLIP embedding is cached with the clip,
    so the image encoder runs when the clip is first encoded, not every step, and the losses are --no-cache's."""
    data = tmp_path / "clips"
    data.mkdir()
    media.write_video(gradient_frames(6, 96, 64), data / "a.mp4", fps=8)
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "text": "a red fox"}) + "\n")
    calls: dict[str, int] = {}

    def counted(name: str, **options):
        from mora.training import TrainConfig, Trainer

        cfg = TrainConfig(data=data, out=tmp_path / name, **{"steps": 3, "lr": 1e-2, "mod_lr": 1e-1, **FAST,
                                                             "coupling": False, **options})
        trainer = Trainer(cfg, progress=False)
        trainer.prepare()
        calls[name] = 0
        encoder = trainer.models["image_to_video_agent"].pipe.image_encoder
        encoder.register_forward_hook(lambda *_: calls.__setitem__(name, calls[name] + 1))
        return trainer.run()

    cached, plain = counted("cached"), counted("plain", cache=False)
    assert calls == {"cached": 1, "plain": 3}  # cached: once, for the clip's 6 frames; --no-cache: every step
    np.testing.assert_allclose(_losses(cached), _losses(plain), rtol=1e-4)
    counted("cached", overwrite=True)
    assert calls["cached"] == 0  # read back from RUN_DIR/cache


def test_conditioning_embeds_mix_cached_rows_and_computed_rows_with_gradients(monkeypatch):
    """Samples on the real first frame take the cached embedding; those on A2's estimate are encoded, with
    gradients reaching the estimate; with every sample on the real frame the encoder does not run."""
    import torch

    from mora.training import coupled

    runs = []

    def encoder(pipe, frames, k):
        runs.append(frames.shape[0])
        return frames.mean(dim=(2, 3)).unsqueeze(1) * 10.0  # (B, 1, 3): differentiable in the frames

    monkeypatch.setattr(coupled, "clip_image_tokens", encoder)
    frames = torch.rand(2, 3, 8, 8, requires_grad=True)
    cached = torch.full((2, 1, 3), -7.0)
    batch = coupled.Batch(first=frames.detach(), last=frames.detach(), texts=["a", "b"], fps=[8.0, 8.0],
                          first_image_embeds=cached)
    mixed = coupled.conditioning_embeds(None, batch, frames, torch.tensor([True, False]))
    assert torch.equal(mixed[0], cached[0])
    assert torch.allclose(mixed[1], frames[1].mean(dim=(1, 2)).unsqueeze(0) * 10.0)
    mixed.sum().backward()
    assert frames.grad[0].abs().sum() == 0 and frames.grad[1].abs().sum() > 0
    assert torch.equal(coupled.conditioning_embeds(None, batch, frames, torch.tensor([True, True])), cached)
    assert runs == [2]  # the all-real call did not encode
    batch.first_image_embeds = None  # --no-cache: always encoded
    assert coupled.conditioning_embeds(None, batch, frames, torch.tensor([True, True])).shape == (2, 1, 3)
    assert runs == [2, 2]


def test_entries_of_clips_that_changed_or_left_the_data_are_pruned(tmp_path):
    """Issue 30 item 7: the cache only grew; a run now removes the entries no clip or caption of its data has."""
    from mora.training import TrainConfig, Trainer
    from mora.training.encodings import EncodingCache, clip_key

    data = tmp_path / "clips"
    data.mkdir()
    rows = [("a", "a red fox"), ("b", "a boat"), ("c", "a cat")]
    for i, (name, _) in enumerate(rows):
        media.write_video(gradient_frames(6, 64, 64, shift=3 + 30 * i), data / f"{name}.mp4", fps=8)
    meta = data / "metadata.jsonl"
    meta.write_text("".join(json.dumps({"file_name": f"{n}.mp4", "text": t}) + "\n" for n, t in rows))
    run = tmp_path / "run"
    trainer, _ = _run(data, run, steps=1, batch_size=3)
    assert trainer.encodings.computed == 7  # three clips, three captions, the empty caption
    stale_a = clip_key(data / "a.mp4")
    media.write_video(gradient_frames(7, 64, 64, shift=50), data / "a.mp4", fps=8)  # a changes
    (data / "b.mp4").unlink()  # b leaves the data, and a's caption changes
    meta.write_text(json.dumps({"file_name": "a.mp4", "text": "a red fox at dusk"}) + "\n"
                    + json.dumps({"file_name": "c.mp4", "text": "a cat"}) + "\n")
    (run / "cache" / "left.123.tmp").write_bytes(b"cut")  # a write a crash interrupted
    Trainer(TrainConfig(data=data, out=run, steps=1, overwrite=True, **FAST), progress=False).prepare()
    kept = {p.name for p in (run / "cache").iterdir()}
    live = {clip_key(data / "c.mp4"), EncodingCache.text_key("sdxl", "a cat"), EncodingCache.text_key("sdxl", "")}
    assert kept == {"index.json", *(f"{k}.safetensors" for k in live)}
    assert stale_a != clip_key(data / "a.mp4")

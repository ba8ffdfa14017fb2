"""SVD learns the motion rate inference asks for (issue 30, item 1): windows sampled at the preset's fps
with a frame stride from each clip's rate, conditioned on the fps inference passes, recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gradient_frames

from mora import media
from mora.errors import InputError

A4 = "image_to_video_agent"
FAST = dict(preset="tiny", train_size=(64, 64), train_frames=4, rank=4, gradient_checkpointing=False, device="cpu")


@pytest.fixture(scope="module")
def fast_clip(tmp_path_factory) -> Path:
    """One 24 fps clip of 12 frames (tiny's SVD runs at 7 fps: every 3rd frame, a window spans 10)."""
    folder = tmp_path_factory.mktemp("fast")
    media.write_video(gradient_frames(12, 64, 64, shift=20), folder / "a.mp4", fps=24)
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "text": "a red fox"}) + "\n")
    return folder


def test_the_stride_is_the_clip_rate_over_the_training_rate_and_windows_must_fit(fast_clip, tmp_path):
    from mora.training.data import check_dataset, frame_stride

    assert [frame_stride(f, 7) for f in (24, 25, 30, 60, 7, 5)] == [3, 4, 4, 9, 1, 1]
    assert frame_stride(24, None) == 1 and frame_stride(0, 7) == 1
    (clip,) = check_dataset(fast_clip, train_frames=4, train_fps=7)
    assert (clip.fps, clip.stride, clip.span(4)) == (24, 3, 10)
    assert check_dataset(fast_clip, train_frames=4)[0].stride == 1  # no rate asked: every frame
    with pytest.raises(InputError, match=r"'a.mp4' has 12 frames, fewer than the 16 that --train-frames 6 spans at "
                                         r"--train-fps 7 \(every 3 of its 24 fps\)"):
        check_dataset(fast_clip, train_frames=6, train_fps=7)


@pytest.mark.parametrize("cache", [True, False])
def test_windows_take_every_stride_th_frame_and_svd_is_conditioned_on_the_inference_fps(fast_clip, tmp_path,
                                                                                         cache):
    from mora.config import get_preset
    from mora.training import TrainConfig, Trainer
    from mora.training.coupled import compute_losses
    from mora.training.data import cover_crop, window_start

    fps = get_preset("tiny").spec("image_to_video").settings.fps
    trainer = Trainer(TrainConfig(data=fast_clip, out=tmp_path / "run", agents=(A4,), cache=cache, workers=0,
                                  **FAST), progress=False)
    trainer.prepare()
    trainer.close()
    assert trainer.cfg.train_fps == fps == 7  # the preset's, by default
    whole = media.read_video(fast_clip / "a.mp4").frames
    pipe, calls = trainer.models[A4].pipe, []
    pipe.unet.register_forward_pre_hook(lambda m, a, k: calls.append((a, k)), with_kwargs=True)
    for step in range(3):
        start = window_start(trainer.clips[0], 4, 0, step)
        expected = cover_crop(whole[start:start + 10:3], (64, 64)).frames  # every 3rd frame
        pixels = torch.from_numpy(expected).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        batch = trainer.feed.batch(step)
        torch.testing.assert_close(batch.first[0], pixels[0])
        torch.testing.assert_close(batch.last[0], pixels[-1])
        if cache:  # every frame's latents come from the stride's frames too
            with torch.no_grad():
                mean = pipe.vae.encode(pixels).latent_dist.mean
            torch.testing.assert_close(batch.dists["svd_clip"][0], mean, rtol=1e-4, atol=1e-5)
        else:
            torch.testing.assert_close(batch.clips[0], pixels)
        with torch.no_grad():
            compute_losses(trainer.models, batch, trainer.feed.draws(step), trainer.cfg)
    args, kwargs = calls[0]
    assert kwargs["added_time_ids"][0, 0].item() == fps - 1  # as the pipeline passes fps=7: 6, not 23
    assert args[0].shape[1] == 4


def test_the_training_fps_and_strides_are_recorded_and_can_be_overridden(fast_clip, tmp_path):
    from mora.training import train

    result = train(fast_clip, tmp_path / "run", steps=1, agents=(A4,), train_fps=12, progress=False, **FAST)
    adapter = json.loads((result.adapter_dir / "adapter.json").read_text())
    assert adapter["svd_conditioning"]["fps"] == 12 and adapter["frame_strides"] == {"2": 1}
    assert result.manifest["data"]["fps"] == 12 and result.manifest["data"]["frame_strides"] == {"2": 1}
    assert result.manifest["config"]["train_fps"] == 12
    assert np.isfinite(result.final_loss)


# --- issue 30, item 5: defaults follow the preset ---------------------------------------------------------


def test_size_frames_and_fps_default_to_the_presets_and_flags_override(tmp_path):
    from mora.config import get_preset
    from mora.training import TrainConfig

    for name in ("tiny", "mora"):
        video = get_preset(name).spec("image_to_video").settings
        cfg = TrainConfig(data=tmp_path, out=tmp_path / "run", preset=name).validate()
        assert cfg.train_size == (video.width, video.height) and cfg.train_frames == video.num_frames
        assert cfg.train_fps == video.fps
    assert (TrainConfig(data=tmp_path, out=tmp_path / "run", preset="mora").validate().train_size) == (1024, 576)
    given = TrainConfig(data=tmp_path, out=tmp_path / "run", preset="mora", train_size="512x288", train_frames=14,
                        train_fps=6).validate()
    assert (given.train_size, given.train_frames, given.train_fps) == ((512, 288), 14, 6)
    sdxl = get_preset("tiny").spec("text_to_image").settings  # SDXL alone: the size its inference conditions on
    alone = TrainConfig(data=tmp_path, out=tmp_path / "run", preset="tiny", agents=("text_to_image_agent",))
    assert alone.validate().train_size == (sdxl.width, sdxl.height) and alone.train_fps is None


@pytest.mark.slow  # a data-free iteration, then a training run on its kept data
def test_mora_train_on_a_data_free_runs_kept_data_works_on_the_defaults(tmp_path, capsys):
    import mora
    from mora import cli

    out = tmp_path / "df"
    result = mora.train(prompts=["a red fox running through snow"], out=out, iterations=1, candidates=2, steps=1,
                        preset="tiny", rank=4, device="cpu", progress=False)  # the README's example, shorter
    config = json.loads((out / "train/iter-1/train.json").read_text())["config"]
    assert config["train_size"] == [96, 64] and config["train_frames"] == 4  # tiny's, not 512x288 x 14
    assert result.iterations[0]["kept"] == 1
    run = tmp_path / "run"
    code = cli.main(["train", "--data", str(out / "data/iter-1"), "--out", str(run), "--preset", "tiny", "--device",
                     "cpu", "--steps", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((run / "train.json").read_text())
    assert manifest["status"] == "complete" and manifest["config"]["train_frames"] == 4

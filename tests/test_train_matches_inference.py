"""Training trains what inference runs (issue 21, items 1-8), on the tiny preset on the CPU.

Each test pins one way training used to differ from inference: SVD's conditioning from the preset,
A4 conditioned on sharp frames, A3's unconditional branches, captions encoded as inference encodes
them, SDXL's size and crop ids, data-free iterations that start from the loaded state, modulation
drift and cosine in every record, and the flags for all of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LONG, gradient_frames

from mora import media
from mora.errors import InputError

A2, A3, A4 = "text_to_image_agent", "image_to_image_agent", "image_to_video_agent"
FAST = dict(preset="tiny", train_size=(64, 64), train_frames=4, rank=4, gradient_checkpointing=False, device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """One 6-frame 96x64 clip (wider than the 64x64 training size: it is cropped) with a long caption."""
    folder = tmp_path_factory.mktemp("clips")
    media.write_video(gradient_frames(6, 96, 64), folder / "fox.mp4", fps=8)
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "fox.mp4", "text": LONG}) + "\n")
    return folder


def trainer_for(data: Path, out: Path, **options):
    from mora.training import TrainConfig, Trainer

    trainer = Trainer(TrainConfig(data=data, out=out, **{**FAST, **options}), progress=False)
    trainer.prepare()
    trainer.close()
    return trainer


def capture(module: torch.nn.Module) -> list[tuple[tuple, dict]]:
    """Record (args, kwargs) of every call of `module`."""
    calls: list[tuple[tuple, dict]] = []
    module.register_forward_pre_hook(lambda m, args, kwargs: calls.append((args, kwargs)), with_kwargs=True)
    return calls


def losses(trainer, step: int = 0, train: bool = True):
    from mora.training.coupled import compute_losses

    return compute_losses(trainer.models, trainer.feed.batch(step), trainer.feed.draws(step), trainer.cfg,
                          train=train)


# --- 1. SVD conditioning from the preset ------------------------------------------------------------


def test_svd_conditioning_defaults_to_the_presets_and_is_recorded(data, tmp_path):
    from mora.config import get_preset
    from mora.training import TrainConfig

    settings = get_preset("tiny").spec("image_to_video").settings
    cfg = TrainConfig(data=data, out=tmp_path / "x", **FAST).validate()
    assert (cfg.motion_bucket_id, cfg.noise_aug) == (settings.motion_bucket_id, settings.noise_aug_strength)
    assert cfg.to_json()["motion_bucket_id"] == settings.motion_bucket_id  # train.json's config
    override = TrainConfig(data=data, out=tmp_path / "x", motion_bucket_id=40, noise_aug=0.02, **FAST).validate()
    assert (override.motion_bucket_id, override.noise_aug) == (40, 0.02)
    trainer = trainer_for(data, tmp_path / "run", agents=(A4,))
    calls = capture(trainer.models[A4].pipe.unet)
    losses(trainer)
    time_ids = calls[0][1]["added_time_ids"]
    assert time_ids[0, 1].item() == settings.motion_bucket_id
    assert time_ids[0, 2].item() == pytest.approx(settings.noise_aug_strength)


# --- 2. A4 conditioned on sharp frames --------------------------------------------------------------


def test_coupled_estimate_is_low_noise_and_real_frames_cut_the_coupling(data, tmp_path):
    from mora.training import TrainConfig

    assert TrainConfig.model_fields["coupling_noise"].default <= 0.2  # the estimate A4 sees is sharp
    trainer = trainer_for(data, tmp_path / "run", batch_size=4, coupling_noise=0.05, lambda_image=0.0,
                          cond_dropout=0.0, real_frame_p=0.0)
    calls = capture(trainer.models[A2].pipe.unet)
    losses(trainer)
    t = calls[0][0][1]
    assert len(t) == 8 and int(t[4:].max()) < 50  # coupled rows: t_c < 0.05 * 1000
    trainer.cfg.real_frame_p = 1.0  # every sample sees the real first frame: nothing crosses to A2
    losses(trainer).total.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in trainer.models[A2].lora_params)
    assert float(trainer.models[A4].z.grad.abs().sum()) > 0


# --- 3. A3's unconditional branches -------------------------------------------------------------------


def test_pix2pix_three_way_dropout_splits_as_diffusers_script():
    from mora.training.coupled import pix2pix_dropout

    text, image = pix2pix_dropout(torch.tensor([0.05, 0.15, 0.25, 0.5]), 0.1)
    assert text.tolist() == [True, True, False, False]  # text only, both, image only, neither
    assert image.tolist() == [False, True, True, False]


def test_pix2pix_drops_text_to_the_empty_prompt_and_image_to_zeros(data, tmp_path, monkeypatch):
    from mora.training import coupled

    trainer = trainer_for(data, tmp_path / "run", agents=(A3,), cond_dropout=0.1)
    pipe = trainer.models[A3].pipe
    calls = capture(pipe.unet)
    monkeypatch.setattr(coupled, "pix2pix_dropout", lambda u, p: (torch.ones_like(u, dtype=torch.bool),
                                                                  torch.ones_like(u, dtype=torch.bool)))
    losses(trainer)
    states = calls[0][1]["encoder_hidden_states"]
    empty = coupled.clip_caption_embeds(pipe, [LONG, ""])[0][1:]  # "" padded to the caption's windows
    torch.testing.assert_close(states[:, :-1], empty)  # not zeros: the encoding of "", as inference
    assert float(states[:, :-1].detach().abs().sum()) > 0
    assert float(calls[0][0][0][:, 4:].abs().sum()) == 0  # the source image's latents dropped


# --- 4. captions encoded as inference encodes them --------------------------------------------------


def test_captions_are_encoded_exactly_as_the_tools_encode_prompts(data, tmp_path):
    from mora.tools import clip_text
    from mora.training.coupled import clip_caption_embeds, sdxl_caption_embeds

    trainer = trainer_for(data, tmp_path / "run", agents=(A2, A3))
    sdxl, pix = trainer.models[A2].pipe, trainer.models[A3].pipe
    expected, tokens = clip_text.sdxl_embeds(sdxl, LONG, "")
    assert tokens.chunks >= 2  # longer than one 77-token window
    embeds, pooled, tokens_each = sdxl_caption_embeds(sdxl, [LONG])
    assert tokens_each == [embeds.shape[1]]
    torch.testing.assert_close(embeds, expected["prompt_embeds"], rtol=0, atol=0)
    torch.testing.assert_close(pooled, expected["pooled_prompt_embeds"], rtol=0, atol=0)
    expected, _ = clip_text.single_encoder_embeds(pix, LONG)
    torch.testing.assert_close(clip_caption_embeds(pix, [LONG])[0], expected["prompt_embeds"], rtol=0, atol=0)
    calls = capture(sdxl.unet)
    losses(trainer)
    assert calls[0][1]["encoder_hidden_states"].shape[1] == 77 * tokens.chunks + 1  # all windows, then z


# --- 5. SDXL's added time ids ----------------------------------------------------------------------------


def test_sdxl_time_ids_carry_source_size_and_crop_offset(data, tmp_path):
    from mora.training.data import cover_crop

    frames = gradient_frames(2, 96, 64)
    window = cover_crop(frames, (64, 64))
    assert window.source_size == (64, 96) and window.crop_top_left == (0, 16)
    np.testing.assert_array_equal(window.frames, frames[:, :, 16:80])
    trainer = trainer_for(data, tmp_path / "run", agents=(A2,))
    calls = capture(trainer.models[A2].pipe.unet)
    losses(trainer)
    time_ids = calls[0][1]["added_cond_kwargs"]["time_ids"]
    assert time_ids[0].tolist() == [64, 96, 0, 16, 64, 64]  # original (h, w), crop (top, left), target


# --- 7. drift and cosine, on the default (gradient checkpointing) path ----------------------------------


def test_drift_and_cosine_are_logged_everywhere_with_gradient_checkpointing(data, tmp_path):
    from mora.training import train

    options = {**FAST, "gradient_checkpointing": True}
    result = train(data, tmp_path / "run", steps=2, lr=1e-2, mod_lr=1e-1, progress=False, **options)
    records = [json.loads(line) for line in result.metrics_path.read_text().splitlines()]
    for key in ("modulation_drift", "modulation_cos"):
        assert set(records[-1][key]) == {A2, A4}
    assert all(v > 0 for v in records[-1]["modulation_drift"].values())
    assert all(-1 <= v < 1 for v in records[-1]["modulation_cos"].values())
    meta = json.loads((result.adapter_dir / "adapter.json").read_text())
    assert meta["modulation_drift"] == pytest.approx(records[-1]["modulation_drift"])
    assert meta["modulation_cos"] == pytest.approx(records[-1]["modulation_cos"])
    assert result.manifest["modulation_drift"] == pytest.approx(records[-1]["modulation_drift"])
    assert result.manifest["config"]["gradient_checkpointing"] is True


# --- 6. data-free iterations start from the loaded state; only eligible candidates ------------------


def test_a_loaded_adapter_is_the_runs_start_and_its_optimizer_state_carries_over(data, tmp_path):
    from mora.training import train
    from mora.training.loop import load_weights

    first = train(data, tmp_path / "first", steps=2, lr=1e-2, mod_lr=1e-1, progress=False, **FAST)
    trainer = trainer_for(data, tmp_path / "second", steps=2)
    load_weights(trainer, first.adapter_dir)
    stats = trainer.modulation_stats()
    assert stats["modulation"] == pytest.approx(first.modulation, rel=1e-5)  # the loaded z, not E("[Mod]")
    assert all(v == 0 for v in stats["modulation_drift"].values())
    states = trainer.optimizer.state_dict()["state"]
    assert states and all(int(s["step"]) == 2 for s in states.values())  # AdamW's moments of the first run


def _candidates(tmp_path, qualities) -> list[dict]:
    from PIL import Image

    out = []
    for n, q in enumerate(qualities, start=1):
        sheet = tmp_path / f"c{n}_sheet.png"
        Image.fromarray(np.full((16, 64, 3), 40 * n, np.uint8)).save(sheet)
        out.append({"number": n, "video": str(tmp_path / f"c{n}.mp4"), "sheet": str(sheet), "seed": n,
                    "enhanced_prompt": "a fox", "scores": {}, "quality": q})
    return out


def test_judges_and_the_human_see_only_candidates_above_the_floor(tmp_path, fake_openai):
    from test_data_free import _has_images, _judges

    from mora.training.loop import DataFreeLoop, check_loop

    config = _judges(fake_openai, {"judge-a": '{"choice": 1}', "judge-b": '{"choice": 2}'})
    shown = []
    cfg = check_loop(["a fox"], tmp_path / "run", iterations=1, candidates=3, steps=1, quality_floor=0.6,
                     llm_config=config, preset="tiny", device="cpu")
    loop = DataFreeLoop(cfg, human=lambda c, v: shown.append(([x["number"] for x in c], v)) or 2, progress=False)
    decision = loop.decide(1, 1, "a fox", _candidates(tmp_path, (0.5, 0.7, 0.65)))
    images = [p for p in [r for r in fake_openai.requests if _has_images(r)][0]["messages"][-1]["content"]
              if p["type"] == "image_url"]
    assert len(images) == 2  # candidate 1 (0.5) is under the floor: never shown
    assert decision["votes"] == {"score_card": 2, "llm:judge-a": 2, "llm:judge-b": 3}  # the candidates' numbers
    assert shown[0][0] == [2, 3] and decision["kept"] == 2 and decision["decided_by"] == "human"
    loop2 = DataFreeLoop(cfg, human=lambda c, v: 1, progress=False)
    with pytest.raises(InputError, match="not one of the candidates shown"):
        loop2._ask_human(_candidates(tmp_path, (0.5, 0.7, 0.65)), {})


# --- issue 30, item 2: a caption conditions alike in a batch and alone -------------------------------


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Two clips: a short caption (one 77-token window) and LONG (several)."""
    folder = tmp_path_factory.mktemp("mixed")
    lines = []
    for i, text in enumerate(("a red fox", LONG)):
        media.write_video(gradient_frames(5, 64, 64, shift=3 + 20 * i), folder / f"{i}.mp4", fps=8)
        lines.append(json.dumps({"file_name": f"{i}.mp4", "text": text}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_a_short_caption_beside_a_long_one_conditions_as_it_does_alone(mixed, tmp_path):
    """No empty 77-token windows that inference never makes: the batch's UNet output for the short
    caption equals the UNet's output for it alone (its own windows, then z), for SDXL and InstructPix2Pix."""
    trainer = trainer_for(mixed, tmp_path / "run", agents=(A2, A3), batch_size=2, cond_dropout=0.0, coupling=False)
    texts = trainer.feed.batch(0).texts
    short = texts.index("a red fox")
    for agent in (A2, A3):
        unet, calls, outputs = trainer.models[agent].pipe.unet, [], []

        def record(module, args, kwargs, out, calls=calls, outputs=outputs) -> None:
            calls.append((args, kwargs))
            outputs.append(out)

        unet.register_forward_hook(record, with_kwargs=True)
        with torch.no_grad():
            losses(trainer)
        (sample, t), kwargs = calls[0]
        states = kwargs["encoder_hidden_states"]
        assert states.shape[1] > 77 + 1  # the long caption's windows
        alone = torch.cat([states[short:short + 1, :77], states[short:short + 1, -1:]], dim=1)  # 1 window, z
        added = {k: v[short:short + 1] for k, v in (kwargs.get("added_cond_kwargs") or {}).items()}
        with torch.no_grad():
            expected = unet(sample[short:short + 1], t[short:short + 1], encoder_hidden_states=alone,
                            added_cond_kwargs=added or None, return_dict=False)[0]
        torch.testing.assert_close(outputs[0][0][short:short + 1], expected, rtol=1e-4, atol=1e-5)

"""The agents' own objectives (`mora.training.objectives`), checked against their definitions with stand-in UNets."""

from __future__ import annotations

import torch

BF16 = torch.bfloat16


def test_edm_noise_sigma_and_c_noise_are_fp32_with_bf16_weights():
    """Issue 30 item 8: the EDM noise, sigma, c_in, c_noise and the loss are fp32; only the UNet's input is bf16."""
    from mora.training.objectives import SVD_SIGMA_LOGNORMAL, Draws, svd_edm_loss

    seen = {}

    def unet(sample, timestep, encoder_hidden_states, added_time_ids, return_dict):
        seen.update(sample=sample, timestep=timestep)
        return (torch.full_like(sample[:, :, :4], 0.5),)

    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 3, 4, 8, 8, generator=gen).to(BF16)  # what a bf16 VAE gives
    cond = torch.randn(2, 4, 8, 8, generator=gen).to(BF16)
    loss = svd_edm_loss(unet, latents, cond, torch.zeros(2, 2, 16, dtype=BF16), torch.zeros(2, 3, dtype=BF16),
                        Draws.for_samples(0, 0, [0, 1]))
    draws = Draws.for_samples(0, 0, [0, 1])  # the same draws, followed in fp32
    sigma = draws.log_normal(*SVD_SIGMA_LOGNORMAL)
    clean = latents.float()
    s = sigma.view(2, 1, 1, 1, 1)
    noisy = clean + draws.randn((3, 4, 8, 8), clean) * s
    assert seen["timestep"].dtype == torch.float32
    torch.testing.assert_close(seen["timestep"], 0.25 * sigma.log(), rtol=0, atol=0)
    assert seen["sample"].dtype == BF16  # the UNet's input in its dtype, computed in fp32 first
    torch.testing.assert_close(seen["sample"][:, :, :4], (noisy / (s**2 + 1).sqrt()).to(BF16), rtol=0, atol=0)
    denoised = 0.5 * (-s / (s**2 + 1).sqrt()) + noisy / (s**2 + 1)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ((1 + s**2) / s**2 * (denoised - clean) ** 2).mean())


# --- issue 30, item 6: --noise-offset and --snr-gamma, as diffusers' training scripts --------------------


def test_snr_gamma_weights_each_sample_by_min_snr_as_diffusers_scripts():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from mora.training.objectives import ddpm_loss

    scheduler = DDPMScheduler(num_train_timesteps=1000)
    alphas = scheduler.alphas_cumprod.float()
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 4, 8, 8, generator=gen), torch.randn(3, 4, 8, 8, generator=gen)
    t = torch.tensor([5, 400, 990])
    plain = torch.nn.functional.mse_loss(pred, target)
    assert torch.equal(ddpm_loss(pred, target, t, alphas, "epsilon", None), plain)  # off: the plain MSE
    per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    snr = compute_snr(scheduler, t)
    for kind, denominator in (("epsilon", snr), ("v_prediction", snr + 1)):
        weights = torch.stack([snr, 5.0 * torch.ones_like(t)], dim=1).min(dim=1)[0] / denominator
        expected = (per_sample * weights).mean()  # train_text_to_image_sdxl.py's lines
        torch.testing.assert_close(ddpm_loss(pred, target, t, alphas, kind, 5.0), expected)
    assert not torch.allclose(ddpm_loss(pred, target, t, alphas, "epsilon", 5.0), plain)


def test_noise_offset_adds_a_constant_per_sample_and_channel():
    from mora.training.objectives import Draws, ddpm_noise

    like = torch.zeros(2, 4, 8, 8)
    plain = ddpm_noise(Draws.for_samples(0, 3, [0, 1]), like, 0.0)
    draws = Draws.for_samples(0, 3, [0, 1])
    offset = ddpm_noise(draws, like, 0.1)
    again = Draws.for_samples(0, 3, [0, 1])
    again.randn((4, 8, 8), like)
    shift = 0.1 * again.randn((4, 1, 1), like)  # the next draw of each sample's generator
    torch.testing.assert_close(offset - plain, shift.expand_as(plain))
    assert float(shift.abs().min()) > 0


def test_noise_offset_and_snr_gamma_are_off_by_default_and_reach_sdxl_and_pix2pix(tmp_path):
    import json

    from conftest import gradient_frames

    from mora import media
    from mora.training import TrainConfig, Trainer
    from mora.training.coupled import compute_losses

    assert TrainConfig.model_fields["noise_offset"].default == 0.0
    assert TrainConfig.model_fields["snr_gamma"].default is None
    data = tmp_path / "clips"
    data.mkdir()
    media.write_video(gradient_frames(5, 64, 64), data / "a.mp4", fps=8)
    (data / "metadata.jsonl").write_text(json.dumps({"file_name": "a.mp4", "text": "a red fox"}) + "\n")
    agents = ("text_to_image_agent", "image_to_image_agent")
    trainer = Trainer(TrainConfig(data=data, out=tmp_path / "run", preset="tiny", train_size=(64, 64), rank=4,
                                  device="cpu", agents=agents, coupling=False, cond_dropout=0.0), progress=False)
    trainer.prepare()
    trainer.close()

    def per_agent(**options) -> dict[str, float]:  # each agent alone: its loss changes by its own use only
        cfg, out = trainer.cfg.model_copy(update=options), {}
        for agent in agents:
            with torch.no_grad():
                losses = compute_losses({agent: trainer.models[agent]}, trainer.feed.batch(0), trainer.feed.draws(0),
                                        cfg)
            out[agent] = float(losses.per_agent[agent])
        return out

    default = per_agent()
    assert per_agent(noise_offset=0.0, snr_gamma=None) == default  # the defaults are "off"
    for options in ({"noise_offset": 0.5}, {"snr_gamma": 1e-4}):  # gamma below every t's SNR: every weight < 1
        changed = per_agent(**options)
        assert all(changed[a] != default[a] for a in agents), options

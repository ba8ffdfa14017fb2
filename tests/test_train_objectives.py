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

"""Each agent's own training objective, as its model was trained.

- SDXL and InstructPix2Pix: DDPM noise prediction. Timesteps uniform over the training schedule
  (the pipeline scheduler's betas, as `DDPMScheduler.from_config`), target = noise for
  `prediction_type` "epsilon" or the velocity for "v_prediction"; MSE. As in diffusers' SDXL and
  InstructPix2Pix training scripts, with their `--noise_offset` and `--snr_gamma` (min-SNR weighting),
  off by default as there (`ddpm_noise`, `ddpm_loss`).
- SVD: EDM preconditioning with the v-objective, as the public SVD fine-tuning scripts do (e.g.
  pixeli99/SVD_Xtend, after Karras et al. 2022): sigma ~ LogNormal(0.7, 1.6); input
  x / sqrt(sigma^2 + 1); timestep input 0.25 * log(sigma); denoised = c_skip * x + c_out * F(x) with
  c_skip = 1 / (sigma^2 + 1), c_out = -sigma / sqrt(sigma^2 + 1); loss weighted by
  (1 + sigma^2) / sigma^2 (EDM's lambda(sigma) for sigma_data = 1). The conditioning frame is
  noise-augmented with the preset's `noise_aug_strength` (also its time id) and conditioned on the
  preset's motion bucket, as inference runs it (`mora.training.coupled.image_to_video_loss`).

Every random draw comes from `Draws`: one CPU `torch.Generator` per sample, seeded by (seed, step,
the sample's index in the step's global batch). A step is a pure function of its seed on any
device, and a sample gets the same noise whichever process or micro-batch it lands in: 2
processes with batch 1 compute what 1 process with batch 2 does.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# SVD's EDM training distribution (P_mean, P_std).
SVD_SIGMA_LOGNORMAL = (0.7, 1.6)


class Draws:
    """Every random draw of one (micro-)batch: a CPU generator per sample, each draw one value or tensor per sample.

    Args:
        gens: one generator per sample, in batch order.

    Example:
        >>> d = Draws.for_samples(seed=0, step=3, indices=[0, 1])
        >>> d.rand().shape
        torch.Size([2])
    """

    def __init__(self, gens: list[torch.Generator]):
        self.gens = gens

    @classmethod
    def for_samples(cls, seed: int, step: int, indices: list[int]) -> Draws:
        """Generators of the samples `indices` (positions in step `step`'s global batch)."""
        return cls([torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, k]).generate_state(1)[0]))
                    for k in indices])

    def __len__(self) -> int:
        return len(self.gens)

    def randn(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """(B, *shape) standard normal noise on `like`'s device and dtype."""
        return torch.stack([torch.randn(shape, generator=g) for g in self.gens]).to(device=like.device,
                                                                                   dtype=like.dtype)

    def rand(self) -> torch.Tensor:
        """(B,) uniform [0, 1) on the CPU."""
        return torch.stack([torch.rand((), generator=g) for g in self.gens])

    def randint(self, high: int) -> torch.Tensor:
        """(B,) integers in [0, high) on the CPU."""
        return torch.stack([torch.randint(0, high, (), generator=g) for g in self.gens])

    def log_normal(self, loc: float, scale: float) -> torch.Tensor:
        """(B,) draws of exp(N(loc, scale^2)) on the CPU."""
        return torch.stack([torch.randn((), generator=g) for g in self.gens]).mul(scale).add(loc).exp()


@functools.lru_cache(maxsize=8)
def _alphas_cumprod(config_items: tuple) -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(dict(config_items)).alphas_cumprod.float()


def alphas_cumprod(scheduler: Any) -> torch.Tensor:
    """The training schedule's cumulative alphas, from the pipeline scheduler's config (as DDPM)."""
    items = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in scheduler.config.items()
                         if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                                  "trained_betas", "prediction_type", "rescale_betas_zero_snr")))
    return _alphas_cumprod(items)


def _coefficients(alphas: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = alphas.to(like.device)[t.to(like.device)].view(-1, *([1] * (like.ndim - 1)))
    return a.sqrt(), (1 - a).sqrt()


def add_noise(latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """q(x_t | x_0): sqrt(a_t) x_0 + sqrt(1 - a_t) noise."""
    sa, s1a = _coefficients(alphas, t, latents)
    return sa * latents + s1a * noise


def ddpm_target(latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas: torch.Tensor,
                prediction_type: str) -> torch.Tensor:
    """What the denoiser learns to predict: the noise, or the velocity sqrt(a) noise - sqrt(1-a) x_0."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        sa, s1a = _coefficients(alphas, t, latents)
        return sa * noise - s1a * latents
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def x0_estimate(noisy: torch.Tensor, pred: torch.Tensor, t: torch.Tensor, alphas: torch.Tensor,
                prediction_type: str) -> torch.Tensor:
    """The one-step estimate of the clean latents from x_t and the denoiser's prediction (differentiable)."""
    sa, s1a = _coefficients(alphas, t, noisy)
    if prediction_type == "epsilon":
        return (noisy - s1a * pred) / sa
    if prediction_type == "v_prediction":
        return sa * noisy - s1a * pred
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), target.float())


def ddpm_noise(draws: Draws, latents: torch.Tensor, offset: float) -> torch.Tensor:
    """The DDPM losses' noise for `latents` (B, C, h, w), with diffusers' `--noise_offset`: plus `offset`
    x N(0, 1) per sample and channel (a shift of the mean the model can learn; 0: off, as there).

    Example:
        >>> ddpm_noise(Draws.for_samples(0, 0, [0]), torch.zeros(1, 4, 8, 8), 0.0).shape
        torch.Size([1, 4, 8, 8])
    """
    noise = draws.randn(tuple(latents.shape[1:]), latents)
    if offset:
        noise = noise + offset * draws.randn((latents.shape[1], 1, 1), latents)
    return noise


def ddpm_loss(pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor, alphas: torch.Tensor,
              prediction_type: str, snr_gamma: float | None) -> torch.Tensor:
    """The MSE of the DDPM losses; with `snr_gamma`, diffusers' min-SNR weighting (`compute_snr`, Hang
    et al. 2023): each sample's MSE times min(SNR(t), gamma) / SNR(t) (/ (SNR(t) + 1) for v-prediction).

    Example:
        >>> ddpm_loss(torch.ones(2, 4), torch.zeros(2, 4), torch.tensor([1, 2]), torch.ones(3), "epsilon", None)
        tensor(1.)
    """
    if snr_gamma is None:
        return mse(pred, target)
    from types import SimpleNamespace

    from diffusers.training_utils import compute_snr

    snr = compute_snr(SimpleNamespace(alphas_cumprod=alphas), t.to(alphas.device))
    weights = snr.clamp(max=snr_gamma) / (snr if prediction_type == "epsilon" else snr + 1)
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, pred.ndim)))
    return (per_sample * weights.to(per_sample.device)).mean()


def svd_edm_loss(unet: Any, latents: torch.Tensor, cond_latents: torch.Tensor, encoder_states: torch.Tensor,
                 added_time_ids: torch.Tensor, draws: Draws) -> torch.Tensor:
    """SVD's EDM v-objective for clip latents (B, T, C, h, w) given the conditioning frame's latents (B, C, h, w).

    sigma, the noise, the noisy latents, c_in, c_noise and the loss are fp32 whatever the weights'
    dtype (as the pipeline's scheduler keeps them): only the UNet's input is cast, to the
    conditioning latents' dtype (the UNet's). In bf16, 0.25 log(sigma) would lose the timestep's
    low bits and the noise its precision.

    Args:
        unet: the `UNetSpatioTemporalConditionModel`.
        latents: the target clip's latents, scaled by the VAE's scaling factor (any float dtype).
        cond_latents: the noise-augmented conditioning frame's VAE latents (mode, unscaled, as the
            pipeline), in the UNet's dtype.
        encoder_states: cross-attention input (B, 1 + K, D): image embedding then z.
        added_time_ids: (B, 3): fps - 1, motion bucket, conditioning noise.
        draws: the samples' generators.
    """
    b = latents.shape[0]
    dtype = cond_latents.dtype
    sigma = draws.log_normal(*SVD_SIGMA_LOGNORMAL).to(latents.device)
    s = sigma.view(b, 1, 1, 1, 1)
    clean = latents.float()
    noisy = clean + draws.randn(tuple(latents.shape[1:]), clean) * s
    model_input = torch.cat([(noisy / (s**2 + 1).sqrt()).to(dtype),
                             cond_latents.unsqueeze(1).expand(-1, latents.shape[1], -1, -1, -1)], dim=2)
    pred = unet(model_input, 0.25 * sigma.log(), encoder_hidden_states=encoder_states,
                added_time_ids=added_time_ids, return_dict=False)[0]
    denoised = pred.float() * (-s / (s**2 + 1).sqrt()) + noisy / (s**2 + 1)
    weight = (1 + s**2) / s**2
    return (weight * (denoised - clean) ** 2).mean()

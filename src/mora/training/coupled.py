"""The coupled objective: L = L_A4(target clip | first frame from A2) + lambda * L_A2(first frame | prompt) (+ L_A3).

The gradient path that makes the agents learn to work together (paper, "self-modulated multi-agent
fine-tuning"):

    target first frame --noise(t_c)--> SDXL UNet(theta_2; concat(e_2, z_2)) --one-step x0 estimate-->
    SDXL VAE decode (with gradients) --> frame in [-1, 1] --+--> CLIP image encoder --> image embedding e_4
                                                            +--> + noise aug --> SVD VAE encode --> cond latent
    SVD UNet(theta_4; concat(e_4, z_4), cond latent) --> EDM v-loss against the target clip = L_A4

A4's loss thus reaches theta_2 and z_2 through frozen (but differentiable) VAEs and image encoder,
fed exactly as `StableVideoDiffusionPipeline` feeds an image (CLIP embedding of the clean frame, VAE
latent mode of the noise-augmented one), in tensors with no PIL round trip. The coupled estimate
is taken at its own timestep t_c < `coupling_noise` * T, in the same UNet call as A2's own loss rows.
Without coupling, A4 is conditioned on the real first frame and no gradient crosses agents.

A3 (InstructPix2Pix), when trained, learns the clip's first frame from its last frame and the
clip's text (the image-to-video route adapts an image to a text); its loss is added, uncoupled.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mora.adapters.modulation import append_modulation, clip_image_tokens
from mora.training.config import TrainConfig
from mora.training.models import AgentModel
from mora.training.objectives import (
    SVD_COND_SIGMA_LOGNORMAL,
    add_noise,
    alphas_cumprod,
    ddpm_target,
    mse,
    rand_log_normal,
    randn,
    svd_edm_loss,
    x0_estimate,
)

A2, A3, A4 = "text_to_image_agent", "image_to_image_agent", "image_to_video_agent"


logger = logging.getLogger(__name__)
# Where diffusers and transformers announce that a caption was cut to CLIP's 77-token window.
_TRUNCATION_LOGGERS = ("transformers.tokenization_utils_base",
                       "diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl",
                       "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_instruct_pix2pix")


@contextlib.contextmanager
def _truncation_noted(texts: list[str]) -> Iterator[None]:
    """Encode captions with the libraries' per-call truncation notices replaced by one debug line.

    Training encodes a caption in one 77-token CLIP window (diffusers' encode_prompt), while the
    SDXL tool chunks long prompts at inference (`mora.tools.clip_text`); the data-free loop's
    enhanced prompts often run longer, so the tail of such captions is not trained on.
    """
    from mora.tools.quiet import DropMessages

    drop = DropMessages("Token indices sequence length", "truncated because CLIP")
    for name in _TRUNCATION_LOGGERS:
        logging.getLogger(name).addFilter(drop)
    try:
        yield
    finally:
        for name in _TRUNCATION_LOGGERS:
            logging.getLogger(name).removeFilter(drop)
    if any(len(t.split()) > 40 for t in texts):
        logger.debug("long captions are truncated to CLIP's 77-token window in training")


@dataclass
class Batch:
    """A training batch.

    Args:
        clips: (B, T, 3, H, W) float32 in [-1, 1], on the training device.
        texts: the clips' captions.
        fps: the clips' frame rates (SVD's fps micro-conditioning).
    """

    clips: torch.Tensor
    texts: list[str]
    fps: list[float]

    @classmethod
    def from_frames(cls, frames: list[np.ndarray], texts: list[str], fps: list[float], device: str) -> Batch:
        """From (T, H, W, 3) uint8 arrays."""
        clips = torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3).float().div(127.5).sub(1.0)
        return cls(clips=clips.to(device), texts=list(texts), fps=[float(f) for f in fps])


@dataclass
class Losses:
    """The step's total loss (differentiable) and each agent's own loss."""

    total: torch.Tensor
    per_agent: dict[str, torch.Tensor]


def compute_losses(models: dict[str, AgentModel], batch: Batch, gen: torch.Generator, cfg: TrainConfig, *,
                   train: bool = True) -> Losses:
    """The coupled (or, with `cfg.coupling` off, separate) objective for one batch.

    Args:
        models: the trained agents by name.
        batch: the clips.
        gen: the step's CPU generator (all noise, timesteps and dropout come from it, in a fixed order).
        cfg: the run's options (coupling, lambda, dropout, ...).
        train: False for evaluation: no conditioning dropout.

    Example:
        >>> losses = compute_losses(models, batch, torch.Generator().manual_seed(0), cfg)  # doctest: +SKIP
        >>> losses.total.backward()
    """
    dropout = cfg.cond_dropout if train else 0.0
    first = batch.clips[:, 0]
    per_agent: dict[str, torch.Tensor] = {}
    cond_frame = first
    if A2 in models:
        per_agent[A2], estimate = text_to_image_pass(models[A2], first, batch.texts, gen, couple=cfg.coupled,
                                                     coupling_noise=cfg.coupling_noise, dropout=dropout)
        if estimate is not None:
            cond_frame = estimate
    if A3 in models:
        per_agent[A3] = image_to_image_loss(models[A3], first, batch.clips[:, -1], batch.texts, gen, dropout)
    if A4 in models:
        per_agent[A4] = image_to_video_loss(models[A4], batch.clips, cond_frame, batch.fps, gen,
                                            motion_bucket_id=cfg.motion_bucket_id, dropout=dropout)
    total = per_agent.get(A4, 0.0) + cfg.lambda_image * per_agent.get(A2, 0.0) + per_agent.get(A3, 0.0)
    return Losses(total=total, per_agent=per_agent)


def encode_latents(vae: Any, pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """VAE latents of frames (N, 3, H, W) in [-1, 1], sampled with `gen`, scaled by the VAE's factor."""
    with torch.no_grad():
        dist = vae.encode(pixels.to(vae.dtype)).latent_dist
        sample = dist.mean + dist.std * randn(tuple(dist.mean.shape), gen, dist.mean)
    return sample * vae.config.scaling_factor


def _drop(gen: torch.Generator, n: int, p: float, device: Any) -> torch.Tensor | None:
    """Which samples train the unconditional branch this step (None: none)."""
    mask = torch.rand(n, generator=gen) < p
    return mask.to(device) if p > 0 and bool(mask.any()) else None


def _where(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return x
    return torch.where(mask.view(-1, *([1] * (x.ndim - 1))), torch.zeros_like(x), x)


def text_to_image_pass(m: AgentModel, first: torch.Tensor, texts: list[str], gen: torch.Generator, *,
                       couple: bool, coupling_noise: float, dropout: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A2 (SDXL): its own noise-prediction loss and, when coupled, its decoded one-step first-frame estimate.

    Rows [0, B) train L_A2 at t ~ U[0, T); rows [B, 2B) (coupled only) noise the same frames at
    t_c ~ U[0, coupling_noise * T) and return x0's decoding with gradients, in [-1, 1].
    """
    pipe = m.pipe
    b, _, height, width = first.shape
    latents = encode_latents(pipe.vae, first, gen)
    with torch.no_grad(), _truncation_noted(texts):
        cond_embeds, _, cond_pooled, _ = pipe.encode_prompt(prompt=texts, device=first.device, num_images_per_prompt=1,
                                                            do_classifier_free_guidance=False)
    mask = _drop(gen, b, dropout, first.device)  # SDXL's unconditional branch: zero prompt embeddings
    embeds, pooled = _where(mask, cond_embeds), _where(mask, cond_pooled)
    alphas = alphas_cumprod(pipe.scheduler)
    steps = len(alphas)
    t = torch.randint(0, steps, (b,), generator=gen)
    if couple:  # the coupled rows are A2 as A4 sees it at inference: conditioned, never dropped
        t = torch.cat([t, torch.randint(0, max(1, int(coupling_noise * steps)), (b,), generator=gen)])
        latents = latents.repeat(2, 1, 1, 1)
        embeds, pooled = torch.cat([embeds, cond_embeds]), torch.cat([pooled, cond_pooled])
    noise = randn(tuple(latents.shape), gen, latents)
    noisy = add_noise(latents, noise, t, alphas)
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=first.device,
                            dtype=embeds.dtype).repeat(len(t), 1)  # original size, crop, target size
    pred = pipe.unet(noisy.to(pipe.unet.dtype), t.to(first.device), encoder_hidden_states=append_modulation(embeds, m.z),
                     added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}, return_dict=False)[0]
    kind = pipe.scheduler.config.prediction_type
    loss = mse(pred[:b], ddpm_target(latents[:b], noise[:b], t[:b], alphas, kind))
    if not couple:
        return loss, None
    x0 = x0_estimate(noisy[b:].float(), pred[b:].float(), t[b:], alphas, kind)
    frame = pipe.vae.decode((x0 / pipe.vae.config.scaling_factor).to(pipe.vae.dtype), return_dict=False)[0]
    return loss, frame.float().clamp(-1.0, 1.0)  # the pipeline's postprocess clamps too


def image_to_video_loss(m: AgentModel, clips: torch.Tensor, cond_frame: torch.Tensor, fps: list[float],
                        gen: torch.Generator, *, motion_bucket_id: int, dropout: float) -> torch.Tensor:
    """A4 (SVD): the EDM v-loss of the clip, conditioned on `cond_frame` (B, 3, H, W) as the pipeline feeds an image."""
    pipe = m.pipe
    b, frames = clips.shape[:2]
    vae = pipe.vae
    latents = encode_latents(vae, clips.flatten(0, 1), gen).unflatten(0, (b, frames))
    cond_sigma = rand_log_normal(b, *SVD_COND_SIGMA_LOGNORMAL, gen).to(clips.device)
    augmented = cond_frame + randn(tuple(cond_frame.shape), gen, cond_frame) * cond_sigma.view(b, 1, 1, 1)
    cond_latents = vae.encode(augmented.to(vae.dtype)).latent_dist.mode()  # unscaled, as the pipeline
    image_embeds = clip_image_tokens(pipe, cond_frame, 1)  # the clean frame, as the pipeline
    mask = _drop(gen, b, dropout, clips.device)  # SVD's unconditional branch: zero embedding and latent
    image_embeds, cond_latents = _where(mask, image_embeds), _where(mask, cond_latents)
    dtype = pipe.unet.dtype
    fps_ids = torch.tensor([max(0.0, round(f) - 1.0) for f in fps])  # SVD is conditioned on fps - 1
    time_ids = torch.stack([fps_ids, torch.full((b,), float(motion_bucket_id)), cond_sigma.cpu()], dim=1)
    return svd_edm_loss(pipe.unet, latents.to(dtype), cond_latents.to(dtype),
                        append_modulation(image_embeds.to(dtype), m.z), time_ids.to(clips.device, dtype), gen)


def image_to_image_loss(m: AgentModel, first: torch.Tensor, source: torch.Tensor, texts: list[str],
                        gen: torch.Generator, dropout: float) -> torch.Tensor:
    """A3 (InstructPix2Pix): learn the first frame from the last frame and the text (noise prediction)."""
    pipe = m.pipe
    b = first.shape[0]
    latents = encode_latents(pipe.vae, first, gen)
    with torch.no_grad(), _truncation_noted(texts):
        source_latents = pipe.vae.encode(source.to(pipe.vae.dtype)).latent_dist.mode()  # unscaled, as pix2pix
        embeds = pipe._encode_prompt(texts, first.device, 1, False)
    embeds = _where(_drop(gen, b, dropout, first.device), embeds)
    alphas = alphas_cumprod(pipe.scheduler)
    t = torch.randint(0, len(alphas), (b,), generator=gen)
    noise = randn(tuple(latents.shape), gen, latents)
    noisy = add_noise(latents, noise, t, alphas)
    model_input = torch.cat([noisy, source_latents.to(noisy.dtype)], dim=1).to(pipe.unet.dtype)
    pred = pipe.unet(model_input, t.to(first.device), encoder_hidden_states=append_modulation(embeds, m.z),
                     return_dict=False)[0]
    return mse(pred, ddpm_target(latents, noise, t, alphas, pipe.scheduler.config.prediction_type))

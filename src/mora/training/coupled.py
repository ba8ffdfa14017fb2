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

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mora.adapters.modulation import append_modulation, clip_image_tokens
from mora.training.config import TrainConfig
from mora.training.models import AgentModel
from mora.training.objectives import (
    Draws,
    add_noise,
    alphas_cumprod,
    ddpm_loss,
    ddpm_noise,
    ddpm_target,
    svd_edm_loss,
    x0_estimate,
)

A2, A3, A4 = "text_to_image_agent", "image_to_image_agent", "image_to_video_agent"

logger = logging.getLogger(__name__)


@dataclass
class Batch:
    """A training batch.

    Args:
        first: (B, 3, H, W) the clips' first frames, float32 in [-1, 1], on the training device.
        last: (B, 3, H, W) their last frames (A3's source image).
        texts: the clips' captions.
        fps: the clips' frame rates (SVD's fps micro-conditioning).
        clips: (B, T, 3, H, W) the whole windows; None when their latents come from the cache.
        source_sizes: (height, width) of each source video (SDXL's original-size conditioning).
        crops: (top, left) of each clip's crop (SDXL's crop conditioning).
        dists: cached latent distributions by kind (`sdxl_first`, `pix2pix_first`, `pix2pix_last`,
            `svd_clip`): (mean, std), rows sample-major; None: computed from the pixels.
        captions: where caption embeddings are kept (`mora.training.encodings`), None: computed.
        first_image_embeds: (B, 1, D) SVD's CLIP image embedding of each first frame, cached; None: computed.
    """

    first: torch.Tensor
    last: torch.Tensor
    texts: list[str]
    fps: list[float]
    clips: torch.Tensor | None = None
    source_sizes: list[tuple[int, int]] | None = None
    crops: list[tuple[int, int]] | None = None
    dists: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    captions: Any = None
    first_image_embeds: torch.Tensor | None = None

    @classmethod
    def from_frames(cls, frames: list[np.ndarray], texts: list[str], fps: list[float], device: str) -> Batch:
        """From (T, H, W, 3) uint8 arrays already at the training size (no crop)."""
        clips = torch.from_numpy(np.stack(frames)).permute(0, 1, 4, 2, 3).float().div(127.5).sub(1.0).to(device)
        return cls(first=clips[:, 0], last=clips[:, -1], texts=list(texts), fps=[float(f) for f in fps], clips=clips)

    @classmethod
    def from_windows(cls, windows: list[Any], texts: list[str], fps: list[float], device: str) -> Batch:
        """From `mora.training.data.ClipFrames` (frames plus source size and crop offset)."""
        batch = cls.from_frames([w.frames for w in windows], texts, fps, device)
        batch.source_sizes = [tuple(w.source_size) for w in windows]
        batch.crops = [tuple(w.crop_top_left) for w in windows]
        return batch

    def latents(self, kind: str, m: AgentModel, pixels: Any, draws: Draws) -> torch.Tensor:
        """VAE latents sampled with the samples' generators, scaled by the VAE's factor: (B * k, C, h, w).

        From the cached distribution of `kind` when there is one, else by encoding `pixels()` (B * k frames).
        """
        mean, std = self._dist(kind, m, pixels)
        per_sample = (mean.shape[0] // len(draws), *mean.shape[1:])
        return (mean + std * draws.randn(per_sample, mean).flatten(0, 1)) * m.pipe.vae.config.scaling_factor

    def mode(self, kind: str, m: AgentModel, pixels: Any) -> torch.Tensor:
        """The latent distribution's mode, unscaled (as the pipelines condition on an image)."""
        return self._dist(kind, m, pixels)[0]

    def _dist(self, kind: str, m: AgentModel, pixels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The (mean, std) of `kind`'s latents through `m`'s VAE: cached, or encoded from `pixels()`."""
        if self.dists is not None and kind in self.dists:
            mean, std = self.dists[kind]
            return mean.to(self.first.device, m.dtype), std.to(self.first.device, m.dtype)
        with torch.no_grad():
            dist = m.pipe.vae.encode(pixels().to(m.dtype)).latent_dist
        return dist.mean, dist.std

    def sdxl_time_ids(self) -> torch.Tensor:
        """(B, 6): original size, crop top-left, target size, as diffusers' SDXL training scripts pass them."""
        height, width = self.first.shape[-2:]
        b = self.first.shape[0]
        sizes = self.source_sizes or [(height, width)] * b
        crops = self.crops or [(0, 0)] * b
        return torch.tensor([[*sizes[i], *crops[i], height, width] for i in range(b)], dtype=torch.float32)


@dataclass
class Losses:
    """The step's total loss (differentiable) and each agent's own loss."""

    total: torch.Tensor
    per_agent: dict[str, torch.Tensor]


def compute_losses(models: dict[str, AgentModel], batch: Batch, draws: Draws, cfg: TrainConfig, *,
                   train: bool = True) -> Losses:
    """The coupled (or, with `cfg.coupling` off, separate) objective for one batch.

    Args:
        models: the trained agents by name.
        batch: the clips.
        draws: the samples' generators (all noise, timesteps and dropout come from them, in a fixed order).
        cfg: the run's options (coupling, lambda, dropout, ...).
        train: False for evaluation: no conditioning dropout, A4 always on the coupled frame.

    Example:
        >>> losses = compute_losses(models, batch, Draws.for_samples(0, 0, [0]), cfg)  # doctest: +SKIP
        >>> losses.total.backward()
    """
    dropout = cfg.cond_dropout if train else 0.0
    first = batch.first
    per_agent: dict[str, torch.Tensor] = {}
    cond_frame = first
    real = torch.ones(first.shape[0], dtype=torch.bool)  # A4 sees the real first frame (a CPU mask, as the draws)
    if A2 in models:
        per_agent[A2], estimate = text_to_image_pass(models[A2], first, batch, draws, cfg, couple=cfg.coupled,
                                                     dropout=dropout)
        if estimate is not None:
            # Some samples see the real first frame: at inference A4 gets SDXL's finished (sharp) frame.
            real = draws.rand() < (cfg.real_frame_p if train else 0.0)
            cond_frame = torch.where(real.to(first.device).view(-1, 1, 1, 1), first, estimate)
    if A3 in models:
        per_agent[A3] = image_to_image_loss(models[A3], batch, draws, dropout, cfg)
    if A4 in models:
        per_agent[A4] = image_to_video_loss(models[A4], batch, cond_frame, real, draws,
                                            motion_bucket_id=cfg.motion_bucket_id, noise_aug=cfg.noise_aug,
                                            dropout=dropout)
    total = per_agent.get(A4, 0.0) + cfg.lambda_image * per_agent.get(A2, 0.0) + per_agent.get(A3, 0.0)
    return Losses(total=total, per_agent=per_agent)


def _pad_windows(rows: list[torch.Tensor], empty: torch.Tensor, window: int) -> tuple[torch.Tensor, list[int]]:
    """(captions stacked, each caption's own token count): captions of fewer windows get the encoding
    of an empty window (BOS, EOS, padding) appended to stack, which `caption_mask` then hides."""
    chunks = max(r.shape[1] // window for r in rows)
    stacked = torch.cat([torch.cat([r, *[empty] * (chunks - r.shape[1] // window)], dim=1) for r in rows])
    return stacked, [r.shape[1] for r in rows]


def caption_mask(tokens: list[int], extra: int, like: torch.Tensor) -> torch.Tensor | None:
    """The UNet's `encoder_attention_mask` (B, L + extra): each sample attends to its own caption's
    `tokens[i]` tokens and the `extra` modulation tokens after the L caption positions, never to the
    empty windows a longer caption in its batch made it carry. None when every caption fills all L.

    A caption thus conditions in a batch exactly as alone, as inference encodes it (its own windows;
    the unconditional branch is as long as the prompt there too), and batch 2 equals --grad-accum 2.

    Example:
        >>> caption_mask([77, 154], 1, torch.zeros(2, 154, 8))[:, [76, 77, 154]]
        tensor([[1., 0., 1.],
                [1., 1., 1.]])
    """
    length = like.shape[1]
    if all(n == length for n in tokens):
        return None
    keep = torch.arange(length + extra).unsqueeze(0) < torch.tensor(tokens).unsqueeze(1)
    keep[:, length:] = True
    return keep.to(like.device, like.dtype)


def _cached(cache: Any, kind: str, text: str, compute: Any) -> dict[str, torch.Tensor]:
    if cache is None:
        return compute()
    return cache.get(cache.text_key(kind, text), compute)  # an `EncodingCache`


def sdxl_caption_embeds(pipe: Any, texts: list[str],
                        cache: Any = None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(prompt embeddings, pooled, each caption's token count) of captions, encoded as inference
    encodes a prompt (`tools/clip_text.py`).

    Long captions are not cut at 77 tokens: they are encoded in 75-token windows, as the SDXL tool
    does; one caption alone gives exactly the tool's embeddings. A batch is stacked at its longest
    caption's window count, the others' extra windows hidden by `caption_mask`. `cache` keeps each
    caption's encoding (`mora.training.encodings`).
    """
    from mora.tools.clip_text import count_chunks, encode

    pairs = [(t, e) for t, e in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
             if t is not None and e is not None]
    device = pipe.unet.device

    @torch.no_grad()
    def one(text: str) -> dict[str, torch.Tensor]:
        chunks, _ = count_chunks(pairs[-1][0], text)
        hidden, pooled = [], None
        for tokenizer, encoder in pairs:
            _, (ids,) = count_chunks(tokenizer, text)
            states, pooled = encode(tokenizer, encoder, ids, chunks, device, penultimate=True)
            hidden.append(states)
        return {"embeds": torch.cat(hidden, dim=-1), "pooled": pooled}

    found = [_cached(cache, "sdxl", t, lambda t=t: one(t)) for t in texts]
    empty = _cached(cache, "sdxl", "", lambda: one(""))["embeds"].to(device)
    window = pairs[-1][0].model_max_length
    embeds, tokens = _pad_windows([f["embeds"].to(device) for f in found], empty, window)
    return embeds, torch.cat([f["pooled"].to(device) for f in found]), tokens


def clip_caption_embeds(pipe: Any, texts: list[str], cache: Any = None) -> tuple[torch.Tensor, list[int]]:
    """(InstructPix2Pix's text embeddings of captions, as inference encodes them (`tools/clip_text.py`),
    each caption's token count): stacked as `sdxl_caption_embeds` stacks them."""
    from mora.tools.clip_text import count_chunks, encode

    device = pipe.unet.device

    @torch.no_grad()
    def one(text: str) -> dict[str, torch.Tensor]:
        chunks, (ids,) = count_chunks(pipe.tokenizer, text)
        return {"embeds": encode(pipe.tokenizer, pipe.text_encoder, ids, chunks, device, penultimate=False)[0]}

    found = [_cached(cache, "pix2pix", t, lambda t=t: one(t))["embeds"].to(device) for t in texts]
    empty = _cached(cache, "pix2pix", "", lambda: one(""))["embeds"].to(device)
    return _pad_windows(found, empty, pipe.tokenizer.model_max_length)


def _drop(draws: Draws, p: float, device: Any) -> torch.Tensor | None:
    """Which samples train the unconditional branch this step (None: none)."""
    mask = draws.rand() < p
    return mask.to(device) if p > 0 and bool(mask.any()) else None


def _where(mask: torch.Tensor | None, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
    """`other` (default zeros) where `mask` is set, per sample."""
    if mask is None:
        return x
    other = torch.zeros_like(x) if other is None else other.expand_as(x)
    return torch.where(mask.view(-1, *([1] * (x.ndim - 1))), other, x)


def text_to_image_pass(m: AgentModel, first: torch.Tensor, batch: Batch, draws: Draws, cfg: TrainConfig, *,
                       couple: bool, dropout: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A2 (SDXL): its own noise-prediction loss and, when coupled, its decoded one-step first-frame estimate.

    Rows [0, B) train L_A2 at t ~ U[0, T) (with `cfg.noise_offset` and `cfg.snr_gamma`, as
    diffusers' SDXL script); rows [B, 2B) (coupled only) noise the same frames at
    t_c ~ U[0, coupling_noise * T), as inference (no offset), and return x0's decoding with
    gradients, in [-1, 1]. The
    unconditional branch is what SDXL inference uses for an empty negative prompt (zeros when the
    pipeline forces them, else the encoding of "").
    """
    pipe = m.pipe
    b = first.shape[0]
    latents = batch.latents("sdxl_first", m, lambda: first, draws)
    mask = _drop(draws, dropout, first.device)
    zeros = mask is None or getattr(pipe.config, "force_zeros_for_empty_prompt", False)
    texts = batch.texts if zeros else [*batch.texts, ""]
    cond_embeds, cond_pooled, tokens = sdxl_caption_embeds(pipe, texts, batch.captions)
    attend = caption_mask(tokens[:b], m.z.shape[0], cond_embeds)  # a dropped sample: zeros or "" as long as its caption
    empty, empty_pooled = (None, None) if zeros else (cond_embeds[b:], cond_pooled[b:])
    cond_embeds, cond_pooled = cond_embeds[:b], cond_pooled[:b]
    embeds, pooled = _where(mask, cond_embeds, empty), _where(mask, cond_pooled, empty_pooled)
    alphas = alphas_cumprod(pipe.scheduler)
    steps = len(alphas)
    t = draws.randint(steps)
    noise = ddpm_noise(draws, latents, cfg.noise_offset)
    time_ids = batch.sdxl_time_ids()
    if couple:  # the coupled rows are A2 as A4 sees it at inference: conditioned, never dropped
        t = torch.cat([t, draws.randint(max(1, int(cfg.coupling_noise * steps)))])
        noise = torch.cat([noise, draws.randn(tuple(latents.shape[1:]), latents)])
        latents = latents.repeat(2, 1, 1, 1)
        embeds, pooled = torch.cat([embeds, cond_embeds]), torch.cat([pooled, cond_pooled])
        time_ids = time_ids.repeat(2, 1)
        attend = None if attend is None else attend.repeat(2, 1)
    noisy = add_noise(latents, noise, t, alphas)
    pred = pipe.unet(noisy.to(m.dtype), t.to(first.device), encoder_hidden_states=append_modulation(embeds, m.z),
                     encoder_attention_mask=attend,
                     added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids.to(first.device, embeds.dtype)},
                     return_dict=False)[0]
    kind = pipe.scheduler.config.prediction_type
    loss = ddpm_loss(pred[:b], ddpm_target(latents[:b], noise[:b], t[:b], alphas, kind), t[:b], alphas, kind,
                     cfg.snr_gamma)
    if not couple:
        return loss, None
    x0 = x0_estimate(noisy[b:].float(), pred[b:].float(), t[b:], alphas, kind)
    frame = pipe.vae.decode((x0 / pipe.vae.config.scaling_factor).to(m.dtype), return_dict=False)[0]
    return loss, frame.float().clamp(-1.0, 1.0)  # the pipeline's postprocess clamps too


def conditioning_embeds(pipe: Any, batch: Batch, cond_frame: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """SVD's CLIP image embedding of the conditioning frames, (B, 1, D): the cache's for samples that
    see the real first frame (`real`), computed (with gradients, for A2's estimates) for the others."""
    cached = batch.first_image_embeds
    if cached is not None and bool(real.all()):  # `real` is on the CPU: no device sync
        return cached
    embeds = clip_image_tokens(pipe, cond_frame, 1)  # the clean frame, as the pipeline
    if cached is None:
        return embeds
    return torch.where(real.to(embeds.device).view(-1, 1, 1), cached.to(embeds.dtype), embeds)


def image_to_video_loss(m: AgentModel, batch: Batch, cond_frame: torch.Tensor, real: torch.Tensor,
                        draws: Draws, *, motion_bucket_id: int, noise_aug: float,
                        dropout: float) -> torch.Tensor:
    """A4 (SVD): the EDM v-loss of the clip, conditioned on `cond_frame` (B, 3, H, W) as the pipeline feeds an image.

    `real` (B,), on the CPU: which samples' `cond_frame` is the clip's real first frame. The conditioning frame
    gets `noise_aug` noise and the motion bucket the preset runs with (`StableVideoDiffusionPipeline`'s
    `noise_aug_strength` and `motion_bucket_id`).
    """
    pipe = m.pipe
    b, fps, device = cond_frame.shape[0], batch.fps, cond_frame.device
    vae = pipe.vae
    latents = batch.latents("svd_clip", m, lambda: batch.clips.flatten(0, 1), draws).unflatten(0, (b, -1))
    augmented = cond_frame + draws.randn(tuple(cond_frame.shape[1:]), cond_frame) * noise_aug
    cond_latents = vae.encode(augmented.to(m.dtype)).latent_dist.mode()  # unscaled, as the pipeline
    image_embeds = conditioning_embeds(pipe, batch, cond_frame, real)
    mask = _drop(draws, dropout, device)  # SVD's unconditional branch: zero embedding and latent
    image_embeds, cond_latents = _where(mask, image_embeds), _where(mask, cond_latents)
    dtype = m.dtype
    fps_ids = torch.tensor([max(0.0, round(f) - 1.0) for f in fps])  # SVD is conditioned on fps - 1
    time_ids = torch.stack([fps_ids, torch.full((b,), float(motion_bucket_id)), torch.full((b,), float(noise_aug))],
                           dim=1)
    return svd_edm_loss(pipe.unet, latents, cond_latents.to(dtype),
                        append_modulation(image_embeds.to(dtype), m.z), time_ids.to(device, dtype), draws)


def pix2pix_dropout(u: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(text dropped, image dropped) per sample from uniform draws `u`: diffusers' `train_instruct_pix2pix.py`.

    u < p: text only; p <= u < 2p: both; 2p <= u < 3p: image only (each branch of InstructPix2Pix's
    three-way guidance is trained with probability p).

    Example:
        >>> pix2pix_dropout(torch.tensor([0.05, 0.15, 0.25, 0.5]), 0.1)
        (tensor([ True,  True, False, False]), tensor([False,  True,  True, False]))
    """
    return u < 2 * p, (u >= p) & (u < 3 * p)


def image_to_image_loss(m: AgentModel, batch: Batch, draws: Draws, dropout: float, cfg: TrainConfig) -> torch.Tensor:
    """A3 (InstructPix2Pix): learn the first frame from the last frame and the text (noise prediction).

    The unconditional text is the encoding of "" (what InstructPix2Pix inference uses), the
    unconditional image zeros, with the three-way dropout of `pix2pix_dropout`; `cfg.noise_offset`
    and `cfg.snr_gamma` as for SDXL.
    """
    pipe = m.pipe
    first = batch.first
    b = first.shape[0]
    latents = batch.latents("pix2pix_first", m, lambda: first, draws)
    source_latents = batch.mode("pix2pix_last", m, lambda: batch.last)  # unscaled, as pix2pix
    embeds, tokens = clip_caption_embeds(pipe, [*batch.texts, ""], batch.captions)
    embeds, empty = embeds[:b], embeds[b:]
    attend = caption_mask(tokens[:b], m.z.shape[0], embeds)
    if dropout > 0:
        text_drop, image_drop = pix2pix_dropout(draws.rand(), dropout)
        embeds = _where(text_drop.to(first.device), embeds, empty)
        source_latents = _where(image_drop.to(first.device), source_latents)
    alphas = alphas_cumprod(pipe.scheduler)
    t = draws.randint(len(alphas))
    noise = ddpm_noise(draws, latents, cfg.noise_offset)
    noisy = add_noise(latents, noise, t, alphas)
    model_input = torch.cat([noisy, source_latents.to(noisy.dtype)], dim=1).to(m.dtype)
    pred = pipe.unet(model_input, t.to(first.device), encoder_hidden_states=append_modulation(embeds, m.z),
                     encoder_attention_mask=attend, return_dict=False)[0]
    kind = pipe.scheduler.config.prediction_type
    return ddpm_loss(pred, ddpm_target(latents, noise, t, alphas, kind), t, alphas, kind, cfg.snr_gamma)

"""Modulation embeddings z_i: initialised from each agent's own encoder on "[Mod]", appended to its conditioning.

The paper: z_i = E_i("[Mod]"), the conditioning becomes concat(e_i, z_i) along the token axis (at
training and at inference), and the modulation factor of agent i is ||z_i||.

How E_i("[Mod]") is read for each family, with K = `mod_tokens` tokens of the cross-attention width:

- SDXL (text_to_image_agent) and InstructPix2Pix (image_to_image_agent): the pipeline's own prompt
  encoding of "[Mod]" (`encode_prompt`: for SDXL the penultimate hidden states of both text
  encoders, concatenated on the feature axis, exactly as SDXL builds `prompt_embeds`, so the width
  is the UNet's `cross_attention_dim`). z takes the K positions that end at the end-of-text token:
  with K = 1 that token alone, which under CLIP's causal attention is the one position that has
  seen the whole string (and the one CLIP pools). If "[Mod]" has fewer than K tokens, the first K
  positions are used (start token, "[Mod]", end token, padding: all real outputs of the encoder).
- SVD (image_to_video_agent) has no text encoder: its cross-attention sees the CLIP image embedding.
  E_4 is its own CLIP image encoder applied to an image of the text "[Mod]" (black on white,
  rendered with Pillow's built-in font), fed exactly as SVD feeds a frame. CLIP reads rendered text
  (its image and text towers align on typography), so this is the image tower's view of the same
  token; a neutral grey image would give an embedding that says nothing about "[Mod]". z takes the
  projected class token (equal to `image_embeds`, the one token SVD's UNet normally sees) and, for
  K > 1, the next K - 1 patch tokens through the same final norm and projection.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from mora.adapters.spec import MOD_TOKEN
from mora.errors import InputError

logger = logging.getLogger(__name__)

#: How z_i was initialised per family (written to adapter.json).
INIT_METHODS = {
    "sdxl": f"SDXL encode_prompt({MOD_TOKEN!r}) (both text encoders' penultimate states, concatenated): "
            "the K positions ending at the end-of-text token",
    "pix2pix": f"CLIP text encoder({MOD_TOKEN!r}) last hidden states: the K positions ending at the end-of-text token",
    "svd": f"CLIP image encoder on {MOD_TOKEN!r} rendered black on white (Pillow's built-in font), fed as SVD "
           "feeds a frame: projected class token (= image_embeds), then patch tokens",
}


def modulation_factor(z: torch.Tensor) -> float:
    """||z||: the Euclidean (Frobenius) norm over all K tokens; NaN for a tensor on the meta device,
    which has a shape and no values (the training benchmark's dry run builds the agents there).

    Example:
        >>> modulation_factor(torch.tensor([[3.0, 4.0]]))
        5.0
    """
    if z.is_meta:
        return math.nan
    return float(torch.linalg.vector_norm(z.detach().float()))


def append_modulation(embeds: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """concat(e, z) on the token axis: (B, L, D) and (K, D) -> (B, L + K, D), in e's dtype.

    Gradients flow into z (the cast is differentiable).

    Example:
        >>> append_modulation(torch.zeros(2, 77, 64), torch.ones(1, 64)).shape
        torch.Size([2, 78, 64])
    """
    if embeds.shape[-1] != z.shape[-1]:
        raise InputError(f"adapter: modulation width {z.shape[-1]} does not match the model's conditioning "
                         f"width {embeds.shape[-1]}; use an adapter trained for this model")
    tokens = z.to(device=embeds.device, dtype=embeds.dtype).unsqueeze(0).expand(embeds.shape[0], -1, -1)
    return torch.cat([embeds, tokens], dim=1)


def mod_positions(tokenizer: Any, k: int) -> list[int]:
    """Token positions of the encoded "[Mod]" that z takes (see the module docstring)."""
    ids = tokenizer(MOD_TOKEN, truncation=True, max_length=tokenizer.model_max_length).input_ids
    eos = len(ids) - 1  # the end-of-text token closes the unpadded sequence
    if k > tokenizer.model_max_length:
        raise InputError(f"--mod-tokens: {k} is more than the text encoder's {tokenizer.model_max_length} "
                         "positions; pass a smaller number")
    if eos + 1 >= k:
        return list(range(eos - k + 1, eos + 1))
    return list(range(k))


@torch.no_grad()
def text_modulation(pipe: Any, family: str, k: int) -> torch.Tensor:
    """E_i("[Mod]") for a text-conditioned pipeline (SDXL or InstructPix2Pix): (K, D) float32."""
    device = pipe.unet.device
    if family == "sdxl":
        embeds = pipe.encode_prompt(MOD_TOKEN, device=device, num_images_per_prompt=1,
                                    do_classifier_free_guidance=False)[0]
    elif family == "pix2pix":
        embeds = pipe._encode_prompt(MOD_TOKEN, device, 1, False)
    else:
        raise ValueError(f"no text encoder in family {family!r}")
    return embeds[0, mod_positions(pipe.tokenizer, k)].float().clone()


@functools.lru_cache(maxsize=4)
def mod_image(size: int) -> np.ndarray:
    """The token "[Mod]" rendered black on white, `size` x `size`: (H, W, 3) uint8."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    try:
        font = ImageFont.load_default(size=max(8, size // 5))  # FreeType build of Pillow: a scalable font
    except (TypeError, OSError):  # very old Pillow or no FreeType: the bitmap font
        font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), MOD_TOKEN, font=font)
    origin = ((size - (right - left)) / 2 - left, (size - (bottom - top)) / 2 - top)
    draw.text(origin, MOD_TOKEN, fill="black", font=font)
    return np.asarray(image)


def clip_pixels(pipe: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Frames in [-1, 1] (B, 3, H, W) -> CLIP input, as SVD's `_encode_image` prepares a frame, in tensors.

    The same antialiased resize to the encoder's size and the same normalisation as the pipeline's
    feature extractor, without the PIL round trip, so gradients reach the frame.
    """
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
        _resize_with_antialiasing,
    )

    size = pipe.image_encoder.config.image_size
    image = _resize_with_antialiasing(pixels.float(), (size, size))
    image = (image + 1.0) / 2.0
    extractor = pipe.feature_extractor
    mean = torch.tensor(extractor.image_mean, device=image.device).view(1, -1, 1, 1)
    std = torch.tensor(extractor.image_std, device=image.device).view(1, -1, 1, 1)
    encoder = pipe.image_encoder
    return ((image - mean) / std).to(dtype=next(encoder.parameters()).dtype)


def clip_image_tokens(pipe: Any, pixels: torch.Tensor, k: int) -> torch.Tensor:
    """The CLIP image encoder's projected tokens for frames in [-1, 1]: (B, K, D); token 0 = image_embeds."""
    encoder = pipe.image_encoder
    out = encoder(clip_pixels(pipe, pixels))
    if k == 1:
        return out.image_embeds.unsqueeze(1)
    hidden = out.last_hidden_state
    if k > hidden.shape[1]:
        raise InputError(f"--mod-tokens: {k} is more than the image encoder's {hidden.shape[1]} tokens; "
                         "pass a smaller number")
    return encoder.visual_projection(encoder.vision_model.post_layernorm(hidden[:, :k]))


@torch.no_grad()
def image_modulation(pipe: Any, k: int) -> torch.Tensor:
    """E_4("[Mod]") for SVD: the CLIP image encoder on the rendered token, (K, D) float32."""
    size = pipe.image_encoder.config.image_size
    image = torch.from_numpy(np.array(mod_image(size))).permute(2, 0, 1).float().div(127.5).sub(1.0)
    image = image.unsqueeze(0).to(pipe.image_encoder.device)
    return clip_image_tokens(pipe, image, k)[0].float().clone()


def initial_modulation(pipe: Any, family: str, k: int) -> torch.Tensor:
    """z_i = E_i("[Mod]") for the agent's pipeline family: (K, D) float32."""
    z = image_modulation(pipe, k) if family == "svd" else text_modulation(pipe, family, k)
    logger.info("%s: z initialised from %s (K=%d, width %d, ||z|| %.3f)", family, MOD_TOKEN, k, z.shape[-1],
                modulation_factor(z))
    return z

"""The `tiny` models: every pipeline family at toy size with random weights, built in code.

Nothing here downloads: tokenizers come from an in-code vocabulary. Each model is built once,
saved with `save_pretrained` under `$MORA_HOME/tiny-v<N>/<name>` and then loaded back with
`from_pretrained` by the family's loader, so the tests exercise the real loading path.
Output of these models is noise; they exist for tests, CI and offline smoke runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mora.config import mora_home

logger = logging.getLogger(__name__)

# Bump when a builder changes so stale caches are rebuilt rather than loaded.
TINY_VERSION = 7
_CHARS = string.ascii_lowercase + string.digits + ",.'-!?:;()"


def tiny_dir(name: str) -> Path:
    """Where tiny model `name` lives (built on first use)."""
    return mora_home() / f"tiny-v{TINY_VERSION}" / name


def ensure_tiny(model_id: str) -> Path:
    """Build `tiny/<name>` if it is not in the cache yet; return its directory."""
    name = model_id.split("/", 1)[1]
    if name not in _BUILDERS:
        raise ValueError(f"unknown tiny model {model_id!r}; known: {sorted(_BUILDERS)}")
    return build_once(tiny_dir(name), model_id, lambda folder: _BUILDERS[name]().save_pretrained(folder))


def build_once(target: Path, label: str, save: Callable[[Path], Any], marker: str = "model_index.json") -> Path:
    """`save(folder)` into a temporary folder, renamed to `target`, unless `target` is already built
    (`target / marker` exists).

    The rename makes a concurrent or interrupted build never leave half a model.
    """
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        logger.info("building tiny model %s (random weights) in %s", label, target)
        from mora.tools.quiet import no_library_bars

        with no_library_bars():  # transformers shows a "Writing model shards" bar per component
            save(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _clip_tokenizer():
    """A character-level CLIP BPE tokenizer from an in-code vocabulary (no merges)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _CHARS:
        vocab.setdefault(c, len(vocab))
    for c in _CHARS:
        vocab.setdefault(c + "</w>", len(vocab))
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "vocab.json").write_text(json.dumps(vocab))
        (Path(d) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(
            str(Path(d) / "vocab.json"), str(Path(d) / "merges.txt"), pad_token="<|endoftext|>",
            model_max_length=77,
        )


def _t5_tokenizer():
    """A character-level word-piece-free tokenizer standing in for T5's SentencePiece model."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, " ": 3}
    for c in _CHARS:
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )


def _clip_text_config(**overrides):
    from transformers import CLIPTextConfig

    cfg = dict(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=2 + 2 * len(_CHARS),
        max_position_embeddings=77, projection_dim=32, hidden_act="gelu",
    )
    cfg.update(overrides)
    return CLIPTextConfig(**cfg)


def _vae_2d():
    """Four blocks like the real VAEs: 8x spatial compression keeps the denoisers' maps tiny."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 8, 16, 16], in_channels=3, out_channels=3, norm_num_groups=8, layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4, sample_size=64,
    )


def _euler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )


def _sdxl_unet(*, seed: int, time_ids: int, cross_attention_dim: int):
    """A toy SDXL UNet: `time_ids` added time ids (6 base, 5 refiner) plus a 32-wide pooled embedding."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1), norm_num_groups=8,
        projection_class_embeddings_input_dim=time_ids * 8 + 32, cross_attention_dim=cross_attention_dim,
    )


def _build_sdxl_base():
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    # cross attention sees both text encoders' hidden states, concatenated (32 + 32)
    unet = _sdxl_unet(seed=0, time_ids=6, cross_attention_dim=64)
    return StableDiffusionXLPipeline(
        vae=_vae_2d(), text_encoder=CLIPTextModel(_clip_text_config()), tokenizer=_clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(_clip_text_config()), tokenizer_2=_clip_tokenizer(),
        unet=unet, scheduler=_euler(),
    )


def _build_sdxl_refiner():
    """Like SDXL's refiner: second text encoder only, aesthetic-score time ids."""
    from diffusers import StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModelWithProjection

    return StableDiffusionXLImg2ImgPipeline(
        vae=_vae_2d(), text_encoder=None, tokenizer=None,
        text_encoder_2=CLIPTextModelWithProjection(_clip_text_config()), tokenizer_2=_clip_tokenizer(),
        unet=_sdxl_unet(seed=1, time_ids=5, cross_attention_dim=32), scheduler=_euler(),
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
    )


# pix2pix's and SVD's toy UNets: two levels, 8 input channels (the latent + the image condition)
_TWO_LEVEL_UNET = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=8, out_channels=4)


def _seeded(seed: int, cls: type, **config):
    """`cls(**config)` with its random weights drawn after `torch.manual_seed(seed)` (the same weights each build)."""
    import torch

    torch.manual_seed(seed)
    return cls(**config)


def _build_pix2pix():
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    unet = _seeded(2, UNet2DConditionModel, **_TWO_LEVEL_UNET,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=8,
        attention_head_dim=4,
    )
    return StableDiffusionInstructPix2PixPipeline(
        vae=_vae_2d(), text_encoder=CLIPTextModel(_clip_text_config()), tokenizer=_clip_tokenizer(), unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _build_svd():
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = _seeded(3, UNetSpatioTemporalConditionModel, **_TWO_LEVEL_UNET,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32, num_attention_heads=4,
        projection_class_embeddings_input_dim=3 * 32, addition_time_embed_dim=32,  # fps, motion, noise
    )
    # SVD-XT's scheduler settings, as in its published scheduler_config.json
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
        num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True,
    )
    # 8x spatial compression like SVD's VAE; this class fixes GroupNorm at 32 groups, hence 32 channels.
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 32, 32, 32], in_channels=3, out_channels=3, layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * 4, latent_channels=4,
    )
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4, image_size=224,
            intermediate_size=37, patch_size=32,  # SVD resizes to 224 itself; 32px patches keep it cheap
        )
    )
    return StableVideoDiffusionPipeline(
        vae=vae, image_encoder=encoder, unet=unet, scheduler=scheduler,
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )


def _build_ltx():
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXConditionPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(4)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
        attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=32,
    )
    # Spatial and temporal compression 4 (two scaling blocks): frames must be 4k+1.
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False), upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
    )
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=4 + len(_CHARS), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                 relative_attention_num_buckets=8, dropout_rate=0.0)
    ).train(False)  # inference mode: no dropout
    return LTXConditionPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
        tokenizer=_t5_tokenizer(), transformer=transformer,
    )


# Toy Wan pieces, shared with `mora.tools.tiny_modern` (Wan 2.2 TI2V and VACE): one definition of each.
TOY_WAN_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, text_dim=32, freq_dim=256, ffn_dim=32,
    num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
)


def toy_wan21_vae():
    """The Wan 2.1 VAE at toy size (z_dim 16; 8x spatial, 4x temporal compression: 4k+1 frames)."""
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def toy_umt5_encoder():
    """Wan's text encoder (UMT5) at toy size, in inference mode (no dropout)."""
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(
        UMT5Config(vocab_size=4 + len(_CHARS), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, dropout_rate=0.0)
    ).train(False)


def _build_wan():
    """Wan 2.1 first-last-frame-to-video at toy size (8x spatial, 4x temporal compression: 4k+1 frames)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(5)
    vae = toy_wan21_vae()  # built in this order: the random weights stay those of the cached models
    image_tokens = (32 // 8) ** 2 + 1  # CLIP patches plus the class token, per conditioning image
    transformer = WanTransformer3DModel(
        **TOY_WAN_TRANSFORMER, in_channels=36, out_channels=16, image_dim=16,
        pos_embed_seq_len=2 * image_tokens,  # first and last frame
    )
    text_encoder = toy_umt5_encoder()
    encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=16, projection_dim=16, num_hidden_layers=2,
                                               num_attention_heads=2, image_size=32, intermediate_size=16,
                                               patch_size=8))
    return WanImageToVideoPipeline(
        tokenizer=_t5_tokenizer(), text_encoder=text_encoder, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=transformer, image_encoder=encoder, image_processor=CLIPImageProcessor(crop_size=32, size=32),
    )


_BUILDERS = {
    "sdxl-base": _build_sdxl_base,
    "sdxl-refiner": _build_sdxl_refiner,
    "pix2pix": _build_pix2pix,
    "svd": _build_svd,
    "ltx": _build_ltx,
    "wan": _build_wan,
}

"""Toy-size, random-weight counterparts of the modern families (Qwen-Image, Qwen-Image-Edit, Wan 2.2
TI2V-5B, Wan VACE), built in code like `mora.tools.tiny`.

Nothing here downloads. Each builder returns a diffusers pipeline with the real model's classes and
the real configuration *switches* (Qwen2.5-VL text encoder with its chat template tokens, the Wan 2.2
VAE with z_dim 48, a residual encoder and 2x2 patching, `expand_timesteps`, VACE control layers), only
small: a few layers, 32-wide. `ensure(name)` saves it with `save_pretrained` under `$MORA_HOME` and the
family's loader reads it back with `from_pretrained`, so the real loading path runs. Output is noise.

Tokenizers are in code: a byte-level BPE without merges (one token per UTF-8 byte) with Qwen's special
tokens for Qwen2.5-VL, and `mora.tools.tiny`'s character-level stand-in for UMT5.

Example:
    >>> from mora.tools import tiny_modern
    >>> path = tiny_modern.ensure("qwen-image")  # built once, then reused
    >>> spec = tiny_modern.tiny_spec("qwen-image")  # that path with toy call settings
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from mora.config import ModelSpec, mora_home
from mora.tools.modern_settings import tiny_settings
from mora.tools.tiny import TOY_WAN_TRANSFORMER, _t5_tokenizer, build_once, toy_umt5_encoder, toy_wan21_vae

logger = logging.getLogger(__name__)

# Bump when a builder changes so stale caches are rebuilt rather than loaded (kept apart from
# mora.tools.tiny's version: changing one set does not rebuild the other).
TINY_MODERN_VERSION = 1

# Qwen's chat and vision special tokens, in the order the real vocabulary lists them.
_QWEN_SPECIALS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
)


def tiny_modern_dir(name: str) -> Path:
    """Where tiny model `name` lives (built on first use)."""
    return mora_home() / f"tiny-modern-v{TINY_MODERN_VERSION}" / name


def ensure(name: str) -> Path:
    """Build tiny model `name` (or `tiny/<name>`) if it is not cached yet; return its directory.

    Built in a temporary folder and renamed into place, so a concurrent or interrupted build never
    leaves half a model (the same pattern as `mora.tools.tiny.ensure_tiny`).
    """
    name = name.removeprefix("tiny/")
    if name not in BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; known: {sorted(BUILDERS)}")

    def save(folder: Path) -> None:
        BUILDERS[name]().save_pretrained(folder)
        if name in _AFTER_SAVE:
            _AFTER_SAVE[name](folder)

    return build_once(tiny_modern_dir(name), name, save)


def tiny_spec(name: str, **changes: Any) -> ModelSpec:
    """A spec for tiny model `name`: its local directory and the family's toy call settings."""
    family = _FAMILY[name]
    settings = dataclasses.replace(tiny_settings(family), **changes)
    return ModelSpec(family, str(ensure(name)), settings)


# --- in-code tokenizers -----------------------------------------------------------------------------


def _qwen_tokenizer():
    """Qwen2's byte-level BPE with no merges: one token per UTF-8 byte, plus Qwen's special tokens."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    vocab: dict[str, int] = {}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    for token in _QWEN_SPECIALS:
        vocab[token] = len(vocab)
    return Qwen2Tokenizer(vocab=vocab, merges=[], additional_special_tokens=list(_QWEN_SPECIALS[1:]),
                          model_max_length=32768)


def _qwen_vl_processor(tokenizer):
    """Qwen2-VL's processor (image half: see `mora.tools.qwen_processor`) with small image bounds: a
    handful of vision tokens per image."""
    from transformers import Qwen2VLImageProcessorPil

    from mora.tools.qwen_processor import ImageOnlyQwen2VLProcessor

    # 56x56..112x112 pixels: 4 to 16 patches of 14, merged 2x2 into 1 to 4 tokens
    images = Qwen2VLImageProcessorPil(size={"shortest_edge": 56 * 56, "longest_edge": 112 * 112})
    return ImageOnlyQwen2VLProcessor(image_processor=images, tokenizer=tokenizer)


# --- Qwen-Image and Qwen-Image-Edit ------------------------------------------------------------------


def _qwen_vl_encoder(tokenizer):
    """Qwen2.5-VL at toy size (text 32 wide, 2 layers; vision tower 2 blocks), its token ids from `tokenizer`."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_SPECIALS}
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
            rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[2, 3, 3]),
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=37, num_heads=2, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, window_size=56, out_hidden_size=32, fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config).train(False)  # inference mode: no dropout


def _qwen_parts(seed: int):
    """(transformer, vae, scheduler) shared in shape by Qwen-Image and Qwen-Image-Edit."""
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    torch.manual_seed(seed)
    # 16 latent channels packed 2x2 -> 64 transformer inputs; rope axes sum to the head dim (16)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, axes_dims_rope=(4, 6, 6),
    )
    # 8x spatial compression (three downsamples), like the real VAE; a single image is one latent frame
    vae = AutoencoderKLQwenImage(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                 temperal_downsample=[False, True, True])
    # Qwen-Image's published scheduler settings: dynamic (resolution-dependent) exponential shift
    scheduler = FlowMatchEulerDiscreteScheduler(
        base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9, shift=1.0,
        shift_terminal=0.02, time_shift_type="exponential", use_dynamic_shifting=True,
    )
    return transformer, vae, scheduler


def _build_qwen_image():
    from diffusers import QwenImagePipeline

    tokenizer = _qwen_tokenizer()
    transformer, vae, scheduler = _qwen_parts(seed=10)
    return QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=_qwen_vl_encoder(tokenizer),
                             tokenizer=tokenizer, transformer=transformer)


def _build_qwen_image_edit():
    """Qwen-Image-Edit-2509/2511's pipeline (QwenImageEditPlusPipeline): the image is read by both the
    Qwen2.5-VL vision tower (semantics) and the VAE (appearance)."""
    from diffusers import QwenImageEditPlusPipeline

    tokenizer = _qwen_tokenizer()
    transformer, vae, scheduler = _qwen_parts(seed=11)
    return QwenImageEditPlusPipeline(
        scheduler=scheduler, vae=vae, text_encoder=_qwen_vl_encoder(tokenizer), tokenizer=tokenizer,
        processor=_qwen_vl_processor(tokenizer), transformer=transformer,
    )


# --- Wan 2.2 TI2V-5B and Wan VACE ---------------------------------------------------------------------


def _unipc(flow_shift: float):
    """Wan's scheduler: UniPC on flow-matching sigmas."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift)


def _build_wan22_ti2v():
    """Wan 2.2 TI2V-5B at toy size: the 2.2 VAE (z_dim 48, residual blocks, 2x2 patchify: 16x spatial,
    4x temporal) and `expand_timesteps` (the conditioning image replaces the first latent frame, whose
    timestep is 0), no CLIP image encoder, one transformer."""
    import torch
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanTransformer3DModel

    torch.manual_seed(12)
    vae = AutoencoderKLWan(
        base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True], is_residual=True, patch_size=2, scale_factor_spatial=16,
        scale_factor_temporal=4, in_channels=12, out_channels=12,  # RGB patchified 2x2 before the encoder
        latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
    )
    transformer = WanTransformer3DModel(**TOY_WAN_TRANSFORMER, in_channels=48, out_channels=48)
    return WanImageToVideoPipeline(
        tokenizer=_t5_tokenizer(), text_encoder=toy_umt5_encoder(), vae=vae, scheduler=_unipc(5.0),
        image_processor=None, image_encoder=None, transformer=transformer, transformer_2=None,
        boundary_ratio=None, expand_timesteps=True,
    )


def _build_wan_vace():
    """Wan VACE at toy size: the Wan 2.1 VAE (z_dim 16) and a VACE transformer whose control branch reads
    96 channels (inactive + reactive video latents, 2 x 16, plus the 8x8-folded mask, 64)."""
    import torch
    from diffusers import WanVACEPipeline, WanVACETransformer3DModel

    torch.manual_seed(13)
    vae = toy_wan21_vae()
    transformer = WanVACETransformer3DModel(**TOY_WAN_TRANSFORMER, in_channels=16, out_channels=16,
                                            vace_layers=[0, 1], vace_in_channels=96)
    return WanVACEPipeline(tokenizer=_t5_tokenizer(), text_encoder=toy_umt5_encoder(), vae=vae,
                           scheduler=_unipc(3.0), transformer=transformer)


def _name_hub_processor(folder: Path) -> None:
    """Record the processor as the Hub repos do (transformers' Qwen2VLProcessor), not as the image-only
    class it was built with: the tiny model's folder then reads like the real one, and the family's
    loader has to supply the image-only processor itself, as it must for the real model."""
    index = json.loads((folder / "model_index.json").read_text())
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    config_path = folder / "processor" / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["processor_class"] = "Qwen2VLProcessor"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


_AFTER_SAVE = {"qwen-image-edit": _name_hub_processor}

BUILDERS = {
    "qwen-image": _build_qwen_image,
    "qwen-image-edit": _build_qwen_image_edit,
    "wan22-ti2v": _build_wan22_ti2v,
    "wan-vace": _build_wan_vace,
}
# tiny model -> the pipeline family that runs it
_FAMILY = {"qwen-image": "qwen-image", "qwen-image-edit": "qwen-image-edit", "wan22-ti2v": "wan22",
           "wan-vace": "wan-vace"}


# --- toy few-step LoRAs (tiny-modern-fast): the adapters' loading path, not their effect ------------------

TINY_LORA_FILE = "lightning.safetensors"  # the one weight file each toy LoRA "repo" holds


def _toy_lora(model: str, pipeline_class: str, seed: int):
    """(pipeline class, LoRA state dict): a rank-4 LoRA on the attention projections of tiny `model`'s
    transformer with random, non-zero weights (peft's default zero init would leave the output unchanged)."""
    import diffusers
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = BUILDERS[model]().transformer
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    return getattr(diffusers, pipeline_class), get_peft_model_state_dict(transformer)


# toy LoRA -> (the tiny model it fits, the pipeline class whose save_lora_weights writes it, seed)
LORA_BUILDERS = {
    "qwen-image-lightning": ("qwen-image", "QwenImagePipeline", 20),
    "qwen-image-edit-lightning": ("qwen-image-edit", "QwenImageEditPlusPipeline", 21),
    "wan-vace-distill": ("wan-vace", "WanVACEPipeline", 22),
}


def ensure_lora(name: str) -> Path:
    """Build toy LoRA `name` (or `tiny/<name>`) once; return its folder, which holds `TINY_LORA_FILE`.

    Written to a temporary folder and renamed into place, as the toy models are.
    """
    name = name.removeprefix("tiny/")
    if name not in LORA_BUILDERS:
        raise ValueError(f"unknown tiny LoRA {name!r}; known: {sorted(LORA_BUILDERS)}")

    def save(folder: Path) -> None:
        cls, state = _toy_lora(*LORA_BUILDERS[name])
        cls.save_lora_weights(folder, transformer_lora_layers=state, weight_name=TINY_LORA_FILE)

    return build_once(tiny_modern_dir(f"lora-{name}"), f"LoRA {name}", save, marker=TINY_LORA_FILE)

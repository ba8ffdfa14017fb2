"""A full-size dry run of every built-in preset's video step on the meta device: no weights, no compute.

For each non-tiny preset and each of its video roles, the denoiser and the VAE are built on the meta
device from `mora.data`'s configs (`fullsize.build`), the latent the family's code makes for the
preset's default size and frame count is worked out (the settings, the families' frame arithmetic in
tools/*.py and `mora.limits`, the VAE's compression from its config), and the denoiser's forward
runs on meta tensors (they carry shapes and dtypes only): its output must have the latent's shape.

    python benchmarks/video_dry_run.py          # one row per (preset, video role); exit 1 on a mismatch

`benchmarks/run.py --scale full --dry-run` prints the same table after its parameter counts.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fullsize.py beside this file

import fullsize  # noqa: E402

VIDEO_ROLES = ("image_to_video", "extend", "connect", "edit_video")
TEXT_TOKENS = 128  # prompt tokens fed to the denoiser (any length: attention takes what it gets)


@dataclasses.dataclass
class StepCheck:
    """One video step: the call's frames, the latent it denoises and the denoiser's output on meta."""

    preset: str
    role: str
    family: str
    model: str
    frames: int
    latent: tuple[int, ...]
    output: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return self.latent == self.output


def builtin_video_steps() -> list[tuple[str, str, Any]]:
    """(preset, role, spec) for every video role of every built-in preset that is not a toy (`tiny*`)."""
    from mora.config import PRESETS

    return [(name, role, preset.roles[role]) for name, preset in PRESETS.items() if not name.startswith("tiny")
            for role in VIDEO_ROLES if role in preset.roles]


def call_frames(family: str, role: str, settings: Any) -> tuple[int, int]:
    """(frames of the role's default call, latent frames the model adds beside them: VACE's reference).

    The families' own arithmetic: an extension adds `limits.default_added_frames` after the input, SVD
    in clips of its trained length (`segments.extension_clips`), LTX with its tail (`ltx.extension_frames`),
    Wan 2.2 from the last frame (`wan22.extension_frames`); VACE rounds to 4k+1 (`wan_vace.round_frames`)
    and edits in windows of `max_frames`, its reference image one latent frame more.
    """
    from mora import limits
    from mora.tools import ltx, segments, wan22, wan_vace

    if role == "extend":
        added = limits.default_added_frames(settings)
        if family == "svd":
            return segments.extension_clips(added, settings.max_frames)[0], 0
        if family == "ltx":
            return ltx.extension_frames(settings, settings.tail_frames, added)[1], 0
        return wan22.extension_frames(settings, added), 0
    if family == "wan-vace":
        frames = wan_vace.round_frames(min(settings.num_frames, settings.max_frames), settings.frame_multiple)
        return frames, int(role == "edit_video" and settings.use_reference)
    return settings.num_frames, 0


def _compression(family: str, vae: Any) -> tuple[int, int, int]:
    """(spatial, temporal, latent channels) of a VAE, from its config as the pipelines read it."""
    c = vae.config
    if family == "svd":
        return 2 ** (len(c.block_out_channels) - 1), 1, c.latent_channels
    if family == "ltx":
        return c.spatial_compression_ratio, c.temporal_compression_ratio, c.latent_channels
    if family == "wan22":
        return c.scale_factor_spatial, c.scale_factor_temporal, c.z_dim
    return 2 ** len(c.temperal_downsample), 2 ** sum(c.temperal_downsample), c.z_dim  # Wan 2.1's VAE


def check_step(preset: str, role: str, spec: Any, modules: dict) -> StepCheck:
    """The dry run of one video step; `modules` caches the meta-built (denoiser, vae) per model."""
    import torch

    if spec.model not in modules:
        denoiser = "unet" if spec.family == "svd" else "transformer"
        modules[spec.model] = tuple(fullsize.build(fullsize.find_entry(spec.model, part)[1], dtype=torch.bfloat16)
                                    for part in (denoiser, "vae"))
    denoiser, vae = modules[spec.model]
    s = spec.settings
    frames, extra = call_frames(spec.family, role, s)
    space, time, channels = _compression(spec.family, vae)
    f = (frames - 1) // time + 1 + extra if time > 1 else frames
    h, w = s.height // space, s.width // space
    latent = (1, f, channels, h, w) if spec.family == "svd" else (1, channels, f, h, w)
    with torch.no_grad():
        out = FORWARDS[spec.family](denoiser, latent)
    return StepCheck(preset, role, spec.family, spec.model, frames, latent, tuple(out.shape))


def _meta(*shape: int) -> Any:
    import torch

    return torch.empty(shape, device="meta", dtype=torch.bfloat16)


def _svd(unet: Any, latent: tuple) -> Any:
    b, f, c, h, w = latent
    # the noisy latent and the conditioning image's latent, concatenated on channels (unet.in_channels)
    sample = _meta(b, f, unet.config.in_channels, h, w)
    return unet(sample, _meta(b), encoder_hidden_states=_meta(b, 1, unet.config.cross_attention_dim),
                added_time_ids=_meta(b, 3), return_dict=False)[0]


def _ltx(transformer: Any, latent: tuple) -> Any:
    b, c, f, h, w = latent
    # LTXConditionPipeline packs the latent to (batch, tokens, channels) with patch size 1
    packed = transformer(_meta(b, f * h * w, c), encoder_hidden_states=_meta(b, TEXT_TOKENS, 4096),
                         timestep=_meta(b, f * h * w), encoder_attention_mask=_meta(b, TEXT_TOKENS),
                         video_coords=_meta(b, 3, f * h * w), return_dict=False)[0]
    return packed.unflatten(1, (f, h, w)).permute(0, 4, 1, 2, 3)


def _wan(transformer: Any, latent: tuple) -> Any:
    b, c, f, h, w = latent
    cfg = transformer.config
    extra = {}
    if cfg.image_dim:  # Wan 2.1 FLF2V: CLIP tokens of the first and the last frame, stacked on the batch
        extra["encoder_hidden_states_image"] = _meta(2 * b, cfg.pos_embed_seq_len // 2, cfg.image_dim)
    # in_channels beyond the latent's: Wan 2.1 I2V's mask (4) and condition latent (16), concatenated
    return transformer(_meta(b, cfg.in_channels, f, h, w), _meta(b), _meta(b, TEXT_TOKENS, cfg.text_dim),
                       return_dict=False, **extra)[0]


def _wan22(transformer: Any, latent: tuple) -> Any:
    b, c, f, h, w = latent
    p = transformer.config.patch_size
    # expand_timesteps: one timestep per latent token (frame 0's held at 0)
    tokens = f * (h // p[1]) * (w // p[2])
    return transformer(_meta(*latent), _meta(b, tokens), _meta(b, TEXT_TOKENS, transformer.config.text_dim),
                       return_dict=False)[0]


def _vace(transformer: Any, latent: tuple) -> Any:
    b, c, f, h, w = latent
    cfg = transformer.config
    return transformer(_meta(*latent), _meta(b), _meta(b, TEXT_TOKENS, cfg.text_dim),
                       control_hidden_states=_meta(b, cfg.vace_in_channels, f, h, w),
                       control_hidden_states_scale=_meta(len(cfg.vace_layers)), return_dict=False)[0]


FORWARDS = {"svd": _svd, "ltx": _ltx, "wan": _wan, "wan22": _wan22, "wan-vace": _vace}


def video_dry_run() -> list[StepCheck]:
    """Every built-in non-tiny preset's video steps, checked on the meta device (seconds, no memory)."""
    modules: dict = {}
    with fullsize.quiet_transformers():
        return [check_step(preset, role, spec, modules) for preset, role, spec in builtin_video_steps()]


def rows(checks: list[StepCheck]) -> list[list[str]]:
    return [[c.preset, c.role, c.family, c.model, str(c.frames), "x".join(map(str, c.latent)),
             "ok" if c.ok else "MISMATCH " + "x".join(map(str, c.output))] for c in checks]


HEADERS = ["preset", "role", "family", "model", "frames", "latent", "denoiser output"]


def main() -> int:
    checks = video_dry_run()
    width = [max(len(r[i]) for r in [HEADERS, *rows(checks)]) for i in range(len(HEADERS))]
    for row in [HEADERS, *rows(checks)]:
        print("  ".join(cell.ljust(n) for cell, n in zip(row, width, strict=True)))
    bad = [c for c in checks if not c.ok]
    print(f"video dry run: {len(checks) - len(bad)}/{len(checks)} video steps keep the latent's shape")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

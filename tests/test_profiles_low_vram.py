"""`low-vram` on CUDA, checked on the CPU: fp8 storage of the denoiser (diffusers' layerwise casting),
group offloading of every model but the VAE, VAE tiling, and the rule that says which families get
fp8. No GPU here: group offloading runs with the CPU as its onload device (no CUDA stream), and the
CUDA decision is checked by running `apply(pipe, "cuda", "low-vram")` with the one CUDA-only step
(`group_offload`) redirected to the CPU.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch
from test_profiles import _run_small

from mora.tools import profiles, weights

# family -> (its tiny model, whether its denoiser's weights may be stored in fp8)
FAMILIES = {
    "sdxl": ("tiny/sdxl-base", True), "pix2pix": ("tiny/pix2pix", True), "svd": ("tiny/svd", False),
    "ltx": ("tiny/ltx", True), "wan": ("tiny/wan", True), "wan22": ("tiny/wan22-ti2v", True),
    "wan-vace": ("tiny/wan-vace", True), "qwen-image": ("tiny/qwen-image", True),
    "qwen-image-edit": ("tiny/qwen-image-edit", True),
}


def _load(model: str):
    """A fresh tiny pipeline (outside the cache: placement changes it for good)."""
    index = json.loads((Path(weights.model_source(model)) / "model_index.json").read_text())
    return weights.from_pretrained(getattr(diffusers, index["_class_name"]), model)


def _denoiser_classes(model: str) -> list[type]:
    index = json.loads((Path(weights.model_source(model)) / "model_index.json").read_text())
    return [getattr(diffusers, index[name][1]) for name in profiles.DENOISERS if index.get(name, [None, None])[1]]


def _group_offloaded(module: torch.nn.Module) -> list[str]:
    """Names of the submodules that carry diffusers' group offloading hook."""
    return [name for name, m in module.named_modules()
            if "group_offloading" in getattr(getattr(m, "_diffusers_hook", None), "hooks", {})]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fp8_rule_per_family(family):
    """fp8 for the classes that declare the layers to keep in full precision; SVD's UNet declares none."""
    model, allowed = FAMILIES[family]
    classes = _denoiser_classes(model)
    assert classes
    for cls in classes:
        reason = profiles.fp8_refusal(cls.__new__(cls))
        assert (reason is None) == allowed, (cls.__name__, reason)
        if not allowed:
            assert "_skip_layerwise_casting_patterns" in reason and cls.__name__ in reason


def test_fp8_rule_refuses_what_is_not_a_diffusers_model(caplog):
    plain = torch.nn.Linear(2, 2)
    assert "not a diffusers model" in profiles.fp8_refusal(plain)
    with caplog.at_level(logging.INFO, logger="mora.tools.profiles"):
        assert profiles.fp8_storage(plain, "unet")[0].startswith("unet not fp8 (")
    assert "not a diffusers model" in caplog.text
    assert plain.weight.dtype == torch.float32  # untouched


@pytest.mark.parametrize("model", ["tiny/ltx", "tiny/qwen-image"])
def test_fp8_storage_keeps_weights_in_float8_and_the_call_runs(model):
    reference = _run_small(_load(model))
    pipe = _load(model)
    applied = profiles.fp8_storage(pipe.transformer, "transformer")
    assert applied == ["transformer fp8 storage (compute in float32)"]
    dtypes = [p.dtype for p in pipe.transformer.parameters()]
    linear = [m.weight.dtype for m in pipe.transformer.modules() if isinstance(m, torch.nn.Linear)]
    assert dtypes.count(torch.float8_e4m3fn) > len(dtypes) // 2  # most weights stored in fp8
    assert torch.float8_e4m3fn in linear
    norms = [p.dtype for n, p in pipe.transformer.named_parameters() if "norm" in n]
    assert norms and set(norms) == {torch.float32}  # the class's precision-critical layers kept
    out = _run_small(pipe)
    assert out.shape == reference.shape and np.isfinite(out).all()


@pytest.mark.parametrize("model", ["tiny/sdxl-base", "tiny/ltx"])
def test_group_offload_on_cpu_hooks_every_model_but_the_vae_and_keeps_the_frames(model):
    reference = _run_small(_load(model))
    pipe = _load(model)
    assert profiles.group_offload(pipe, "cpu") == ["group offload (leaf level; resident: vae)"]
    denoiser = profiles._denoiser(pipe)
    assert len(_group_offloaded(denoiser)) > 5  # leaf level: a hook per layer
    assert _group_offloaded(pipe.text_encoder)
    assert not _group_offloaded(pipe.vae)
    out = _run_small(pipe)
    np.testing.assert_allclose(out, reference, atol=1e-6)


def test_group_offload_keeps_the_hooks_of_a_model_shared_with_a_pipeline_placed_before():
    """SDXL's refiner shares the base's second text encoder: placing the refiner leaves its hooks as they are."""
    base = _load("tiny/sdxl-base")
    profiles.group_offload(base, "cpu")

    def hooks(module):
        return [m._diffusers_hook.get_hook("group_offloading") for m in module.modules() if hasattr(m, "_diffusers_hook")]

    before = hooks(base.text_encoder_2)
    other = _load("tiny/sdxl-base")
    other.register_modules(text_encoder_2=base.text_encoder_2)
    profiles.group_offload(other, "cpu")
    assert before and all(a is b for a, b in zip(hooks(base.text_encoder_2), before, strict=True))
    assert _group_offloaded(other.unet)
    assert _run_small(other).shape == (64, 64, 3)


def test_offload_settings_use_streams_on_cuda_only():
    cuda, cpu = profiles.offload_settings("cuda:1"), profiles.offload_settings("cpu")
    assert cuda["use_stream"] and not cpu["use_stream"]
    assert cuda["onload_device"] == torch.device("cuda:1") and cuda["offload_device"] == torch.device("cpu")
    assert cuda["offload_type"] == cpu["offload_type"] == "leaf_level"


@pytest.fixture
def cuda_offload_on_cpu(monkeypatch):
    """`group_offload` asked for CUDA runs with the CPU as its onload device; the devices asked are kept."""
    asked, real = [], profiles.group_offload

    def on_cpu(pipe, device):
        asked.append(device)
        return real(pipe, "cpu")

    monkeypatch.setattr(profiles, "group_offload", on_cpu)
    return asked


def test_low_vram_on_cuda_chooses_fp8_group_offload_and_tiling(cuda_offload_on_cpu):
    reference = _run_small(_load("tiny/ltx"))
    pipe = _load("tiny/ltx")
    applied = profiles.apply(pipe, "cuda", "low-vram")
    assert applied == ["transformer fp8 storage (compute in float32)", "group offload (leaf level; resident: vae)",
                       "VAE tiling", "VAE slicing"]
    assert cuda_offload_on_cpu == ["cuda"]
    assert pipe._mora_profile == applied and pipe.vae.use_tiling
    assert "model CPU offload" not in applied
    # fp8 storage before group offloading: the offloaded layers hold fp8 weights, and the call runs
    assert any(p.dtype == torch.float8_e4m3fn for p in pipe.transformer.parameters())
    assert _group_offloaded(pipe.transformer)
    out = _run_small(pipe)
    assert out.shape == reference.shape and np.isfinite(out).all()


def test_low_vram_on_cuda_keeps_svd_weights_and_says_why(cuda_offload_on_cpu, caplog):
    pipe = _load("tiny/svd")
    with caplog.at_level(logging.INFO, logger="mora.tools.profiles"):
        applied = profiles.apply(pipe, "cuda", "low-vram")
    assert applied[0].startswith("unet not fp8 (UNetSpatioTemporalConditionModel declares no")
    assert "group offload (leaf level; resident: vae)" in applied
    assert "VAE tiling" not in applied  # SVD's temporal decoder has none
    assert "unet weights kept in float32" in caplog.text and "no VAE tiling" in caplog.text
    assert all(p.dtype == torch.float32 for p in pipe.unet.parameters())


def test_paper_keeps_model_cpu_offload_for_svd_on_cuda(monkeypatch, cuda_offload_on_cpu):
    pipe = _load("tiny/svd")
    offloaded = []
    monkeypatch.setattr(type(pipe), "enable_model_cpu_offload", lambda self, device=None: offloaded.append(device))
    assert profiles.apply(pipe, "cuda", "paper") == ["paper choices", "model CPU offload"]
    assert offloaded == ["cuda"] and cuda_offload_on_cpu == []  # no group offloading, no fp8
    assert all(p.dtype == torch.float32 for p in pipe.unet.parameters())

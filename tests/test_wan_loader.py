"""The one Wan loader (mora.tools.wan_loader) behind Wan 2.1, Wan 2.2 TI2V and Wan VACE, on tiny models."""

from __future__ import annotations

import dataclasses

import pytest

from mora.config import ModelSpec, get_preset
from mora.tools import tiny_modern, wan, wan22, wan_vace
from mora.tools.modern_settings import tiny_settings
from mora.tools.runtime import Runtime, cached_keys


def test_wan21_keeps_the_vae_and_the_image_encoder_in_float32_under_bf16():
    import torch

    rt16 = Runtime(device="cpu", dtype="bfloat16", progress=False)
    pipe = wan.load(get_preset("tiny-wan").spec("connect"), rt16)
    assert pipe.vae.dtype == torch.float32 and pipe.image_encoder.dtype == torch.float32
    assert pipe.transformer.dtype == torch.bfloat16


def test_wan22_refuses_a_model_that_is_not_ti2v():
    spec = ModelSpec("wan22", "tiny/wan", tiny_settings("wan22"))  # Wan 2.1: no expand_timesteps
    with pytest.raises(ValueError, match="not a Wan 2.2 TI2V model"):
        wan22.load(spec, Runtime(device="cpu", progress=False))


def test_flow_shift_replaces_the_scheduler_shift_and_keys_the_cache():
    rt = Runtime(device="cpu", progress=False)
    spec = tiny_modern.tiny_spec("wan-vace")
    shifted = dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, flow_shift=2.5))
    plain = dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, flow_shift=None))
    a, b = wan_vace.load(shifted, rt), wan_vace.load(plain, rt)
    assert a is not b
    assert a.scheduler.config.flow_shift == 2.5
    assert b.scheduler.config.flow_shift == 3.0  # the tiny repo's own scheduler config
    assert any(key[1] == f"{spec.model}#flow_shift=2.5" for key in cached_keys() if key[0] == "wan-vace")


def test_dmd_sigmas_replace_the_scheduler_and_key_the_cache():
    from mora.tools.schedulers import DMDScheduler

    rt = Runtime(device="cpu", progress=False)
    spec = tiny_modern.tiny_spec("wan22-ti2v")
    dmd = dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, steps=2, dmd_sigmas=(1.0, 0.5)))
    a, b = wan22.load(dmd, rt), wan22.load(spec, rt)
    assert a is not b and type(a.scheduler) is DMDScheduler and type(b.scheduler) is not DMDScheduler
    assert a.scheduler.config.shift == 1.0 and a.scheduler.config.stochastic_sampling
    assert any(key[1] == f"{spec.model}#dmd_sigmas=1.0,0.5" for key in cached_keys() if key[0] == "wan22")

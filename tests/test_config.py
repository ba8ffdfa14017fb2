"""mora.config: presets are data. The paper's settings, the same families (so the same code) in the
tiny presets as in the real ones, and no torch at import time."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest

from mora.config import (
    DEFAULT_PRESET,
    FAMILIES,
    FAMILY_SETTINGS,
    PRESETS,
    ROLES,
    ModelSpec,
    Preset,
    get_preset,
    mora_home,
    with_settings,
)
from mora.errors import InputError

TINY_OF = {"tiny": "mora", "tiny-ltx": "ltx", "tiny-wan": "mora-wan"}


def test_roles_are_the_five_agents_tools():
    assert ROLES == ("text_to_image", "image_to_image", "image_to_video", "extend", "connect")


@pytest.mark.parametrize("name", ["mora", "ltx", "mora-wan", "tiny", "tiny-ltx", "tiny-wan"])
def test_preset_has_all_five_roles(name):
    preset = get_preset(name)
    assert preset.name == name
    assert set(preset.roles) == set(ROLES)
    for role in ROLES:
        spec = preset.spec(role)
        assert isinstance(spec, ModelSpec)
        assert spec.family in FAMILIES
        assert spec.model
        assert isinstance(spec.settings, FAMILY_SETTINGS[spec.family])
    assert preset.description


@pytest.mark.parametrize("tiny, real", sorted(TINY_OF.items()))
def test_tiny_presets_use_the_same_families_as_the_real_ones(tiny, real):
    small, big = get_preset(tiny), get_preset(real)
    assert {r: s.family for r, s in small.roles.items()} == {r: s.family for r, s in big.roles.items()}
    for role in ROLES:
        # the same family, so the same typed settings class: the tiny preset changes values only
        assert type(big.spec(role).settings) is type(small.spec(role).settings), role
    assert small.is_tiny and not big.is_tiny
    assert all(m.startswith("tiny/") for s in small.roles.values() for m in s.model_ids())
    assert not any(m.startswith("tiny/") for s in big.roles.values() for m in s.model_ids())


def test_tiny_presets_are_toy_sized():
    for name in TINY_OF:
        for role in ROLES:
            spec = get_preset(name).spec(role)
            assert spec.settings.steps <= 2
            if getattr(spec.settings, "width", None):
                assert spec.settings.width * spec.settings.height <= 96 * 64
    assert get_preset("tiny").spec("text_to_image").refiner == "tiny/sdxl-refiner"


def test_mora_preset_has_the_papers_settings():
    mora = get_preset("mora")

    t2i = mora.spec("text_to_image")
    assert t2i.family == "sdxl"
    assert t2i.model == "stabilityai/stable-diffusion-xl-base-1.0"
    assert t2i.refiner == "stabilityai/stable-diffusion-xl-refiner-1.0"
    assert (t2i.settings.width, t2i.settings.height) == (1024, 576)
    assert t2i.settings.steps == 40
    assert t2i.settings.high_noise_frac == 0.8

    i2i = mora.spec("image_to_image")
    assert (i2i.family, i2i.model) == ("pix2pix", "timbrooks/instruct-pix2pix")

    for role in ("image_to_video", "extend"):
        svd = mora.spec(role)
        assert svd.family == "svd"
        assert svd.model == "stabilityai/stable-video-diffusion-img2vid-xt"
        assert svd.settings.num_frames == 25
        assert svd.settings.segments == 3
        assert svd.settings.motion_bucket_id == 180
        assert svd.settings.noise_aug_strength == 0.1
        assert svd.settings.fps == 7
        assert (svd.settings.width, svd.settings.height) == (1024, 576)

    connect = mora.spec("connect")
    assert connect.family == "ltx"  # first-last-frame conditioning; SEINE is not in diffusers
    assert DEFAULT_PRESET == "mora"


def test_ltx_frame_counts_fit_the_vae():
    for name in ("ltx", "tiny-ltx"):
        for role in ("image_to_video", "extend", "connect"):
            spec = get_preset(name).spec(role)
            assert spec.family == "ltx"
            m = spec.settings.frame_multiple
            assert spec.settings.num_frames % m == 1
            assert spec.settings.tail_frames % m == 1
            assert spec.settings.width % spec.settings.size_multiple == 0
            assert spec.settings.height % spec.settings.size_multiple == 0
    assert get_preset("ltx").spec("connect").settings.frame_multiple == 8
    assert get_preset("tiny-ltx").spec("connect").settings.frame_multiple == 4


def test_models_lists_every_role_and_the_refiner():
    models = get_preset("mora").models()
    assert set(models) == {*ROLES, "text_to_image_refiner"}
    assert models["text_to_image_refiner"] == "stabilityai/stable-diffusion-xl-refiner-1.0"
    assert "text_to_image_refiner" not in get_preset("tiny-ltx").models()


@pytest.mark.parametrize("name", ["x", "", "TINY", None, 3])
def test_unknown_preset_is_an_input_error(name):
    with pytest.raises(InputError) as info:
        get_preset(name)
    message = str(info.value)
    assert "preset" in message and repr(name) in message
    for known in PRESETS:
        assert known in message


def test_get_preset_passes_a_preset_through():
    preset = get_preset("tiny")
    assert get_preset(preset) is preset


def test_specs_and_presets_are_immutable_and_checked():
    spec = get_preset("mora").spec("image_to_video")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.settings.num_frames = 1
    with pytest.raises(AttributeError):
        spec.model = "other"
    with pytest.raises(TypeError):
        PRESETS["mine"] = get_preset("tiny")
    with pytest.raises(ValueError, match="family"):
        ModelSpec("nope", "some/model")
    with pytest.raises(ValueError, match="lacks roles"):
        Preset("half", "only one role", MappingProxyType({"text_to_image": spec}))
    assert ModelSpec("svd", "m", {"steps": 3}).settings.steps == 3  # a dict becomes the family's dataclass
    with pytest.raises(ValueError, match="unknown svd setting"):
        ModelSpec("svd", "m", {"motion_bucket": 3})  # a typo is an error, never ignored


def test_with_settings_copies_and_ignores_none():
    spec = get_preset("mora").spec("image_to_video")
    changed = with_settings(spec, num_frames=14, fps=None)
    assert changed.settings.num_frames == 14
    assert changed.settings.fps == spec.settings.fps == 7
    assert spec.settings.num_frames == 25  # the preset itself is untouched
    assert (changed.family, changed.model) == (spec.family, spec.model)


def test_mora_home(monkeypatch, tmp_path):
    monkeypatch.setenv("MORA_HOME", str(tmp_path / "cache"))
    assert mora_home() == tmp_path / "cache"
    monkeypatch.delenv("MORA_HOME")
    assert mora_home() == Path.home() / ".cache" / "mora"


def test_config_imports_no_torch():
    code = "import mora.config, sys; assert 'torch' not in sys.modules, 'mora.config imported torch'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

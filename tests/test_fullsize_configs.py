"""mora.data's full-size configs (issue 34 item 7): every component of every built-in preset's models has
an entry, each entry's parameter count is what its config builds on the meta device, and every preset's
video step keeps its latent's shape through the full-size denoiser on meta tensors (no weights)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mora.config import PRESETS
from mora.data import ENTRY_FIELDS, fullsize_architectures, fullsize_entries

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import fullsize  # noqa: E402  (benchmarks/fullsize.py)
import video_dry_run  # noqa: E402

ENTRIES = fullsize_entries()


def _preset_roles() -> list[tuple[str, str, object]]:
    """(preset, role, spec) of every role of every built-in preset that is not a toy."""
    return [(name, role, spec) for name, preset in PRESETS.items() if not name.startswith("tiny")
            for role, spec in preset.roles.items()]


def _needed() -> dict[tuple[str, str], object]:
    needed: dict = {}
    for _, _, spec in _preset_roles():
        needed.update(fullsize.needed_components(fullsize.recorded_loads(spec.family, spec)))
    return needed


def test_every_entry_has_the_fields_the_memory_estimate_reads():
    for key, entry in ENTRIES.items():
        assert set(ENTRY_FIELDS) <= set(entry), f"{key} lacks {set(ENTRY_FIELDS) - set(entry)}"
        assert entry["verified"] is True and entry["params"] > 0 and entry["source"], key
        assert entry.get("dtype") in (None, "float32"), key
    assert importlib.util.find_spec("mora.data") is not None


def test_every_preset_model_component_has_one_entry_in_its_loaders_dtype():
    needed = _needed()
    models = {spec.model for _, _, spec in _preset_roles()} | {s.refiner for _, _, s in _preset_roles() if s.refiner}
    assert {m for m, _ in needed} == models  # the loaders were recorded for every model id
    for (model, component), dtype in needed.items():
        matches = [k for k, e in ENTRIES.items() if model in e["models"] and e["component"] == component]
        assert len(matches) == 1, f"{model}'s {component}: entries {matches}"
        entry = ENTRIES[matches[0]]
        want = "float32" if str(dtype) == "torch.float32" else None
        assert entry.get("dtype") == want, f"{matches[0]}: the family loads {component} as {dtype}"
    claimed = {(m, e["component"]) for e in ENTRIES.values() for m in e["models"]}
    assert claimed == set(needed), f"entries for components no loader takes: {claimed - set(needed)}"


def test_absent_components_are_optional_in_their_pipeline():
    """A component may be left uncovered only where the pipeline class lists it as optional."""
    classes = {load.model: load.cls for _, _, spec in _preset_roles()
               for load in fullsize.recorded_loads(spec.family, spec) if load.subfolder is None}
    for model, components in fullsize.absent_components().items():
        assert set(components) <= set(classes[model]._optional_components), model


def test_a_loader_without_its_float32_parts_would_be_caught():
    spec = PRESETS["mora-wan"].spec("connect")
    loads = fullsize.recorded_loads(spec.family, spec)
    assert {ld.subfolder for ld in loads} == {None, "vae", "image_encoder"}
    needed = fullsize.needed_components(loads)
    assert str(needed[(spec.model, "image_encoder")]) == "torch.float32"
    assert str(needed[(spec.model, "transformer")]) == "torch.bfloat16"


@pytest.mark.parametrize("key", sorted(ENTRIES))
def test_params_are_the_meta_device_build_of_the_config(key):
    with fullsize.quiet_transformers():
        assert fullsize.meta_params(ENTRIES[key]) == ENTRIES[key]["params"]


def test_the_benchmarks_read_the_package_file():
    assert not (BENCHMARKS / "fullsize_architectures.json").exists()  # one source: mora/data/
    notes = [k for k in fullsize_architectures() if k.startswith("_")]
    assert set(notes) == {"_about", "_absent_components"}


STEPS = video_dry_run.builtin_video_steps()


def test_every_built_in_preset_has_its_video_steps_checked():
    assert {p for p, _, _ in STEPS} == {n for n in PRESETS if not n.startswith("tiny")}
    assert {(p, r) for p, r, _ in STEPS} >= {("mora", "image_to_video"), ("modern", "edit_video")}


@pytest.mark.parametrize("preset", sorted({p for p, _, _ in STEPS}))
def test_video_step_keeps_the_latent_shape_on_meta(preset):
    modules: dict = {}
    with fullsize.quiet_transformers():
        checks = [video_dry_run.check_step(p, role, spec, modules) for p, role, spec in STEPS if p == preset]
    for check in checks:
        assert check.ok, check
        spec = PRESETS[preset].spec(check.role)
        settings = spec.settings
        assert check.latent[-1] * settings.height == check.latent[-2] * settings.width  # the preset's size
        if spec.family in ("ltx", "wan", "wan22", "wan-vace"):
            assert check.frames % settings.frame_multiple == 1  # the families' k*m+1 frames

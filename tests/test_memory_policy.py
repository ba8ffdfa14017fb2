"""The memory policy (`mora.memory`): its decisions for a stated device budget, and the runtime acting on them.

The budgets are stated, so the decisions are the same on any machine: on CPU the "device" is the
process's memory and tiny pipelines weigh kilobytes.
"""

from __future__ import annotations

import pytest

from mora import memory
from mora.config import get_preset
from mora.data import fullsize_entries
from mora.memory import GIB, Resident, plan
from mora.tools import runtime, weights
from mora.tools.toolset import Toolset

QWEN, EDIT, WAN22, VACE = ("Qwen/Qwen-Image-2512", "Qwen/Qwen-Image-Edit-2511", "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
                           "Wan-AI/Wan2.1-VACE-14B-diffusers")


def _resident(name: str, gb: float, offloadable: bool = True) -> Resident:
    return Resident(("family", name), frozenset({name}), int(gb * GIB), offloadable)


# --- the decisions, for a stated budget ----------------------------------------------------------------


def test_what_fits_beside_the_resident_ones_moves_nothing():
    decision = plan([_resident("a", 20)], int(30 * GIB), int(64 * GIB), needed_later=set(), can_offload=True)
    assert (decision.release, decision.offload, decision.low_vram, decision.reason) == ([], [], False, "fits")


def test_modern_on_an_80_gb_card_releases_qwen_image_before_the_edit_model_loads():
    """The issue's case: Qwen-Image then Qwen-Image-Edit cannot both be on an 80 GB card."""
    qwen, edit = memory.weights_bytes([QWEN]), memory.weights_bytes([EDIT])
    assert qwen is not None and edit is not None and qwen + edit > memory.usable(80 * GIB) >= edit
    resident = [Resident(("qwen-image", QWEN), frozenset({QWEN}), qwen)]
    later = set(get_preset("modern").spec("image_to_video").model_ids())  # edit: the video step comes next
    decision = plan(resident, edit, memory.usable(80 * GIB), needed_later=later, can_offload=True)
    assert decision.release == [("qwen-image", QWEN)] and not decision.offload and not decision.low_vram
    assert "budget" in decision.reason


def test_a_pipeline_the_route_needs_later_is_offloaded_not_released():
    resident = [_resident("later", 30), _resident("done", 10)]
    decision = plan(resident, int(40 * GIB), int(64 * GIB), needed_later={"later"}, can_offload=True)
    assert decision.release == [("family", "done")]  # unneeded ones go first, even when smaller
    assert decision.offload == [("family", "later")]


def test_unknown_route_offloads_largest_first_and_a_cpu_device_releases_instead():
    resident = [_resident("small", 5), _resident("big", 30), _resident("mid", 20)]
    decision = plan(resident, int(30 * GIB), int(64 * GIB), needed_later=None, can_offload=True)
    assert decision.offload == [("family", "big")] and not decision.release  # 25 + 30 fits after one move
    on_cpu = plan(resident, int(30 * GIB), int(64 * GIB), needed_later=None, can_offload=False)
    assert on_cpu.release == [("family", "big")] and not on_cpu.offload
    pinned = plan([_resident("offloaded", 50, offloadable=False)], int(30 * GIB), int(64 * GIB),
                  needed_later=None, can_offload=True)
    assert pinned.release == [("family", "offloaded")]  # a low-vram pipeline is not moved with .to()


def test_a_pipeline_over_the_budget_alone_loads_in_low_vram():
    decision = plan([], int(70 * GIB), memory.usable(80 * GIB), needed_later=set(), can_offload=True)
    assert decision.low_vram and "low-vram" in decision.reason
    assert not plan([], None, int(GIB), needed_later=set(), can_offload=True).low_vram  # unknown size: no guess
    assert plan([_resident("a", 99)], int(GIB), None, needed_later=set(), can_offload=True).reason == "no budget"


def test_sizes_come_from_the_configs_with_shared_components_counted_once():
    base, refiner = "stabilityai/stable-diffusion-xl-base-1.0", "stabilityai/stable-diffusion-xl-refiner-1.0"
    entries = fullsize_entries()
    both, alone = memory.weights_bytes([base, refiner]), memory.weights_bytes([base])
    assert both == alone + 2 * entries["sdxl_refiner_unet"]["params"]  # the refiner's own UNet, in fp16
    wan = memory.component_bytes([WAN22, VACE])
    assert wan is not None and list(wan).count("umt5_xxl_encoder") == 1  # one text encoder for both
    assert wan["wan22_vae"] == 4 * entries["wan22_vae"]["params"]  # Wan's VAE stays float32 on a GPU
    assert memory.weights_bytes(["some/local-dir"]) is None


# --- the table of `mora presets --memory` ------------------------------------------------------------------


def test_the_memory_table_answers_for_every_profile_and_card():
    rows = {(r["preset"], r["profile"]): r for name in ("mora", "modern") for r in memory.preset_rows(get_preset(name))}
    modern = rows[("modern", "balanced")]
    assert modern["step"] in ("text_to_image", "image_to_image", "connect", "edit_video")  # a 14-20B model's step
    assert modern["fits"] == {"24": False, "48": False, "80": modern["weights_gb"] * GIB <= memory.usable(80 * GIB)}
    assert rows[("modern", "low-vram")]["weights_gb"] < modern["weights_gb"]
    assert rows[("mora", "balanced")]["fits"]["80"] is True
    tiny = memory.preset_rows(get_preset("tiny"))
    assert {r["fits"] for r in tiny} == {None}  # tiny models are not in the full-size configs


# --- the runtime acts on the decisions (tiny, CPU, a stated budget) -------------------------------------------


@pytest.fixture
def clean_cache():
    runtime.release()
    yield
    runtime.release()


def _tools(tmp_path, budget: int | None) -> Toolset:
    return Toolset(preset="tiny", device="cpu", output_dir=tmp_path, progress=False, memory_budget=budget)


def test_the_runtime_releases_what_the_route_no_longer_needs(tmp_path, clean_cache):
    probe = _tools(tmp_path / "probe", None)
    frame = probe.text_to_image(prompt="a fox", seed=0, steps=1)
    sdxl = sum(r.bytes for k, r in runtime._RESIDENT.items() if k[0].startswith("sdxl"))
    assert sdxl > 0 and not probe.runtime.memory_events  # no budget, no decisions
    runtime.release()

    tools = _tools(tmp_path / "run", sdxl + 1000)  # SDXL fits; SVD beside it does not
    tools.runtime.needed_later = lambda: []
    tools.text_to_image(prompt="a fox", seed=0, steps=1)
    tools.image_to_video(image_path=frame, num_frames=3, seed=0, steps=1)
    (event,) = tools.runtime.memory_events
    assert event["load"] == "svd tiny/svd" and event["tool_call"] == 2 and not event["low_vram"]
    assert sorted(event["released"]) == ["sdxl tiny/sdxl-base", "sdxl-refiner tiny/sdxl-refiner+tiny/sdxl-base"]
    assert [k[0] for k in runtime.cached_keys()] == ["svd"]


def test_a_pipeline_over_the_budget_runs_its_step_in_low_vram(tmp_path, clean_cache):
    tools = _tools(tmp_path, 1000)  # a kilobyte: every tiny pipeline is over it
    tools.runtime.needed_later = lambda: []
    tools.text_to_image(prompt="a fox", seed=0, steps=1)
    assert [e["low_vram"] for e in tools.runtime.memory_events] == [True, True]  # the base, then the refiner
    assert tools.calls[-1]["profile"] == "low-vram"
    assert {k[4] for k in runtime.cached_keys()} == {"low-vram"}
    tools.text_to_image(prompt="a fox", seed=1, steps=1)  # the low-vram pipelines are reused: no new decision
    assert len(tools.runtime.memory_events) == 2


def test_a_jobs_manifest_records_the_policys_decisions(tmp_path, clean_cache, monkeypatch):
    import mora
    from mora.tools import residency

    monkeypatch.setattr(residency, "device_budget", lambda device, budget: 2 * 2**20)  # 2 MiB
    result = mora.run("text-to-video", prompt="a fox in snow", preset="tiny", seed=0, device="cpu",
                      out=tmp_path / "fox.mp4", progress=False, metrics=False)
    policy = result.manifest["memory"]
    assert policy["budget_bytes"] == 2 * 2**20
    video = [d for d in policy["decisions"] if d["load"] == "svd tiny/svd"]
    assert video and set(video[0]["released"]) >= {"sdxl tiny/sdxl-base"}  # the route needs SDXL no more


def test_a_local_models_estimate_is_read_from_its_safetensors_headers(tmp_path, clean_cache):
    from mora.tools import residency, svd

    tools = _tools(tmp_path, None)
    estimate = residency.estimate("tiny/svd", 4, weights.model_source)  # float32 on a CPU
    measured, _ = residency.device_bytes(svd.load(tools.preset.spec("image_to_video"), tools.runtime), "cpu")
    assert estimate is not None and abs(estimate - measured) <= 0.01 * measured  # buffers aside, the same
    assert residency.estimate("no/such-model", 4, weights.model_source) is None


def test_mora_presets_memory_prints_the_table_without_importing_torch():
    import json
    import subprocess
    import sys

    code = ("import sys; from mora.cli import main; code = main(['presets', '--memory', '--json']); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {(r["preset"], r["profile"]) for r in rows} >= {(p, q) for p in ("mora", "modern") for q in memory.TABLE_PROFILES}
    assert rows == [r for name in dict.fromkeys(r["preset"] for r in rows) for r in memory.preset_rows(get_preset(name))]
    table = subprocess.run([sys.executable, "-m", "mora.cli", "presets", "--memory"], capture_output=True, text=True,
                           timeout=120).stdout
    modern = next(line.split() for line in table.splitlines() if line.startswith("modern ") and " balanced " in line)
    assert modern[-3:] == ["no", "no", "yes"] and modern[2] == "text_to_image"

"""Per-step peak memory (`mora.tools.memory_peak`) and the manifest's `tool_calls[].peak_memory`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mora
from mora.tools import memory_peak

MIB = 1024**2


def _step_rss_allowed() -> bool:
    return memory_peak.start("cpu") == memory_peak.STEP_RSS


def test_a_tiny_runs_manifest_has_the_peak_memory_of_every_tool_call(tmp_path):
    result = mora.run("text-to-video", prompt="a red fox running through snow", preset="tiny", device="cpu",
                      progress=False, seed=0, out=tmp_path / "fox.mp4", metrics=False)
    calls = result.manifest["tool_calls"]
    assert [c["tool"] for c in calls] == ["text_to_image", "image_to_video"]
    for call in calls:
        peak = call["peak_memory"]
        assert set(peak) == {"bytes", "measure"}
        assert type(peak["bytes"]) is int and peak["bytes"] > 0
        assert peak["measure"] in memory_peak.MEASURES and peak["measure"] != memory_peak.CUDA


@pytest.mark.skipif(not _step_rss_allowed(), reason="needs Linux's /proc/self/clear_refs (peak RSS reset)")
def test_the_step_peak_grows_with_an_allocation_within_the_step():
    def step(allocate_mib: int) -> int:
        measure = memory_peak.start("cpu")
        if allocate_mib:
            block = np.ones(allocate_mib * MIB, dtype=np.uint8)  # written, so resident
            del block
        peak = memory_peak.read("cpu", measure)
        assert peak["measure"] == memory_peak.STEP_RSS
        return peak["bytes"]

    without, with_block = step(0), step(256)
    assert with_block - without > 200 * MIB, (without, with_block)
    assert step(0) < with_block - 200 * MIB  # reset again at the next step's start


def test_without_the_reset_the_peak_is_since_the_process_started(monkeypatch):
    monkeypatch.setattr(memory_peak, "_PROC", memory_peak.Path("/nonexistent-proc"))
    measure = memory_peak.start("cpu")
    assert measure == memory_peak.SINCE_START_RSS
    peak = memory_peak.read("cpu", measure)
    assert peak["measure"] == memory_peak.SINCE_START_RSS and peak["bytes"] > 10 * MIB


def test_on_cuda_the_peak_is_the_devices_max_allocated(monkeypatch):
    reset, asked = [], []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: reset.append(device))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: asked.append(device) or 123 * MIB)
    measure = memory_peak.start("cuda:1")
    assert measure == memory_peak.CUDA and reset == ["cuda:1"]
    assert memory_peak.read("cuda:1", measure) == {"bytes": 123 * MIB, "measure": "cuda max allocated"}
    assert asked == ["cuda:1"]

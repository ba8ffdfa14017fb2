"""Seeds: every derived seed (best-of candidates, regenerated images, shots, transitions, chained
segments) stays a valid seed at the largest seed a job accepts, and every queued job has its seed fixed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mora
from mora.limits import MAX_SEED, check_seed, derive_seed
from mora.service.store import JobStore
from mora.tools.segments import chain_segments
from mora.workflows.route_run import RouteRun
from mora.workflows.tasks import route_for

TINY = dict(preset="tiny", device="cpu", progress=False, metrics=False, steps=1, width=64, height=64)


def test_derive_seed_wraps_into_range_and_is_deterministic():
    assert derive_seed(5, 2) == 7 and derive_seed(5) == 5
    assert derive_seed(MAX_SEED, 1) == 0 and derive_seed(MAX_SEED, 1000, 2) == 1001
    derived = [derive_seed(MAX_SEED, k) for k in range(8)]
    assert derived == [derive_seed(MAX_SEED, k) for k in range(8)]  # the same every time
    assert len(set(derived)) == 8 and all(check_seed(s) == s for s in derived)  # distinct, each accepted


def test_chained_segments_at_the_max_seed():
    seeds: list[int] = []

    def clip(start: Image.Image, seed: int) -> np.ndarray:
        seeds.append(check_seed(seed))  # what a tool's generator is given must be a seed
        return np.stack([np.asarray(start)] * 2)

    chain_segments(Image.new("RGB", (4, 2)), 3, MAX_SEED, clip)
    assert seeds == [MAX_SEED, 0, 1]


def test_best_of_and_regenerated_image_seeds_at_the_max_seed():
    job = RouteRun("text-to-video", {"prompt": "a fox"}, {}, MAX_SEED, list(route_for("text-to-video", {"prompt": "a"})),
              Path("a"), best_of=2)
    job.candidate, job.image_seed_offset = 1, 1  # candidate 2, its image regenerated once
    assert job.scripted_call("text_to_image")["seed"] == 1
    job.images.append("frame.png")
    assert job.scripted_call("image_to_video")["seed"] == 0


def test_best_of_at_the_max_seed(tmp_path):
    m = mora.run("text-to-video", prompt="a fox", best_of=2, seed=MAX_SEED, num_frames=3, out=tmp_path / "b.mp4",
                 **TINY).manifest
    assert [c["seed"] for c in m["candidates"]] == [MAX_SEED, 0]
    assert [c["seed"] for c in m["tool_calls"] if c["tool"] == "text_to_image"] == [MAX_SEED, 0]


def test_story_at_the_max_seed_reaches_its_transition(tmp_path):
    """Shot k runs with seed + k and transition k with seed + 1000 + k, wrapped: the film is written."""
    r = mora.story("A fox wakes. The fox runs.", shots=2, shot_seconds=0.6, transition="connect", seed=MAX_SEED,
                   out=tmp_path / "s.mp4", **{k: v for k, v in TINY.items() if k != "steps"})
    m = r.manifest
    assert [s["seed"] for s in m["shots"]] == [MAX_SEED, 0]
    assert [t["seed"] for t in m["transitions"]] == [1000]
    assert r.video_path.is_file() and m["seed"] == MAX_SEED


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.db", tmp_path / "out", defaults={"preset": "tiny"})
    yield s
    s.close()


def test_a_story_submitted_without_a_seed_is_queued_with_one(store):
    """A recovered story reruns with the seed it was queued with, not a new random one."""
    row = store.submit({"task": "story", "story": "A fox wakes. The fox runs.", "shots": 2})
    assert isinstance(row.job["seed"], int) and 0 <= row.job["seed"] <= MAX_SEED
    assert store.get(row.id).job["seed"] == row.job["seed"]  # as stored

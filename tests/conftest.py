"""Shared fixtures. Every test runs offline on the tiny preset, on the CPU."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

# Tiny models are built once per test session into a private cache, never into the user's.
os.environ.setdefault("MORA_HOME", tempfile.mkdtemp(prefix="mora-test-home-"))
os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach the network
# The toy models run thousands of tiny ops: one torch thread is as fast on an idle machine and many
# times faster on a busy one (a second thread spin-waits at every op). Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.pop("OAI_CONFIG_LIST", None)


@pytest.fixture(scope="session")
def tiny_tools_factory():
    """Build a CPU Toolset on a tiny preset writing into a given directory."""
    from mora import Toolset

    def make(output_dir, preset="tiny", **kwargs):
        return Toolset(preset=preset, device="cpu", output_dir=output_dir, progress=False, **kwargs)

    return make


def gradient_frames(num_frames: int, width: int, height: int, shift: int = 3) -> np.ndarray:
    """A smooth, moving colour gradient: compresses well, so pixels survive H.264 closely."""
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for t in range(num_frames):
        r = (x * 255 // max(1, width - 1) + t * shift) % 256
        g = y * 255 // max(1, height - 1)
        b = np.full_like(x, (60 + 20 * t) % 256)
        frames.append(np.stack([r, g, b], axis=-1).astype(np.uint8))
    return np.stack(frames)


@pytest.fixture
def fake_openai():
    """A scripted OpenAI-compatible server on 127.0.0.1 (see tests/fake_openai.py).

    Yields the `FakeOpenAI`: `.config_list` for `llm_config=`, `.push_text`, `.push_tool_call`,
    `.push_error`, and `.requests` (every request body). An empty queue answers with a plain text
    default (`fake.default = None` makes it a 500 instead).
    """
    from fake_openai import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake

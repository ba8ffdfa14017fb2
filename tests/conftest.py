"""Shared fixtures. Every test runs offline on the tiny preset, on the CPU.

Tiers (markers, registered in pyproject.toml): unmarked tests are the fast in-process tier;
`slow` (subprocesses, Ray, many model calls), `browser` (a real Chromium), `notebooks` (executes
the notebooks) and `gpu` (needs CUDA; skipped elsewhere). `pytest` runs every tier this machine
can; `pytest -m "not slow and not browser and not notebooks and not gpu"` runs the fast tier only.
Every test runs under a network ban: a connection to anything but this machine fails the test.
"""

from __future__ import annotations

import ipaddress
import os
import socket
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


# A caption longer than one 77-token CLIP window (several windows, as an enhanced prompt).
LONG = ("a red fox with a bushy tail and black socks trots through deep fresh powder snow in a quiet pine forest "
        "at dawn, soft golden light filtering between the trunks, breath steaming in the cold air, small clumps of "
        "snow falling from the branches as a gentle wind moves through the trees, the camera tracking slowly beside "
        "the fox at its eye level, shallow depth of field, fine detail in the fur, tiny ice crystals sparkling in "
        "the air, distant mountains fading into a pale blue haze, cinematic, highly detailed, 35mm film grain")


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


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance (two CPUs) for a test module; Mora uses a session it finds as it is and
    leaves it running (`mora.batch --ray`, `mora serve --ray`)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


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


class NetworkBanned(AssertionError):
    """A test tried to reach the network (only this machine's addresses are allowed)."""


def _local(address) -> bool:
    if isinstance(address, (str, bytes)) and not isinstance(address, tuple):
        return True  # a Unix socket path
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost: would need DNS, so the network


@pytest.fixture(autouse=True)
def _network_ban(monkeypatch):
    """Every test: connecting to anything but loopback raises NetworkBanned (the fake LLM server is local)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address):
            raise NetworkBanned(f"test tried to reach {address!r}; tests run offline")
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address):
            raise NetworkBanned(f"test tried to reach {address!r}; tests run offline")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo(socket.getaddrinfo))
    yield


def _guarded_getaddrinfo(real):
    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", b"localhost") and not _is_ip_literal(host):
            raise NetworkBanned(f"test tried to resolve {host!r}; tests run offline")
        return real(host, *args, **kwargs)

    return getaddrinfo


def _is_ip_literal(host) -> bool:
    try:
        ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host)
        return True
    except ValueError:
        return False


def pytest_collection_modifyitems(config, items):
    """The gpu tier runs only where CUDA is available."""
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        cuda = False
    if cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (gpu tier)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

"""The default preset without the Hub: one line naming the missing models, exit 2, within 20 s.

Issue 20, item 1: huggingface_hub 2.x raises `httpx2` errors the availability check did not catch,
so an offline `mora text-to-video` ended as an "unexpected failure". Each kind of broken network
is stood in for on 127.0.0.1 (the test network ban allows only this machine): a refused port, a
socket that accepts and never answers, a server answering 503, and offline mode.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mora.errors import ModelUnavailableError
from mora.tools import weights

MODELS = ["org/missing-base", "org/missing-refiner"]
BOUND_S = 20.0  # the bound on the whole check


def _refused_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server():
    """A socket on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def server_503():
    """A local HTTP server that answers every request with 503."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            hits.append(self.path)
            body = b'{"error": "down for maintenance"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub_at(monkeypatch, tmp_path):
    """Point this process's Hub client at an endpoint, online, with an empty cache."""
    from huggingface_hub import constants, hf_api

    def point(endpoint: str) -> None:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(hf_api.api, "endpoint", endpoint)  # `huggingface_hub.model_info` is bound to it

    return point


def _assert_missing_line(error: ModelUnavailableError) -> None:
    text = str(error)
    assert "\n" not in text
    assert text.startswith("--preset: mora needs 2 model(s)")
    for model in MODELS:
        assert model in text and f"hf download {model}" in text
    assert "--preset tiny" in text and "HF_HOME" in text


def _timed_check() -> tuple[ModelUnavailableError, float]:
    started = time.monotonic()
    with pytest.raises(ModelUnavailableError) as caught:
        weights.check_models(MODELS, "mora")
    return caught.value, time.monotonic() - started


def test_refused_connection_is_the_missing_models_line(hub_at):
    hub_at(f"http://127.0.0.1:{_refused_port()}")
    error, seconds = _timed_check()
    _assert_missing_line(error)
    assert seconds < BOUND_S


def test_server_that_never_answers_is_the_missing_models_line(hub_at, silent_server):
    hub_at(silent_server)
    error, seconds = _timed_check()
    _assert_missing_line(error)
    assert seconds < BOUND_S


def test_http_503_is_the_missing_models_line(hub_at, server_503):
    endpoint, hits = server_503
    hub_at(endpoint)
    error, seconds = _timed_check()
    _assert_missing_line(error)
    assert seconds < BOUND_S
    assert any("/api/models/org/missing-base" in h for h in hits)  # the check did ask this server


def test_offline_mode_asks_nobody(hub_at, server_503, monkeypatch):
    from huggingface_hub import constants

    endpoint, hits = server_503
    hub_at(endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1
    error, _ = _timed_check()
    _assert_missing_line(error)
    assert hits == []


def test_the_whole_check_has_a_deadline(monkeypatch):
    """A check that never ends (a server trickling bytes under httpx's per-phase timeouts) is cut off."""
    release = threading.Event()
    monkeypatch.setattr(weights, "model_available", lambda model: release.wait(30) and False)
    started = time.monotonic()
    try:
        with pytest.raises(ModelUnavailableError, match="org/missing-base"):
            weights.check_models(MODELS, "mora", deadline_s=0.3)
    finally:
        release.set()
    assert time.monotonic() - started < 5


def test_local_models_take_no_hub_check(tmp_path, monkeypatch):
    """Tiny and local-directory models are confirmed in the caller's thread: no Hub lookup, no thread
    (mora serve checks every submitted job; a thread per model per request queued on the GIL)."""
    def hub(model: str) -> bool:
        raise AssertionError(f"{model} went to the Hub check")

    monkeypatch.setattr(weights, "model_available", hub)
    started = threading.active_count()
    weights.check_models(["tiny/svd", "tiny/sdxl", str(tmp_path)], "tiny")
    assert threading.active_count() == started
    with pytest.raises(AssertionError, match="org/missing-base went to the Hub check"):
        weights.check_models(["tiny/svd", "org/missing-base"], "mora")


def test_a_bug_in_the_check_is_not_a_missing_model(monkeypatch):
    def broken(model: str) -> bool:
        raise TypeError("a bug of ours")

    monkeypatch.setattr(weights, "model_available", broken)
    with pytest.raises(TypeError, match="a bug of ours"):
        weights.check_models(MODELS, "mora")


def _mora() -> list[str]:
    script = Path(sys.executable).with_name("mora")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mora.cli"]


@pytest.mark.slow
@pytest.mark.parametrize("network", ["refused", "proxy-refused"])
def test_cli_default_preset_without_the_hub(tmp_path, network):
    """`mora text-to-video` on preset mora: exit 2, one line, nothing written (the issue's repro)."""
    import os

    port = _refused_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith(("_PROXY", "HF_TOKEN"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0", MORA_HOME=str(tmp_path / "mora-home"))
    if network == "refused":
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
    else:  # every request goes to a proxy that refuses; the endpoint's name is never resolved
        env.update(HF_ENDPOINT="http://hub.invalid", HTTP_PROXY=f"http://127.0.0.1:{port}",
                   HTTPS_PROXY=f"http://127.0.0.1:{port}")
    (tmp_path / "hf").mkdir()
    started = time.monotonic()
    proc = subprocess.run([*_mora(), "text-to-video", "a fox", "--out", "X.mp4"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert time.monotonic() - started < BOUND_S + 10  # the check's 20 s plus interpreter start-up
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mora: error: --preset: mora needs"), proc.stderr
    assert "unexpected failure" not in proc.stderr and "hf download" in lines[0]
    assert not (tmp_path / "X.mp4").exists() and not (tmp_path / "X_artifacts").exists()
    assert not (tmp_path / "X.json").exists()

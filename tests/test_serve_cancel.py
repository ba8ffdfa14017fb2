"""Cancel stops a running job within one denoising step: DELETE, a hung worker process, MCP, Ctrl-C.

The job asks for 50 denoising steps per tool; the tiny SDXL UNet's forward counts them (one call per
step) and holds step `AT` until the cancel has been sent, so each test knows exactly where the
cancel arrived: the step under way ends, and no other starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from mora.service.store import JobStore
from mora.service.worker import Worker

STEPS = 50  # asked of every tool: a cancel that waited for the next agent step would let all of them run
AT = 3  # the denoising step during which the cancel arrives
JOB = {"task": "text-to-video", "prompt": "a fox in snow", "steps": STEPS, "seed": 1, "metrics": False}
WORK = STEPS  # the service's work budget (x the preset's own job) admits tiny's 2 steps as 50
HANG_DIR = Path(__file__).parent / "hang_child"


class Steps:
    """Counts the tiny SDXL UNet's calls (one per denoising step); step AT waits for `release`."""

    def __init__(self, monkeypatch, release=None):
        from diffusers import UNet2DConditionModel

        self.calls, self.reached, self.release = 0, threading.Event(), release or threading.Event()
        original = UNet2DConditionModel.forward

        def forward(unet, *args, **kwargs):
            self.calls += 1
            if self.calls == AT:
                self.reached.set()
                assert self.release.wait(60), "the cancel never came"
            return original(unet, *args, **kwargs)

        monkeypatch.setattr(UNet2DConditionModel, "forward", forward)


def _wait(store: JobStore, job_id: str, timeout: float = 120):
    end = time.monotonic() + timeout
    while (row := store.get(job_id)) is not None and not row.finished:
        assert time.monotonic() < end, f"{job_id} did not finish: {row}"
        time.sleep(0.05)
    return row


def _agents(store: JobStore, job_id: str) -> list[str]:
    return [e["data"]["agent"] for e in store.events(job_id) if e["type"] == "step"]


def test_delete_stops_a_running_job_within_a_denoising_step(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from mora.service.app import build_service

    service = build_service(db=tmp_path / "jobs.db", out_dir=tmp_path / "out", host={"device": "cpu"},
                            defaults={"preset": "tiny"}, start_worker=False, max_job_work=WORK)
    steps = Steps(monkeypatch)
    with TestClient(service.app, base_url="http://127.0.0.1") as client:
        job = client.post("/v1/jobs", json=JOB).json()
        service.worker.start()
        try:
            assert steps.reached.wait(120)
            assert client.delete(f"/v1/jobs/{job['id']}").json()["status"] == "in_progress"
            steps.release.set()
            row = _wait(service.store, job["id"])
        finally:
            service.worker.stop()
    assert row.status == "cancelled" and row.video is None
    assert steps.calls == AT  # of 50 asked: the step under way ended, no other started
    assert _agents(service.store, job["id"]) == ["prompt_agent", "text_to_image_agent"]


@pytest.mark.slow
def test_a_child_whose_step_never_returns_is_killed_and_a_new_one_takes_the_next_job(tmp_path, monkeypatch):
    from mora.service import worker as worker_module

    monkeypatch.setattr(worker_module, "CANCEL_GRACE_S", 1.0, raising=False)
    monkeypatch.setenv("MORA_TEST_HANG_PROMPT", "hang here")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HANG_DIR), os.environ.get("PYTHONPATH")])))
    store = JobStore(tmp_path / "jobs.db", tmp_path / "out", defaults={"preset": "tiny"})
    worker = Worker(store, {"device": "cpu"}, process=True).start()
    try:
        hung = store.submit({**JOB, "prompt": "hang here"})
        end = time.monotonic() + 120
        while store.get(hung.id).step is None:  # the child took it and hangs in its step
            assert time.monotonic() < end, store.get(hung.id)
            time.sleep(0.1)
        first = worker.child._proc
        store.cancel(hung.id)
        row, end = _wait(store, hung.id, timeout=30), time.monotonic() + 60
        assert row.status == "cancelled"
        first.join(5)
        assert not first.is_alive() and first.exitcode == -signal.SIGKILL
        while not (worker.child._proc not in (None, first) and worker.child._proc.is_alive()):  # started at once
            assert time.monotonic() < end, "no new worker process"
            time.sleep(0.05)
        after = store.submit({"task": "text-to-video", "prompt": "a fox", "num_frames": 3, "steps": 1, "seed": 1,
                              "metrics": False})
        assert _wait(store, after.id).status == "completed"
    finally:
        worker.stop()


# --- MCP over streamable HTTP on 127.0.0.1 ------------------------------------------------------------

@contextlib.contextmanager
def _serving(service):
    """The service's app under uvicorn on a free loopback port, in a thread; yields the /mcp URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(service.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < end and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(10)


MCP_HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}


def _call(request_id: int, prompt: str) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": "text_to_video", "arguments": {"prompt": prompt, "steps": STEPS, "seed": 1}}}


def _service(tmp_path, **kwargs):
    pytest.importorskip("mcp")
    from mora.service.app import build_service

    return build_service(db=tmp_path / "jobs.db", out_dir=tmp_path / "out", host={"device": "cpu"},
                         defaults={"preset": "tiny"}, max_job_work=WORK, **kwargs)


def test_mcp_notifications_cancelled_over_stateless_http_cancels_the_waiting_calls_job(tmp_path):
    httpx = pytest.importorskip("httpx")
    service = _service(tmp_path, start_worker=False)  # no worker: the job waits in the queue
    with _serving(service) as url, httpx.Client(timeout=30) as http:
        with http.stream("POST", url, json=_call(7, "a fox"), headers=MCP_HEADERS) as waiting:
            assert waiting.status_code == 200
            end = time.monotonic() + 30
            while not service.store.list():
                assert time.monotonic() < end
                time.sleep(0.05)
            job_id = service.store.list()[0].id
            # another request id: not this call
            other = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 8}}
            assert http.post(url, json=other, headers=MCP_HEADERS).status_code == 202
            time.sleep(0.5)
            assert service.store.get(job_id).status == "queued"
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
            assert http.post(url, json=cancel, headers=MCP_HEADERS).status_code == 202
            while service.store.get(job_id).status != "cancelled":  # while the call's stream is still open
                assert time.monotonic() < end, service.store.get(job_id)
                time.sleep(0.05)


def test_a_client_that_disconnects_from_a_waiting_call_stops_its_running_job(tmp_path, monkeypatch):
    httpx = pytest.importorskip("httpx")
    service = _service(tmp_path)  # the worker thread runs the job here
    release = threading.Event()
    steps = Steps(monkeypatch, release)
    try:
        with _serving(service) as url, httpx.Client(timeout=30) as http:
            with http.stream("POST", url, json=_call(1, "a fox"), headers=MCP_HEADERS) as waiting:
                assert waiting.status_code == 200
                assert steps.reached.wait(120)
                job_id = service.store.list()[0].id
            # the stream is closed: the client is gone while step AT runs
            end = time.monotonic() + 30
            while not service.store.cancel_requested(job_id):
                assert time.monotonic() < end, "the disconnect did not cancel the job"
                time.sleep(0.05)
            release.set()
            row = _wait(service.store, job_id)
    finally:
        release.set()
        service.worker.stop()
    assert row.status == "cancelled" and steps.calls == AT


# --- the command line ----------------------------------------------------------------------------------

def test_ctrl_c_stops_mora_run_at_the_next_denoising_step_even_when_a_library_swallows_it(tmp_path, monkeypatch):
    from mora.cli import main

    class SwallowingLibrary(threading.Event):
        """Step AT: Ctrl-C arrives inside native code that swallows the KeyboardInterrupt."""

        def wait(self, timeout=None):
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass
            return True

    steps = Steps(monkeypatch, SwallowingLibrary())
    out = tmp_path / "fox.mp4"
    previous = signal.getsignal(signal.SIGINT)
    try:
        code = main(["text-to-video", "a fox in snow", "--preset", "tiny", "--device", "cpu", "--steps", str(STEPS),
                     "--seed", "1", "--no-metrics", "--quiet", "--out", str(out)])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130 and steps.calls == AT and not out.exists()

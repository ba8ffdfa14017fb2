"""`mora serve --ray`: the store's jobs on a Ray actor pool (a local Ray instance; slow: Ray starts processes)."""

from __future__ import annotations

import time

import pytest

from mora import media
from mora.errors import InputError
from mora.service.store import JobStore

TINY = {"preset": "tiny", "seed": 1, "num_frames": 3, "steps": 1, "width": 64, "height": 64, "metrics": False}


def _wait(store, job_id, timeout=300):
    end = time.monotonic() + timeout
    while not store.get(job_id).finished:
        assert time.monotonic() < end, f"{job_id} did not finish: {store.get(job_id)}"
        time.sleep(0.1)
    return store.get(job_id)


def test_workers_needs_ray(tmp_path):
    pytest.importorskip("fastapi")
    from mora.service.app import build_service

    with pytest.raises(InputError, match=r"^--workers: 2 needs --ray"):
        build_service(db=tmp_path / "j.db", out_dir=tmp_path / "out", ray_workers=2, start_worker=False)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_serve_command_workers_needs_ray(tmp_path, capsys):
    pytest.importorskip("fastapi")
    from mora.cli import main

    assert main(["serve", "--workers", "2", "--out-dir", str(tmp_path / "out")]) == 2
    assert "--workers: 2 needs --ray; without Ray one worker runs the jobs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ray_worker_runs_a_queued_job_with_its_steps(ray_session, tmp_path):
    from mora.service.ray_worker import RayWorker

    store = JobStore(tmp_path / "jobs.db", tmp_path / "out", defaults={"preset": "tiny"})
    worker = RayWorker(store, {"device": "cpu"}, workers=1).start()
    try:
        row = store.submit({"task": "text-to-video", "prompt": "a fox", **TINY})
        bad = store.submit({"task": "text-to-video", "prompt": "a fox", **TINY})
        store.folder(bad.id).rename(tmp_path / "gone")  # its output folder vanished: the job fails alone
        (tmp_path / "out" / bad.id).write_text("not a folder")
        done = _wait(store, row.id)
        assert done.status == "completed" and done.progress == 100, done.error
        assert done.video == str(store.folder(row.id) / "video.mp4")
        assert media.probe_video(done.video)[3] == done.manifest["video"]["num_frames"]
        events = store.events(row.id)
        steps = [e["data"] for e in events if e["type"] == "step"]
        assert [s["index"] for s in steps] == list(range(len(done.manifest["route"])))  # every step, in order
        assert [e["type"] for e in events][-1] == "done"
        progress = [e["data"]["progress"] for e in events if e["type"] == "progress"]
        assert progress == sorted(progress) and progress[0] == 0 and progress[-1] == 100
        failed = _wait(store, bad.id)
        assert failed.status == "failed" and failed.error.startswith("NotADirectoryError: "), failed
        assert worker.alive
    finally:
        worker.stop()
        store.close()

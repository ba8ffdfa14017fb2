"""`mora serve --ray`: the store's jobs on a Ray actor pool (a local Ray instance; slow: Ray starts processes)."""

from __future__ import annotations

import json
import sqlite3
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


def _wait_for(check, what, timeout=300):
    end = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def _actor_of(worker, job_id):
    """The actor running `job_id` (found through the RayWorker's `running` dict), or None."""
    try:
        return next((actor for actor, _, row, _ in list(worker.running.values()) if row.id == job_id), None)
    except RuntimeError:  # the dispatcher changed the dict while we read it: look again
        return None


def _steps(store, job_id):
    return [e["data"] for e in store.events(job_id) if e["type"] == "step"]


def test_job_for_carries_the_llm_config_which_the_store_never_holds(tmp_path):
    from mora.agents.llm import load_llm_config
    from mora.service.ray_worker import RayWorker
    from mora.service.worker import acting_steps

    config = tmp_path / "OAI_CONFIG_LIST"
    config.write_text(json.dumps([{"model": "gpt-4o-mini", "api_key": "sk-secret-123",
                                   "base_url": "http://127.0.0.1:9/v1"}]))
    host = {"llm_config": str(config)}
    store = JobStore(tmp_path / "jobs.db", tmp_path / "out", host=host, defaults={"preset": "tiny"})
    try:
        store.submit({"task": "text-to-video", "prompt": "a fox", **TINY})
        row = store.claim()
        worker = RayWorker(store, host, workers=1)
        job = worker.job_for(row)
        assert job["llm_config"] == load_llm_config(str(config)) and job["llm_config"][0]["model"] == "gpt-4o-mini"
        assert job["out"] == str(store.folder(row.id) / "video.mp4") and job["prompt"] == "a fox"
        assert acting_steps(job) == 3  # the dispatcher checks the job as sent, config list included
        config.unlink()  # read once: a later job gets the same list without the file
        assert worker.job_for(row)["llm_config"] == job["llm_config"]
        assert "llm_config" not in store.get(row.id).job  # the stored job holds no config, no key
        dump = "\n".join(sqlite3.connect(tmp_path / "jobs.db").iterdump())
        assert "sk-secret-123" not in dump
    finally:
        store.close()


def test_bad_llm_config_fails_the_start(tmp_path):
    from mora.service.ray_worker import RayWorker

    store = JobStore(tmp_path / "jobs.db", tmp_path / "out", defaults={"preset": "tiny"})
    worker = RayWorker(store, {"llm_config": str(tmp_path / "missing.json")}, workers=1)
    try:
        with pytest.raises(InputError, match=r"^--llm-config: .*missing.json' is not a file; pass the path"):
            worker.start()  # before Ray starts
        assert not worker.alive
    finally:
        worker.stop()  # had it started a pool, it and its Ray instance go
        store.close()


def test_requeue_puts_a_running_job_back_in_the_queue(tmp_path):
    store = JobStore(tmp_path / "jobs.db", tmp_path / "out", defaults={"preset": "tiny"})
    try:
        job_id = store.submit({"task": "text-to-video", "prompt": "a fox", **TINY}).id
        assert store.claim().attempts == 1
        store.step(job_id, "text_to_image_agent: makes the first frame", 40)
        store._work.clear()
        store.requeue(job_id)
        row = store.get(job_id)
        assert (row.status, row.step, row.progress, row.attempts) == ("queued", None, 0, 1)
        assert store._work.is_set()  # the worker wakes at once
        again = store.claim()
        assert (again.id, again.status, again.attempts) == (job_id, "in_progress", 2)
        store.complete(job_id, {}, None)
        store.requeue(job_id)  # only a running job goes back
        assert store.get(job_id).status == "completed"
    finally:
        store.close()


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


@pytest.mark.slow
def test_ray_worker_cancels_a_running_job_at_its_next_step(ray_session, tmp_path):
    from mora.service.ray_worker import RayWorker
    from mora.service.worker import acting_steps

    store = JobStore(tmp_path / "jobs.db", tmp_path / "out", defaults={"preset": "tiny"})
    worker = RayWorker(store, {"device": "cpu"}, workers=1).start()
    try:
        # 200 denoising steps: its first frame takes seconds, so the cancel lands while it runs
        slow = store.submit({"task": "text-to-video", "prompt": "a fox", **TINY, "steps": 200})
        after = store.submit({"task": "text-to-video", "prompt": "a fox", **TINY})
        _wait_for(lambda: any(s["agent"] == "text_to_image_agent" for s in _steps(store, slow.id)),
                  "the first frame's step")
        assert store.cancel(slow.id).status == "in_progress"
        gone = _wait(store, slow.id)
        assert gone.status == "cancelled" and gone.error is None, gone
        route = acting_steps({**gone.job, "device": "cpu"})  # prompt, first frame, video
        assert 0 < len(_steps(store, slow.id)) < route == 3  # stopped at a step: image_to_video never started
        assert [e["type"] for e in store.events(slow.id)][-1] == "cancelled"
        done = _wait(store, after.id)  # the same actor runs the next job
        assert done.status == "completed" and len(_steps(store, after.id)) == route, done.error
        assert worker.alive and len(worker._actors) == 1
    finally:
        worker.stop()
        store.close()


@pytest.mark.slow
def test_ray_worker_queues_again_the_job_of_a_dead_actor(ray_session, tmp_path, caplog):
    from mora.service.ray_worker import RayWorker

    store = JobStore(tmp_path / "jobs.db", tmp_path / "out", defaults={"preset": "tiny"})
    worker = RayWorker(store, {"device": "cpu"}, workers=1).start()
    try:
        row = store.submit({"task": "text-to-video", "prompt": "a fox", **TINY})
        actor = _wait_for(lambda: _actor_of(worker, row.id), "the job to start")
        ray_session.kill(actor)  # the actor's process dies mid-job (a fresh actor loads its models first)
        done = _wait(store, row.id)
        assert done.status == "completed" and done.attempts == 2, done
        assert media.probe_video(done.video)[3] == done.manifest["video"]["num_frames"]
        assert "died running job " + row.id in caplog.text and "queued again" in caplog.text
        assert len(worker._actors) == 2 and worker.alive  # a new actor took the dead one's place
    finally:
        worker.stop()
        store.close()

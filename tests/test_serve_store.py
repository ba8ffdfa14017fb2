"""The durable job store and the worker of `mora serve` (no server: the store and a worker thread)."""

from __future__ import annotations

import sqlite3
import time

import pytest
from PIL import Image

from mora import media
from mora.errors import InputError
from mora.service.store import JobStore
from mora.service.worker import Worker

TINY = {"preset": "tiny", "seed": 1, "num_frames": 3, "steps": 1, "width": 64, "height": 64, "metrics": False}


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.db", tmp_path / "out", defaults={"preset": "tiny"})
    yield s
    s.close()


def _wait(store, job_id, timeout=180):
    end = time.monotonic() + timeout
    while not store.get(job_id).finished:
        assert time.monotonic() < end, f"{job_id} did not finish: {store.get(job_id)}"
        time.sleep(0.1)
    return store.get(job_id)


def test_submit_validates_and_queues(store, tmp_path):
    row = store.submit({"task": "text-to-video", "prompt": "a fox", **TINY})
    assert row.status == "queued" and row.progress == 0 and row.job["preset"] == "tiny"
    assert store.folder(row.id).is_dir()
    with pytest.raises(InputError, match=r"^steps: 0 is out of range"):
        store.submit({"task": "text-to-video", "prompt": "a fox", "steps": 0})
    with pytest.raises(InputError, match=r"^device: a request cannot set it \(host option"):
        store.submit({"task": "text-to-video", "prompt": "a fox", "device": "cpu"})
    with pytest.raises(InputError, match=r"^num_frames: 100000 is out of range; pass a number between"):  # the preset's models are checked at submit
        store.submit({"task": "text-to-video", "prompt": "a fox", "num_frames": 100000})
    assert [r.id for r in store.list()] == [row.id]  # refused jobs leave no row and no folder
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [row.id]


def test_seed_fixed_at_submit(store):
    row = store.submit({"task": "text-to-video", "prompt": "a fox"})
    assert isinstance(row.job["seed"], int)  # a job run again after a restart makes the same video


def test_idempotency_key_returns_the_same_job(store):
    a = store.submit({"task": "text-to-video", "prompt": "a fox"}, idempotency_key="k-1")
    b = store.submit({"task": "text-to-video", "prompt": "a fox"}, idempotency_key="k-1")
    c = store.submit({"task": "text-to-video", "prompt": "a fox"}, idempotency_key="k-2")
    assert a.id == b.id != c.id and len(store.list()) == 2


def test_file_inputs_upload_paths_and_job_refs(store, tmp_path):
    img = media.write_image(Image.new("RGB", (64, 64), "red"), tmp_path / "up.png")
    row = store.submit({"task": "image-to-video", "prompt": "go", **TINY}, files={"image": img})
    assert row.job["image"] == str(store.folder(row.id) / "inputs" / "image.png") and not img.exists()  # moved in
    with pytest.raises(InputError, match=r"^video: '/etc/hosts' is a path on the server"):
        store.submit({"task": "extend", "video": "/etc/hosts"})
    with pytest.raises(InputError, match=r"^video: 'job:nope' is not a job of this server"):
        store.submit({"task": "extend", "video": "job:nope"})
    with pytest.raises(InputError, match=rf"^video: job:{row.id} is queued, not completed"):
        store.submit({"task": "extend", "video": f"job:{row.id}"})
    with pytest.raises(InputError, match=r"^video: an uploaded file is not an input of text-to-video"):
        store.submit({"task": "text-to-video", "prompt": "a"}, files={"video": img})


def test_inputs_dir_allows_server_paths(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    img = media.write_image(Image.new("RGB", (64, 64), "red"), inputs / "a.png")
    s = JobStore(tmp_path / "j.db", tmp_path / "o", defaults={"preset": "tiny"}, inputs_dir=inputs)
    assert s.submit({"task": "image-to-video", "prompt": "go", "image": str(img)}).job["image"] == str(img)
    with pytest.raises(InputError, match=f"or a path under {inputs}"):
        s.submit({"task": "image-to-video", "prompt": "go", "image": str(inputs / ".." / "x.png")})


def test_list_order_after_and_cancel_and_delete(store):
    ids = [store.submit({"task": "text-to-video", "prompt": f"p{i}"}).id for i in range(4)]
    assert [r.id for r in store.list()] == ids[::-1]
    assert [r.id for r in store.list(order="asc", limit=2)] == ids[:2]
    assert [r.id for r in store.list(after=ids[2], limit=5)] == ids[1::-1]
    assert store.cancel(ids[0]).status == "cancelled"
    assert [e["type"] for e in store.events(ids[0])] == ["cancelled"]
    assert store.delete(ids[1]) and store.get(ids[1]) is None and not store.folder(ids[1]).exists()
    assert not store.delete(ids[1])
    assert store.counts()["queued"] == 2 and store.counts()["cancelled"] == 1
    with pytest.raises(InputError, match="order: 'up' is not an order"):
        store.list(order="up")


def test_recover_requeues_running_jobs(tmp_path):
    s = JobStore(tmp_path / "jobs.db", tmp_path / "out", defaults={"preset": "tiny"})
    a = s.submit({"task": "text-to-video", "prompt": "a"}).id
    b = s.submit({"task": "text-to-video", "prompt": "b"}).id
    assert s.claim().id == a
    s.cancel(b)
    s.close()  # as if the process died: a new store on the same file
    again = JobStore(tmp_path / "jobs.db", tmp_path / "out")
    assert again.recover() == [a]
    assert again.get(a).status == "queued" and again.get(b).status == "cancelled"
    mode = sqlite3.connect(tmp_path / "jobs.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_worker_runs_jobs_with_events_and_cancels(store):
    row = store.submit({"task": "text-to-video", "prompt": "a fox", **TINY})
    worker = Worker(store, {"device": "cpu"}).start()
    try:
        done = _wait(store, row.id)
        assert done.status == "completed" and done.progress == 100, done.error
        assert media.probe_video(done.video)[3] == done.manifest["video"]["num_frames"]
        kinds = [e["type"] for e in store.events(row.id)]
        assert kinds[-1] == "done" and kinds.count("step") == len(done.manifest["route"])
        seqs = [e["seq"] for e in store.events(row.id)]
        assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1))
        ext = store.submit({"task": "extend", "video": f"job:{row.id}", **TINY})
        assert _wait(store, ext.id).status == "completed"
        gone = store.submit({"task": "text-to-video", "prompt": "never", **TINY})
        while store.get(gone.id).status == "queued":  # cancelled at its first step
            time.sleep(0.01)
        assert store.cancel(gone.id).status in ("in_progress", "cancelled")
        assert _wait(store, gone.id).status == "cancelled"
    finally:
        worker.stop()


def test_serve_command_refuses_open_host_without_keys(tmp_path, capsys):
    pytest.importorskip("fastapi")  # the serve extra (in dev); without it the command says to install it
    from mora.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--out-dir", str(tmp_path)]) == 2
    assert "--host: 0.0.0.0 lets other machines connect; pass --api-key-file" in capsys.readouterr().err
    empty = tmp_path / "keys.txt"
    empty.write_text("# no keys yet\n")
    assert main(["serve", "--host", "0.0.0.0", "--api-key-file", str(empty)]) == 2
    assert "holds no key; write one key per line" in capsys.readouterr().err

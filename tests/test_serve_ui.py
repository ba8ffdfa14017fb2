"""The web page mounted by `mora serve` submits to the service's queue (no browser: the page's App in-process)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mora import media
from mora.service.store import JobStore
from mora.service.worker import Worker

gr = pytest.importorskip("gradio", reason="the ui extra (gradio) is part of the dev install")

from mora.ui import App  # noqa: E402

TINY = {"seed": 1, "num_frames": 3, "steps": 1, "width": 64, "height": 64, "metrics": False}


@pytest.fixture
def queue(tmp_path):
    store = JobStore(tmp_path / "jobs.db", tmp_path / "out", defaults={"preset": "tiny"})
    worker = Worker(store, {"device": "cpu"}).start()
    yield store, App(output_root=tmp_path / "out" / "ui", shared={"preset": "tiny"}, store=store)
    worker.stop()
    store.close()


def _error(updates) -> str:
    """The message the page shows for a job that fails (gr.Error's text)."""
    with pytest.raises(gr.Error) as e:
        list(updates)
    return e.value.message


def test_page_job_goes_through_the_queue(queue, tmp_path):
    store, app = queue
    img = media.write_image(Image.new("RGB", (64, 64), "red"), tmp_path / "up.png")
    updates = list(app.run_job("image-to-video", {"prompt": "a fox", "image": str(img)}, TINY, False))
    [row] = store.list()
    assert row.status == "completed" and row.task == "image-to-video", row.error
    assert row.job["image"] == str(store.folder(row.id) / "inputs" / "image.png") and img.exists()  # the page's copy moved in
    log, _, _, video, _, route, manifest = updates[-1]
    assert video == row.video and media.probe_video(video)[3] == row.manifest["video"]["num_frames"]
    steps = [e["data"]["step"] for e in store.events(row.id) if e["type"] == "step"]
    assert steps and log.splitlines() == [f"- queued as {row.id}", *(f"- {s}" for s in steps),
                                           f"- done: {row.manifest['video']['num_frames']} frames, 64x64"]
    assert route == " -> ".join(row.manifest["route"])
    assert json.loads(open(manifest).read())["video"]["path"] == row.video
    assert not list((tmp_path / "out" / "ui").iterdir())  # the uploads' staging folder is gone


def test_page_refuses_review_and_bad_jobs_on_the_queue(queue):
    store, app = queue
    assert _error(app.run_job("text-to-video", {"prompt": "a fox"}, TINY, True)).startswith(
        "review: a job of the server's queue cannot wait for a person's review; untick it")
    assert _error(app.run_job("text-to-video", {"prompt": "a fox"}, {**TINY, "steps": 0}, False)).startswith(
        "steps: 0 is out of range")
    assert store.list() == []  # nothing was queued


def test_page_story_storyboard_only_through_the_queue(queue):
    store, app = queue
    *_, (log, board, film, sheet, manifest) = app.run_story("A fox wakes. The fox runs.", 2, None, True)
    [row] = store.list()
    assert row.status == "completed" and row.job["storyboard_only"] and row.video is None, row.error
    assert film is None and len(board["shots"]) == 2 == len(row.manifest["shots"])
    assert manifest == str(store.folder(row.id) / "video_storyboard.json")
    assert log.splitlines()[-1] == "- done: storyboard only"


def test_page_shows_a_failed_queued_job(queue, monkeypatch):
    store, app = queue
    import mora.workflows.runner as runner

    def broken(job, hooks):
        raise RuntimeError("the model ran out of memory")

    monkeypatch.setattr(runner, "run_job", broken)
    assert _error(app.run_job("text-to-video", {"prompt": "a fox"}, TINY, False)) == \
        "RuntimeError: the model ran out of memory"
    assert store.list()[0].status == "failed"


def test_service_mounts_the_page_on_its_store(tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    from mora.service.app import build_service

    built = []
    real_build = App.build

    def build(self):
        built.append((self, real_build(self)))
        return built[-1][1]

    monkeypatch.setattr(App, "build", build)
    service = build_service(db=tmp_path / "j.db", out_dir=tmp_path / "out", ui=True, start_worker=False)
    [(page, blocks)] = built
    assert page.store is service.store  # the page's jobs are the service's jobs
    assert blocks._queue.default_concurrency_limit is None  # the queue orders the jobs, not a page slot


def test_page_story_film_through_the_queue(queue):
    store, app = queue
    *_, (log, board, film, sheet, manifest) = app.run_story("A fox wakes. The fox runs.", 2, 1, False)
    [row] = store.list()
    assert row.status == "completed" and film == row.video, row.error
    assert board == json.loads(open(row.manifest["storyboard"]).read()) and len(board["shots"]) == 2
    assert sheet == row.manifest["contact_sheet"] and manifest == str(store.folder(row.id) / "video.json")
    assert f"- storyboard {board['title']!r}: 2 shots" in log.splitlines()

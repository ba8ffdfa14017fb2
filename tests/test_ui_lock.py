"""`mora ui` runs one job at a time per process: its pipelines are cached per process, and gradio's
slot is freed when a page closes while the job's thread runs on (issue 29, item 13)."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("gradio", reason="the ui extra (gradio) is part of the dev install")

RUN_S = 0.4  # how long the stand-in runner holds a job: long enough for a second job to try to start


@pytest.fixture()
def runs(monkeypatch):
    """A stand-in for the runner that records when each job starts and ends (no models: the lock is the point)."""
    import mora.workflows.runner as runner
    from mora.workflows.prepare import RunResult

    spans: list[tuple[float, float]] = []
    started = threading.Event()

    def slow_run_job(job, hooks=None):
        start = time.monotonic()
        started.set()
        time.sleep(RUN_S)
        spans.append((start, time.monotonic()))
        manifest = {"video": {"num_frames": 1, "width": 8, "height": 8}, "route": ["t"], "shots": [],
                    "title": "t"}
        return RunResult(None, manifest, None, None)

    monkeypatch.setattr(runner, "run_job", slow_run_job)
    return spans, started


def _overlaps(spans):
    spans = sorted(spans)
    return [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]


def test_two_jobs_at_once_never_overlap(runs, tmp_path):
    from mora.ui import App

    runs, _ = runs
    app = App(preset="tiny", device="cpu", output_root=tmp_path)
    jobs = [lambda: list(app.run_job("text-to-video", {"prompt": "a fox"}, {}, False)),
            lambda: list(app.run_story("A fox wakes. The fox runs.", 2, None, True))]
    threads = [threading.Thread(target=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(runs) == 2 and not _overlaps(runs), runs


def test_a_closed_pages_job_holds_the_lock_until_it_ends(runs, tmp_path):
    from mora.ui import App

    runs, started = runs
    app = App(preset="tiny", device="cpu", output_root=tmp_path)
    first = app.run_job("text-to-video", {"prompt": "a fox"}, {}, False)
    next(first)
    assert started.wait(10)  # the first job runs
    first.close()  # the client went away: gradio frees its slot, the thread runs on
    second = list(app.run_job("text-to-video", {"prompt": "a cat"}, {}, False))
    assert any("waiting for the job already running" in update[0] for update in second)
    time.sleep(0.1)  # the first job's span is recorded as it returns
    assert len(runs) == 2 and not _overlaps(runs), runs

"""`mora.batch`: many jobs with warm models, in-process and on Ray (tiny preset, CPU).

In-process: the six tasks in one batch (rows, outputs, models loaded once), a bad jobs file
reported line by line before anything runs, a missing or broken input failing its job alone,
fail-fast, Ctrl-C and resume. On Ray (slow tier, skipped without ray): two CPU actors make the
same frames as the in-process run, and a killed actor's job is retried once on another actor.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import gradient_frames

import mora
from mora import media
from mora.errors import InputError
from mora.workflows.batch import BatchInterrupted, JobsFileError, format_summary, load_jobs

TINY = dict(preset="tiny", device="cpu", progress=False)


def _write_jobs(path: Path, jobs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    return path


def _frames(path: str | Path) -> np.ndarray:
    return media.read_video(path, argument="video").frames


def _rows(result) -> dict:
    return {r.id: r for r in result.jobs}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Input files for the tasks that take them: an image and two short videos."""
    d = tmp_path_factory.mktemp("batch-inputs")
    media.write_video(gradient_frames(8, 96, 64), d / "clip.mp4", fps=8)
    media.write_video(gradient_frames(8, 96, 64, shift=9), d / "clip_b.mp4", fps=8)
    media.write_image(media.Video(gradient_frames(1, 96, 64), fps=1).pil_frames()[0], d / "frame.png")
    return {"image": str(d / "frame.png"), "video": str(d / "clip.mp4"), "video_b": str(d / "clip_b.mp4")}


def six_jobs(inputs: dict[str, str]) -> list[dict]:
    return [
        {"id": "t2v", "task": "text-to-video", "prompt": "a red fox running through snow", "seed": 1},
        {"id": "i2v", "task": "image-to-video", "image": inputs["image"], "prompt": "the fox leaps", "seed": 2},
        {"id": "extend", "task": "extend", "video": inputs["video"], "prompt": "the fox stops", "seed": 3},
        {"id": "edit", "task": "edit", "video": inputs["video"], "instruction": "make it autumn", "seed": 4},
        {"id": "connect", "task": "connect", "video_a": inputs["video"], "video_b": inputs["video_b"], "seed": 5},
        {"task": "simulate", "prompt": "a village by a river at sunrise", "seed": 6, "out": "sim/village.mp4"},
    ]


@pytest.fixture(scope="module")
def local_six(tmp_path_factory, inputs):
    """The six tasks as one in-process batch; after each job, which pipeline objects are cached."""
    from mora.tools import runtime

    def loaded() -> dict:
        def never():
            raise AssertionError("a cached pipeline was loaded again")

        return {key: id(runtime.get_pipeline(key, never)) for key in runtime.cached_keys()}

    d = tmp_path_factory.mktemp("batch-local")
    jobs_file = _write_jobs(d / "jobs.jsonl", six_jobs(inputs))
    snapshots: list[dict] = []
    result = mora.batch(jobs_file, out_dir=d / "out", on_job=lambda row: snapshots.append(loaded()), **TINY)
    return result, jobs_file, snapshots


# --------------------------------------------------------------------------------------------
# In-process


def test_six_tasks_in_one_process(local_six):
    result, jobs_file, _ = local_six
    assert result.exit_code == 0 and result.mode == "in-process", format_summary(result)
    rows = _rows(result)
    assert list(rows) == ["t2v", "i2v", "extend", "edit", "connect", "6"]  # the 6th has no id: its line
    out = result.out_dir
    assert rows["t2v"].video == str(out / "t2v.mp4")  # no `out`: <out-dir>/<id>.mp4
    assert rows["6"].video == str(out / "sim" / "village.mp4")  # a relative `out` goes under --out-dir
    for job in load_jobs(jobs_file, out_dir=out, defaults={"preset": "tiny"}, overwrite=True):  # its own outputs
        row = rows[job.id]
        assert (row.status, row.worker, row.attempts, row.error) == ("ok", "in-process", 1, None)
        manifest = json.loads(Path(row.video).with_suffix(".json").read_text())
        assert manifest["task"] == job.task and manifest["seed"] == job.options["seed"]
        assert manifest["preset"] == "tiny" and manifest["route"]
        assert len(_frames(row.video)) == manifest["video"]["num_frames"] > 0
        assert Path(row.video).with_name(f"{Path(row.video).stem}_artifacts").is_dir()
    on_disk = json.loads((out / "batch.json").read_text())
    assert on_disk["counts"] == {"pending": 0, "ok": 6, "failed": 0, "skipped": 0}
    assert [r["id"] for r in on_disk["jobs"]] == list(rows)
    assert {"id", "status", "error", "seconds", "worker", "video"} <= set(on_disk["jobs"][0])


def test_models_load_once_and_stay_warm(local_six):
    """Every pipeline a job loaded is the same object at the end of the batch: nothing reloaded."""
    _, _, snapshots = local_six
    assert len(snapshots) == 6 and snapshots[0]
    final = snapshots[-1]
    for snapshot in snapshots:
        assert {key: final.get(key) for key in snapshot} == snapshot
    assert len(final) < 6 * 2  # shared, not one set per job


def test_summary_table(local_six):
    result, _, _ = local_six
    table = format_summary(result)
    assert table.splitlines()[0].split()[:3] == ["id", "task", "status"]
    assert "6 jobs: 6 ok, 0 failed, 0 skipped, 0 pending" in table
    assert "jobs/min" in table and str(result.path) in table


def test_bad_lines_are_all_reported_before_anything_runs(tmp_path):
    good = {"task": "text-to-video", "prompt": "a fox", "out": "fox.mp4"}
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join([
        json.dumps(good),
        '{"task": "text-to-video", "prompt": ',  # 2: not JSON
        json.dumps({"task": "text-to-vidoe", "prompt": "a fox"}),  # 3: task name
        json.dumps({"task": "text-to-video", "prompt": "a fox", "width": 100}),  # 4: not a multiple of 8
        "",  # blank lines are ignored
        json.dumps({**good, "seed": 1}),  # 6: same output as line 1
        json.dumps({"task": "extend", "prompt": "more"}),  # 7: missing input
        json.dumps({"task": "text-to-video", "prompt": "a fox", "steps": "ten"}),  # 8: option type
    ]) + "\n", encoding="utf-8")
    out_dir = tmp_path / "out"
    with pytest.raises(JobsFileError) as caught:
        mora.batch(path, out_dir=out_dir, **TINY)
    problems = caught.value.problems
    assert [re.match(r"jobs\.jsonl:(\d+): ([a-z_]+)", p).groups() for p in problems] == [
        ("2", "not"), ("3", "task"), ("4", "width"), ("6", "out"), ("7", "video"), ("8", "steps")]
    assert "not valid JSON" in problems[0]
    assert "use 96 or 104" in problems[2] and "also the output of line 1" in problems[3]
    assert isinstance(caught.value, InputError) and caught.value.exit_code == 2
    assert not out_dir.exists()  # nothing ran, nothing written


def test_bad_batch_arguments(tmp_path):
    jobs = [{"task": "text-to-video", "prompt": "a fox"}]
    with pytest.raises(InputError, match="--workers: 2 needs --ray"):
        mora.batch(jobs, out_dir=tmp_path, workers=2, **TINY)
    with pytest.raises(InputError, match="out: not an option for every job"):
        mora.batch(jobs, out_dir=tmp_path, out="x.mp4", **TINY)
    with pytest.raises(JobsFileError, match="id: 'a' is also the id of line 1"):
        mora.batch([{**jobs[0], "id": "a"}, {**jobs[0], "id": "a", "out": "b.mp4"}], out_dir=tmp_path, **TINY)
    with pytest.raises(JobsFileError, match="would write its manifest over batch.json"):
        mora.batch([{**jobs[0], "out": "batch.mp4"}], out_dir=tmp_path, **TINY)
    with pytest.raises(JobsFileError, match="device: 'cuda:1' with Ray"):
        load_jobs([{**jobs[0], "device": "cuda:1"}], out_dir=tmp_path, ray=True)
    with pytest.raises(JobsFileError, match="is the output of line 1; on Ray"):
        load_jobs([{**jobs[0], "out": "a.mp4"}, {"task": "extend", "video": str(tmp_path / "a.mp4")}],
                  out_dir=tmp_path, ray=True)


def test_job_lines_are_the_job_model_and_llm_config_for_ray(tmp_path, monkeypatch):
    from mora.workflows.batch import with_llm_configs

    [job] = load_jobs([{"task": "text-to-video", "prompt": " a fox ", "preset": "tiny", "seed": 1}], out_dir=tmp_path)
    assert (job.inputs, job.options["seed"], job.preset) == ({"prompt": "a fox"}, 1, "tiny")
    with pytest.raises(JobsFileError, match=r"seed: 1.0 is not a whole number"):  # never converted
        load_jobs([{"task": "text-to-video", "prompt": "a fox", "seed": 1.0}], out_dir=tmp_path)
    with pytest.raises(JobsFileError, match="review: a batch line cannot set it"):
        load_jobs([{"task": "text-to-video", "prompt": "a fox", "review": True}], out_dir=tmp_path)
    # Ray actors may run on machines without the config file: it is read once, where the batch starts.
    monkeypatch.setenv("OAI_CONFIG_LIST", json.dumps([{"model": "m", "api_key": "k", "base_url": "http://x/v1"}]))
    jobs = with_llm_configs(load_jobs([{"task": "text-to-video", "prompt": "a fox"}], out_dir=tmp_path, ray=True))
    assert [entry["model"] for entry in jobs[0].options["llm_config"]] == ["m"]


def test_missing_or_broken_input_fails_only_its_job(tmp_path, inputs):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video")
    jobs = [
        {"id": "first", "task": "text-to-video", "prompt": "a fox", "seed": 1},
        {"id": "missing", "task": "extend", "video": str(tmp_path / "nowhere.mp4")},
        {"id": "broken", "task": "edit", "video": str(broken), "instruction": "make it autumn"},
        {"id": "no-image", "task": "image-to-video", "image": "no/such.png", "prompt": "a fox"},
        {"id": "last", "task": "simulate", "prompt": "a village", "seed": 2, "image": inputs["image"]},
    ]
    result = mora.batch(jobs, out_dir=tmp_path / "out", **TINY)
    rows = _rows(result)
    assert {k: r.status for k, r in rows.items()} == {
        "first": "ok", "missing": "failed", "broken": "failed", "no-image": "failed", "last": "ok"}
    assert result.exit_code == 1
    assert "nowhere.mp4" in rows["missing"].error and "\n" not in rows["missing"].error
    assert "broken.mp4" in rows["broken"].error
    assert str(Path("no/such.png").absolute()) in rows["no-image"].error  # relative inputs: from the cwd
    assert not (tmp_path / "out" / "missing.mp4").exists()
    on_disk = json.loads(result.path.read_text())
    assert [r["status"] for r in on_disk["jobs"]] == ["ok", "failed", "failed", "failed", "ok"]
    assert "5 jobs: 2 ok, 3 failed, 0 skipped, 0 pending" in format_summary(result)


def test_fail_fast_skips_the_rest(tmp_path):
    jobs = [{"task": "extend", "video": str(tmp_path / "nowhere.mp4")},
            {"task": "text-to-video", "prompt": "a fox", "seed": 1}]
    result = mora.batch(jobs, out_dir=tmp_path / "out", fail_fast=True, **TINY)
    assert [r.status for r in result.jobs] == ["failed", "skipped"]
    assert "--fail-fast" in result.jobs[1].note and result.exit_code == 1


def test_interrupt_keeps_finished_jobs_and_resume_skips_them(tmp_path):
    jobs = [{"id": "a", "task": "text-to-video", "prompt": "a fox", "seed": 1},
            {"id": "b", "task": "text-to-video", "prompt": "a hare", "seed": 2}]
    out = tmp_path / "out"

    def ctrl_c(row):
        raise KeyboardInterrupt

    with pytest.raises(BatchInterrupted) as caught:
        mora.batch(jobs, out_dir=out, on_job=ctrl_c, **TINY)
    assert caught.value.result.exit_code == 130
    on_disk = json.loads((out / "batch.json").read_text())
    assert on_disk["interrupted"] and [r["status"] for r in on_disk["jobs"]] == ["ok", "pending"]
    first_video = (out / "a.mp4").stat().st_mtime_ns

    resumed = mora.batch(jobs, out_dir=out, resume=True, **TINY)
    assert [r.status for r in resumed.jobs] == ["skipped", "ok"] and resumed.exit_code == 0
    assert resumed.jobs[0].video == str(out / "a.mp4") and "earlier run" in resumed.jobs[0].note
    assert (out / "a.mp4").stat().st_mtime_ns == first_video  # not made again

    # a job whose line changed (another seed) no longer matches its manifest: it runs again
    changed = mora.batch([{**jobs[0], "seed": 7}, jobs[1]], out_dir=out, resume=True, **TINY)
    assert [r.status for r in changed.jobs] == ["ok", "skipped"]
    assert json.loads((out / "a.json").read_text())["seed"] == 7


# --------------------------------------------------------------------------------------------
# Ray (slow tier: a local Ray instance, two CPU actors)


@pytest.mark.slow
def test_ray_actors_make_the_same_frames(local_six, ray_session, tmp_path, monkeypatch):
    import torch

    local, jobs_file, _ = local_six
    # The actors compute with as many threads as the in-process batch did (Ray gives a 1-CPU actor one
    # thread unless told): a different split of a sum rounds differently, whatever the machine's cores.
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    result = mora.batch(jobs_file, out_dir=tmp_path / "ray", ray=True, workers=2, **TINY)
    assert result.exit_code == 0 and result.mode == "ray", format_summary(result)
    rows = _rows(result)
    assert {r.worker.split("@")[0] for r in rows.values()} == {"ray-1", "ray-2"}  # both actors worked
    for row in local.jobs:
        assert Path(rows[row.id].video).relative_to(tmp_path / "ray") == Path(row.video).relative_to(local.out_dir)
        ray_frames, local_frames = _frames(rows[row.id].video).astype(int), _frames(row.video).astype(int)
        assert ray_frames.shape == local_frames.shape, row.id
        # same seeds, same frames: to rounding. The model's frames match, but the H.264 encode of equal
        # frames is not always equal between processes (test_tools' seed test shows it in one process:
        # the first encode can round differently by a few levels); far below another seed's difference
        # (a mean of about 20 levels on these noise videos). Seen: means of 0.4-0.6 and once 1.12 on a
        # loaded 2-core machine, so the bound is 2.5: ten times below another seed's difference.
        diff = np.abs(ray_frames - local_frames)
        assert diff.mean() < 2.5 and diff.max() <= 40, (row.id, diff.mean(), diff.max())


def _crashing_worker():
    """A BatchWorker whose process ends abruptly (as a killed one would) on job "a"'s first attempt and on
    every attempt of job "b". Injected by the test: production code has no crash hook."""
    import os

    from mora.workflows.ray_pool import BatchWorker

    class CrashingWorker(BatchWorker):
        def run(self, job, attempt):
            if job.id == "b" or (job.id == "a" and attempt == 1):
                os._exit(1)
            return super().run(job, attempt)

    return CrashingWorker


@pytest.mark.slow
def test_ray_dead_actor_job_is_retried_once(ray_session, tmp_path, monkeypatch):
    import sys

    from ray import cloudpickle

    from mora.workflows import ray_pool

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    monkeypatch.setattr(ray_pool, "BatchWorker", _crashing_worker())
    jobs = [{"id": job_id, "task": "text-to-video", "prompt": "a fox", "seed": seed}
            for seed, job_id in enumerate(("a", "b", "c"))]
    result = mora.batch(jobs, out_dir=tmp_path / "out", ray=True, workers=2, **TINY)
    rows = _rows(result)
    assert (rows["a"].status, rows["a"].attempts) == ("ok", 2)
    assert "died on attempt 1" in rows["a"].note and not rows["a"].worker.startswith("ray-1@")
    assert (rows["b"].status, rows["b"].attempts) == ("failed", 2) and "worker died" in rows["b"].error
    assert rows["c"].status == "ok"
    assert result.exit_code == 1  # the batch finished; one job failed
    assert json.loads(result.path.read_text())["counts"]["failed"] == 1


# --- the command ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mora_batch_command_runs_reports_and_exits(tmp_path, inputs):
    from test_cli import mora as mora_cli

    good = _write_jobs(tmp_path / "good.jsonl", [
        {"task": "text-to-video", "prompt": "a fox", "seed": 1, "out": "fox.mp4"},
        {"task": "extend", "video": str(tmp_path / "missing.mp4"), "seed": 2},  # fails alone, when it starts
    ])
    proc = mora_cli("batch", str(good), "--preset", "tiny", "--out-dir", "runs", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # some failed
    rows = {r["id"]: r for r in json.loads((tmp_path / "runs" / "batch.json").read_text())["jobs"]}
    assert rows["1"]["status"] == "ok" and (tmp_path / "runs" / "fox.mp4").is_file()
    assert rows["2"]["status"] == "failed" and "does not exist" in rows["2"]["error"]
    assert "text-to-video" in proc.stderr and "failed" in proc.stderr  # the summary table

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task": "text-to-video", "prompt": "a fox"}\n{"task": "nope"}\nnot json\n')
    proc = mora_cli("batch", str(bad), "--preset", "tiny", "--out-dir", "bad-runs", cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mora: error: ")]
    assert len(errors) == 2 and ":2:" in errors[0] and ":3:" in errors[1], proc.stderr  # every bad line, by number
    assert not (tmp_path / "bad-runs").exists()


def test_jobs_take_a_preset_file_and_report_a_bad_one_by_line(tmp_path):
    good = tmp_path / "calm.toml"
    good.write_text('name = "calm-tiny"\nextends = "tiny"\ndescription = "tiny, calmer"\n\n'
                    '[roles.image_to_video.settings]\nmotion_bucket_id = 100\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad-tiny"\nextends = "tiny"\n\n[roles.image_to_video.settings]\nmotion_bukket_id = 1\n')
    jobs = [{"task": "text-to-video", "prompt": "a fox", "preset": "calm-tiny", "preset_file": str(good)},
            {"task": "text-to-video", "prompt": "a fox", "preset": "bad-tiny", "preset_file": str(bad)}]
    with pytest.raises(JobsFileError) as info:
        load_jobs(jobs, out_dir=tmp_path / "out")
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert problem.startswith("job 2: preset_file: ") and str(bad) in problem  # the line, the field, the file
    assert "motion_bukket_id: 1 is not a known field; use one of the svd settings" in problem  # mora.validation
    checked = load_jobs(jobs[:1], out_dir=tmp_path / "out")
    assert checked[0].options["preset_file"] == str(good)

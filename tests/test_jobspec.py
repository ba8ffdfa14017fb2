"""The job model: one definition of a job, and every front door derived from it (issue 19)."""

from __future__ import annotations

import json

import pytest

import mora
from mora.errors import InputError
from mora.workflows import jobspec
from mora.workflows.jobspec import OPTIONS, Option, job_model, job_schema, parse_job, spell_flag, task_options

TINY = {"preset": "tiny", "device": "cpu"}


@pytest.fixture
def test_option(monkeypatch):
    """A new job option, added to the model at run time as a developer would add one."""
    option = Option("test_knob", int | None, None, "a knob only this test knows", bounds=dict(ge=0, le=9),
                    metavar="K")
    monkeypatch.setitem(OPTIONS, option.name, option)
    jobspec.job_model.cache_clear()
    yield option
    jobspec.job_model.cache_clear()


def test_a_new_option_reaches_every_front_door(test_option, tmp_path):
    from mora.cli_parsers import build_parser, job_data
    from mora.ui import page_fields
    from mora.workflows.batch import load_jobs
    from mora.workflows.chat import director_options
    from mora.workflows.prepare import job_from_call

    # the command line: a flag with the model's help, checked by the model
    args = build_parser().parse_args(["text-to-video", "a fox", "--test-knob", "3", "--preset", "tiny"])
    assert parse_job(job_data(args, "text-to-video")).test_knob == 3
    with pytest.raises(InputError) as e:
        parse_job(job_data(build_parser().parse_args(["extend", "v.mp4", "--test-knob", "12"]), "extend"))
    assert e.value.param == "test_knob" and e.value.spelled(spell_flag).startswith("--test-knob: 12 is out of range")
    # mora.run's keywords, a batch line, the web page's fields, the chat director's schema, the service's schema
    spec, _ = job_from_call("simulate", {"prompt": "a village"}, {"test_knob": 4, **TINY})
    assert spec.test_knob == 4
    [job] = load_jobs([{"task": "extend", "video": "v.mp4", "test_knob": 5}], out_dir=tmp_path, defaults=TINY)
    assert job.options["test_knob"] == 5
    assert "test_knob" in page_fields("connect")
    assert "test_knob" in [o.name for o in director_options()]
    assert job_schema("story")["properties"]["test_knob"]["description"] == test_option.help


def test_errors_name_the_field_the_value_and_the_fix():
    cases = {
        ("extend", "steps", 0): "steps: 0 is out of range; pass a number >= 1",
        ("extend", "best_of", 2): "best_of: 2 is not an input or option of extend; it is for text-to-video, simulate",
        ("extend", "device", "gpu"): "device: 'gpu' is not allowed; use auto, cpu, cuda, cuda:N or mps",
        ("extend", "metrics", "yes"): "metrics: 'yes' is not true or false; pass true or false",
        ("extend", "profile", "x"): "profile: 'x' is not allowed; use 'balanced', 'fast', 'low-vram', 'auto' or 'paper'",
    }
    for (task, name, value), message in cases.items():
        with pytest.raises(InputError) as info:
            parse_job({"task": task, "video": "a.mp4", name: value}, where="jobs.jsonl:3")
        assert str(info.value) == f"jobs.jsonl:3: {message}"
    with pytest.raises(InputError, match="^task: 'x' is not a task; choose one of text-to-video, .*, story$"):
        parse_job({"task": "x"})
    with pytest.raises(InputError, match="^video_b: missing; connect needs video_a and video_b$"):
        parse_job({"task": "connect", "video_a": "a.mp4"})
    with pytest.raises(InputError, match="^prompt: '  ' is empty or not text; pass a non-empty description$"):
        parse_job({"task": "text-to-video", "prompt": "  "})


def test_scopes_keep_host_and_person_options_from_other_doors():
    line = {"task": "text-to-video", "prompt": "a fox", "review": True}
    with pytest.raises(InputError, match="^review: a batch line cannot set it"):
        parse_job(line, scopes=("job", "host"), door="a batch line")
    assert parse_job(line).review is True  # the command line and the page may
    schema = job_schema("text-to-video")  # a service request: job options only
    assert "seed" in schema["properties"] and not {"device", "out", "llm_config", "review"} & set(schema["properties"])
    seed = next(s for s in schema["properties"]["seed"]["anyOf"] if s["type"] == "integer")
    assert (seed["minimum"], seed["maximum"]) == (0, 2**32 - 1)  # bounds travel into the schema


def test_every_task_has_a_model_and_story_is_one_of_them():
    for task in jobspec.JOB_TASKS:
        model = job_model(task)
        assert model.model_fields["task"].default == task
        assert {o.name for o in task_options(task)} <= set(model.model_fields)
    assert {"shots", "continuity"} <= set(job_model("story").model_fields)
    assert "shots" not in job_model("text-to-video").model_fields


def test_story_takes_its_preset_file(tmp_path):
    """Bug 1: mora.story ignored preset_file and ran preset mora; naming the file's preset was 'unknown'."""
    fast = tmp_path / "fast.toml"
    fast.write_text('name = "fast-tiny"\nextends = "tiny"\n\n[roles.image_to_video.settings]\nfps = 14\n')
    kwargs = dict(shots=2, storyboard_only=True, device="cpu")
    tiny = mora.story("A fox wakes. The fox runs.", preset="tiny", out=str(tmp_path / "a.mp4"), **kwargs)
    by_file = mora.story("A fox wakes. The fox runs.", preset_file=str(fast), out=str(tmp_path / "b.mp4"), **kwargs)
    named = mora.story("A fox wakes. The fox runs.", preset="fast-tiny", preset_file=str(fast),
                       out=str(tmp_path / "c.mp4"), **kwargs)
    seconds = [r.manifest["shots"][0]["seconds"] for r in (tiny, by_file, named)]
    assert seconds[1] == seconds[2] < seconds[0]  # twice the fps: the preset's own length is shorter


@pytest.mark.slow
def test_batch_resume_with_a_preset_file_skips_finished_jobs(tmp_path):
    """Bug 2: resume=True with jobs carrying a preset_file raised InputError for the whole batch."""
    calm = tmp_path / "calm.toml"
    calm.write_text('name = "calm-tiny"\nextends = "tiny"\n\n[roles.image_to_video.settings]\nmotion_bucket_id = 90\n')
    jobs = [{"id": "a", "task": "text-to-video", "prompt": "a fox", "seed": 3, "preset_file": str(calm)}]
    first = mora.batch(jobs, out_dir=tmp_path / "out", device="cpu", progress=False)
    assert first.jobs[0].status == "ok"
    again = mora.batch(jobs, out_dir=tmp_path / "out", device="cpu", progress=False, resume=True)
    assert (again.jobs[0].status, again.jobs[0].note) == ("skipped", "finished in an earlier run (manifest matches)")
    assert json.loads((tmp_path / "out" / "a.json").read_text())["preset"] == "calm-tiny"


def test_resume_and_overwrite_follow_one_rule(tmp_path):
    """--resume with nothing to resume is exit 2 naming the folder; writing over outputs needs --overwrite."""
    with pytest.raises(InputError, match=r"^resume: .*holds no earlier run of this story"):
        mora.story("A fox wakes. The fox runs.", shots=2, out=str(tmp_path / "s.mp4"), resume=True, **TINY)
    with pytest.raises(InputError, match=r"^--resume: .*holds no batch.json of an earlier run"):
        mora.batch([{"task": "text-to-video", "prompt": "a fox"}], out_dir=tmp_path / "b", resume=True, **TINY)
    assert not (tmp_path / "b").exists()
    out = tmp_path / "b"
    out.mkdir()
    (out / "1.mp4").write_bytes(b"an earlier job's video")
    with pytest.raises(InputError, match=r"out: .*1\.mp4' already has an earlier job's outputs .*; pass --overwrite"):
        mora.batch([{"task": "text-to-video", "prompt": "a fox"}], out_dir=out, **TINY)
    assert (out / "1.mp4").read_bytes() == b"an earlier job's video" and not (out / "batch.json").exists()


def test_the_service_schema_is_the_model():
    schema = job_schema("connect")
    assert set(schema["required"]) == {"video_a", "video_b"}
    assert schema["properties"]["video_a"]["kind"] == "video"
    assert schema["additionalProperties"] is False

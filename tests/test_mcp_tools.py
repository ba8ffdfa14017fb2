"""MCP tools as data (mora.mcp.tools): generated from the job model, arguments checked as the command line checks them."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from mora.errors import InputError
from mora.mcp import tools as mt
from mora.workflows.jobspec import JOB_TASKS, OPTIONS, parse_job, task_inputs, task_options


def test_one_tool_per_task_of_the_job_model_and_the_four_others():
    assert set(mt.TOOL_NAMES) == set(JOB_TASKS)
    names = [t["name"] for t in mt.all_tools()]
    assert names == [mt.TOOL_NAMES[t] for t in JOB_TASKS] + ["get_job", "cancel_job", "list_presets", "score_video"]
    assert all(re.fullmatch(r"[a-z_]{1,64}", n) for n in names) and len(set(names)) == len(names)


@pytest.mark.parametrize("task", JOB_TASKS)
def test_a_task_tool_schema_is_the_job_schema_of_its_job_options_plus_wait(task):
    schema = mt.tool_schema(task, preset="tiny")
    expected = {i.name for i in task_inputs(task)} | {o.name for o in task_options(task, ("job",))} | {"wait"}
    assert set(schema["properties"]) == expected
    host_or_person = {o.name for o in OPTIONS.values() if o.scope != "job"}
    assert not host_or_person & set(schema["properties"])  # device, out, review, ... are not the caller's
    assert schema["required"] == [i.name for i in task_inputs(task) if i.required]
    assert schema["properties"]["preset"]["default"] == "tiny"
    assert schema["properties"]["wait"] == {"type": "boolean", "default": True, "description": mt.WAIT_HELP,
                                            "title": "Wait"}
    assert schema["additionalProperties"] is False and schema["type"] == "object"


def test_bounds_and_help_come_from_the_options():
    props = mt.tool_schema("text-to-video")["properties"]
    steps = next(s for s in props["steps"]["anyOf"] if s.get("type") == "integer")
    assert (steps["minimum"], steps["maximum"]) == (OPTIONS["steps"].bounds["ge"], OPTIONS["steps"].bounds["le"])
    assert props["seed"]["description"] == OPTIONS["seed"].help
    assert props["preset"]["default"] == OPTIONS["preset"].default  # no server preset: the job model's


def test_file_inputs_say_what_they_take_per_transport():
    local = mt.tool_schema("connect", any_path=True)["properties"]["video_a"]["description"]
    remote = mt.tool_schema("connect", any_path=False)["properties"]["video_a"]["description"]
    assert "local path" in local and "job:<id>" in local
    assert "local path" not in remote and "job:<id>" in remote


def test_other_tools_schemas_from_their_models():
    tools = {t["name"]: t for t in mt.all_tools()}
    assert tools["get_job"]["input_schema"]["required"] == ["job_id"]
    assert tools["list_presets"]["input_schema"]["properties"] == {}
    assert set(tools["text_to_video"]["output_schema"]["properties"]) >= {"job_id", "video", "route",
                                                                         "enhanced_prompt", "seconds", "score_card"}
    with pytest.raises(InputError, match=r"^job_id: missing"):
        mt.other_arguments("get_job", {})


def test_arguments_become_the_job_as_given_and_wait():
    data, wait = mt.job_arguments("text_to_video", {"prompt": "a fox", "num_frames": 3, "seed": None})
    assert (data, wait) == ({"prompt": "a fox", "num_frames": 3, "task": "text-to-video"}, True)
    data, wait = mt.job_arguments("make_story", {"story": "a fox's day", "wait": False})
    assert (data, wait) == ({"story": "a fox's day", "task": "story"}, False)  # no defaults filled: the store's


@pytest.mark.parametrize("arguments", [{"prompt": "a fox", "num_frames": 0}, {"prompt": "a fox", "seed": -1},
                                       {"prompt": ""}, {"prompt": "a fox", "best_of": "two"}, {}])
def test_bad_values_get_the_job_models_one_line_message(arguments):
    with pytest.raises(InputError) as cli:
        parse_job({"task": "text-to-video", **arguments})
    with pytest.raises(InputError) as tool:
        mt.job_arguments("text_to_video", arguments)
    assert str(tool.value) == str(cli.value) and "\n" not in str(tool.value)


def test_host_options_and_other_fields_are_refused():
    with pytest.raises(InputError, match=r"^device: an MCP tool call cannot set it"):
        mt.job_arguments("text_to_video", {"prompt": "a fox", "device": "cpu"})
    with pytest.raises(InputError, match=r"^review: an MCP tool call cannot set it"):
        mt.job_arguments("text_to_video", {"prompt": "a fox", "review": True})
    with pytest.raises(InputError, match=r"^wait: 'yes' is not true or false"):
        mt.job_arguments("text_to_video", {"prompt": "a fox", "wait": "yes"})
    with pytest.raises(InputError, match=r"^task: 'extend' is not text_to_video's task"):
        mt.job_arguments("text_to_video", {"prompt": "a fox", "task": "extend"})
    with pytest.raises(InputError, match=r"^shots: 3 is not an input or option of text-to-video; it is for story"):
        mt.job_arguments("text_to_video", {"prompt": "a fox", "shots": 3})


def test_score_video_takes_a_job_or_over_stdio_a_local_video(tmp_path):
    assert mt.video_path("job:j1", any_path=False, resolve_job=lambda i: f"/jobs/{i}/video.mp4") == \
        "/jobs/j1/video.mp4"
    with pytest.raises(InputError, match=r"^video: '/etc/passwd' is a path on the server"):
        mt.video_path("/etc/passwd", any_path=False, resolve_job=None)
    with pytest.raises(InputError, match=r"^video: '.*nope.mp4' does not exist"):
        mt.video_path(str(tmp_path / "nope.mp4"), any_path=True, resolve_job=None)


def _row(**kw):
    base = dict(id="j1", status="completed", progress=100, step=None, error=None, video="/x/j1/video.mp4",
                manifest={"route": ["prompt_agent", "text_to_image_agent", "image_to_video_agent"],
                          "enhanced_prompt": "a fox, detailed", "video": {"num_frames": 14, "fps": 7},
                          "timings": {"total_s": 3.5}, "metrics": {"quality": 0.5}})
    return SimpleNamespace(**{**base, **kw})


def test_the_report_is_the_manifests_summary():
    rep = mt.report(_row(), "file:///x/j1/video.mp4")
    assert (rep.video, rep.seconds, rep.elapsed_s, rep.score_card) == ("file:///x/j1/video.mp4", 2.0, 3.5,
                                                                      {"quality": 0.5})
    assert rep.route[-1] == "image_to_video_agent" and rep.enhanced_prompt == "a fox, detailed"
    assert "completed" in mt.report_text(rep) and "2 s" in mt.report_text(rep)
    queued = mt.report(_row(status="queued", progress=0, manifest=None, video=None), None)
    assert (queued.video, queued.route) == (None, None) and "get_job" in mt.report_text(queued)
    failed = mt.report(_row(status="failed", error="boom: x", manifest=None), "file:///nowhere")
    assert failed.video is None and mt.report_text(failed).endswith("failed: boom: x")


def test_mora_mcp_checks_its_options_before_serving(capsys, monkeypatch, tmp_path):
    from mora.cli import main
    from mora.mcp.cli import default_out_dir

    assert main(["mcp", "--preset", "nope"]) == 2
    assert capsys.readouterr().err.startswith("mora: error: --preset: unknown preset 'nope'")
    assert main(["mcp", "--device", "tpu"]) == 2
    assert "--device: 'tpu' is not allowed" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert main(["mcp", "--preset", "tiny", "--out-dir", str(tmp_path / "a-file" / "jobs")]) == 2
    assert "--out-dir: " in capsys.readouterr().err
    monkeypatch.setenv("MORA_OUTPUTS", str(tmp_path))
    assert default_out_dir() == tmp_path / "mcp"  # not the working folder: hosts start servers anywhere

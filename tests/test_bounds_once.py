"""Each number's range is written once, in the job model's option bounds (`mora.limits.BOUNDS`, the very
dicts of `OPTIONS`): change one and every check follows. The command line, the service, MCP and the
web page (the job model's doors), the preset's check of a job (`check_options`), an LLM's tool call
(`llm_bounds`) and the tools' own checks all refuse what the changed bound refuses; before, the last
three restated `high=MAX_STEPS` and friends and went on taking what the job model refused.
"""

from __future__ import annotations

import contextlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_field_errors import _mcp_text

from mora.agents.toolcalls import ToolCallFault, llm_function, validate_args
from mora.cli import main
from mora.config import get_preset
from mora.errors import InputError
from mora.limits import BOUNDS, LLM_FACTOR, check_options, check_seed, frame_rule, llm_bounds
from mora.tools.toolset import Toolset
from mora.workflows.jobspec import OPTIONS, job_model, parse_job

FOX = {"task": "text-to-video", "prompt": "a fox"}


@contextlib.contextmanager
def _set_high(name: str, high: int):
    """Change the upper bound of `name` in the job model's definition; the derived models are rebuilt."""
    bounds = OPTIONS[name].bounds if name in OPTIONS else BOUNDS[name]
    old = dict(bounds)
    bounds["le"] = high
    job_model.cache_clear()
    try:
        yield
    finally:
        bounds.clear()
        bounds.update(old)
        job_model.cache_clear()


@pytest.fixture
def steps_up_to_3():
    with _set_high("steps", 3):
        yield


def test_the_job_model_holds_the_ranges_the_checks_read():
    for name, bounds in BOUNDS.items():
        if name in OPTIONS:
            assert OPTIONS[name].bounds is bounds, name  # one dict: nothing to keep in step
    assert "segments" not in OPTIONS  # a tool argument, not a job option: its range is still written once


def test_a_changed_bound_reaches_every_door(steps_up_to_3, tmp_path, capsys):
    refused = "4 is out of range; pass a number <= 3"
    # the command line: exit 2, one line naming the flag
    code = main(["text-to-video", "a fox", "--preset", "tiny", "--device", "cpu", "--steps", "4",
                 "--out", str(tmp_path / "cli.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and err == f"mora: error: --steps: {refused}\n", err
    # Python and batch lines (the job model itself)
    with pytest.raises(InputError, match=f"^steps: {refused}"):
        parse_job({**FOX, "steps": 4})
    assert parse_job({**FOX, "steps": 3}).steps == 3

    from mora.service.app import build_service

    svc = build_service(db=tmp_path / "jobs.db", out_dir=tmp_path / "out", defaults={"preset": "tiny"},
                        host={"device": "cpu"}, start_worker=False)
    client = TestClient(svc.app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    r = client.post("/v1/videos", json={"prompt": "a fox", "steps": 4})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "steps" and error["message"] == f"steps: {refused}", error
    r = client.post("/v1/jobs", json={**FOX, "steps": 4})
    error = r.json()["error"]
    assert 400 <= r.status_code < 500 and error["param"] == "steps", error
    assert error["message"] == f"steps: {refused}", error
    svc.store.close()

    from mora.mcp.tools import tool_schema as mcp_schema

    steps = next(s for s in mcp_schema("text-to-video")["properties"]["steps"]["anyOf"] if s.get("type") == "integer")
    assert steps["maximum"] == 3  # the schema an MCP client is shown
    assert _mcp_text(tmp_path, {"prompt": "a fox", "steps": 4}).startswith(f"steps: {refused}")

    gr = pytest.importorskip("gradio")
    from mora.ui import App

    page = App(preset="tiny", device="cpu", output_root=tmp_path / "page")
    with pytest.raises(gr.Error) as shown:  # what the page shows on Generate
        list(page.run_job("text-to-video", {"prompt": "a fox"}, {"steps": 4}, False))
    assert shown.value.message == f"steps: {refused}"


def test_a_changed_bound_reaches_the_preset_the_llm_and_the_tools(steps_up_to_3, tmp_path):
    tiny = get_preset("tiny")
    assert LLM_FACTOR * tiny.spec("text_to_image").settings.steps >= 4  # the preset alone would let an LLM ask 4
    bounds = llm_bounds(tiny, "text_to_image")
    assert bounds["steps"] == (1, 3)
    from autogen.tools.function_utils import get_function_schema  # what register_for_llm sends the LLM

    schema = get_function_schema(llm_function("text_to_image", bounds), name="text_to_image",
                                 description="paint")["function"]["parameters"]
    assert next(s for s in schema["properties"]["steps"]["anyOf"] if s.get("type") == "integer")["maximum"] == 3
    with pytest.raises(ToolCallFault, match="^steps: 4 is out of range"):
        validate_args("text_to_image", {"prompt": "a fox", "steps": 4}, lambda p, a: p, bounds)
    with pytest.raises(InputError, match="^steps: 4 is out of range; pass a number between 1 and 3") as caught:
        check_options(tiny, {"steps": 4}, video_tool="image_to_video")
    assert caught.value.param == "steps"
    with pytest.raises(InputError, match="^steps: 4 is out of range; pass a number between 1 and 3"):
        Toolset(preset="tiny", device="cpu", output_dir=tmp_path).text_to_image("a fox", steps=4, seed=0)


# name -> (the patched high, the tool, a value of that argument one past it)
CASES = {
    "seed": (100, "text_to_image", 101),
    "width": (64, "text_to_image", 72),
    "height": (64, "text_to_image", 72),
    "fps": (10, "image_to_video", 11),
    "segments": (2, "image_to_video", 3),
    "num_frames": (4, "image_to_video", 5),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_range_the_tools_check_is_the_job_models(name, tmp_path):
    high, tool, value = CASES[name]
    tiny = get_preset("tiny")
    image = tmp_path / "frame.png"
    Image.new("RGB", (64, 48)).save(image)
    args = {"prompt": "a fox"} if tool == "text_to_image" else {"image_path": str(image)}
    before = llm_bounds(tiny, tool)[name][1]
    assert before is not None and before > high  # the change below is what narrows it
    with _set_high(name, high):
        assert llm_bounds(tiny, tool)[name][1] == high
        with pytest.raises(ToolCallFault, match=f"^{name}: {value} is out of range"):
            validate_args(tool, {**args, name: value}, lambda p, a: p, llm_bounds(tiny, tool))
        with pytest.raises(InputError, match=f"^{name}: {value} is out of range") as caught:
            getattr(Toolset(preset="tiny", device="cpu", output_dir=tmp_path / "out"), tool)(**args, **{name: value})
        assert caught.value.param == name
        if name == "seed":
            with pytest.raises(InputError, match=f"^seed: {value} is out of range"):
                check_seed(value)
        elif name in OPTIONS:
            with pytest.raises(InputError, match=f"^{name}: {value} is out of range"):
                check_options(tiny, {name: value}, video_tool="image_to_video")
            with pytest.raises(InputError, match=f"^{name}: {value} is out of range"):
                parse_job({**FOX, name: value})


def test_the_preset_check_takes_the_frame_counts_the_tool_takes():
    """One frame rule (`frame_rule`) for the job's check and the tool: extend adds any count from 1 (as
    extend_video always took; the job's check used to refuse 1), a clip made whole has at least 2."""
    tiny = get_preset("tiny")
    assert check_options(tiny, {"num_frames": 1}, video_tool="extend_video")["num_frames"] == 1
    with pytest.raises(InputError, match="^num_frames: 1 is out of range; pass a number between 2 and 25"):
        check_options(tiny, {"num_frames": 1}, video_tool="image_to_video")


@pytest.mark.parametrize("preset", ["ltx", "modern", "tiny-ltx", "tiny-modern"])
def test_an_extension_call_is_never_past_the_models_length(preset, monkeypatch):
    """The default and the most new frames extend takes make one call within max_frames (its trained length)."""
    import numpy as np

    from mora.limits import default_added_frames
    from mora.tools import ltx, wan22

    spec = get_preset(preset).spec("extend")
    s = spec.settings
    made = []

    def fake(*args, num_frames, **kwargs):
        made.append(num_frames)
        return np.zeros((num_frames, 8, 8, 3), np.uint8)

    monkeypatch.setattr(ltx, "_call", fake)
    monkeypatch.setattr(wan22, "_clip", fake)
    module = {"ltx": ltx, "wan22": wan22}[spec.family]
    most = frame_rule(s, added=True)["high"]
    tail = np.zeros((20, 8, 8, 3), np.uint8)
    for new in (default_added_frames(s), most):
        out = module.continue_video(spec, None, frames=tail, prompt=None, width=s.size_multiple,
                                    height=s.size_multiple, num_frames=new, steps=1, fps=s.fps, seed=0)
        assert len(out) == new
    assert max(made) <= s.max_frames, (made, s.max_frames)
    assert default_added_frames(s) <= s.num_frames
    with pytest.raises(InputError, match=f"between 1 and {most}"):
        check_options(get_preset(preset), {"num_frames": most + 1}, video_tool="extend_video")


def test_a_story_plans_the_frames_extend_video_adds_by_default():
    """The story planner's frames per extension are extend_video's own default (`default_added_frames`)."""
    from mora.config import PRESETS
    from mora.limits import default_added_frames
    from mora.workflows.prepare import _frame_rules

    for name in PRESETS:
        preset = get_preset(name)
        assert _frame_rules(preset, {})[1] == default_added_frames(preset.spec("extend").settings), name

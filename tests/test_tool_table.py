"""The tool table (`mora.tooltable`) drives the routes, the Toolset, the agents, the scripted calls and the LLM checks."""

from __future__ import annotations

import inspect
import itertools

import pytest

from mora.agents import roles
from mora.agents.toolcalls import ToolCallFault, args_model, validate_args
from mora.config import get_preset, load_presets
from mora.limits import llm_bounds
from mora.tools.toolset import Toolset
from mora.tooltable import FRAME_TOOLS, PATH_ARGS, TOOL_NAMES, TOOL_TABLE, option_tools, video_tool
from mora.workflows.jobspec import tool_options
from mora.workflows.route_run import SCRIPTED_CALLS, RouteRun
from mora.workflows.tasks import TASK_TABLE, route_for

JOB_OPTIONS = tool_options()  # what RouteRun.options may pin: the job model's tool options


def _every_route():
    for name, task in TASK_TABLE.items():
        if task.film is not None:  # a film's route: every kind of shot and boundary, both continuities
            for keyframe in (True, False):
                yield name, task.film.route([0, 1, 2], [True, False], keyframe)
            continue
        capabilities = [frozenset(), *(frozenset({c}) for c, _ in task.variants)]
        best_ofs = (1, 2) if task.critic else (1,)
        for k in range(len(task.optional) + 1):
            for optional in itertools.combinations(task.optional, k):
                inputs = {i: "x" for i in (*task.required, *optional)}
                for caps, best_of in itertools.product(capabilities, best_ofs):
                    yield name, route_for(name, inputs, best_of, caps)


def test_every_tool_of_every_route_is_in_the_table_with_its_agent():
    seen = set()
    for task, route in _every_route():
        for step in route:
            if step.tool:
                assert step.tool in TOOL_TABLE, (task, step)
                assert TOOL_TABLE[step.tool].agent == step.agent, (task, step)
                seen.add(step.tool)
    assert seen == set(TOOL_TABLE)  # no tool of the table is unreachable


def test_the_video_tool_of_each_route_makes_video():
    for task, route in _every_route():
        tool = video_tool(s.tool for s in route)
        assert TOOL_TABLE[tool].role in ("image_to_video", "extend", "connect", "edit_video"), (task, tool)


def test_every_table_tool_is_a_toolset_method_taking_its_paths_and_options():
    for name, tool in TOOL_TABLE.items():
        params = inspect.signature(getattr(Toolset, name)).parameters
        for path in tool.paths:
            assert path in params and params[path].default is inspect.Parameter.empty, (name, path)
        assert set(tool.options) <= set(params), name
        assert set(tool.options) <= set(JOB_OPTIONS), name
    # an option a tool method takes but the table leaves out would be ignored silently
    for option in JOB_OPTIONS:
        takes = {n for n in TOOL_NAMES if option in inspect.signature(getattr(Toolset, n)).parameters}
        assert takes == set(option_tools(option)), option


def test_agents_tools_and_roles_come_from_the_table():
    for agent in (*roles.AGENT_NAMES, roles.CRITIC_AGENT_NAME):
        assert set(roles.AGENT_TOOLS[agent]) == {n for n, t in TOOL_TABLE.items() if t.agent == agent}, agent
    assert roles.AGENT_TOOLS[roles.PROMPT_AGENT_NAME] == ()
    presets = load_presets()
    for tool in TOOL_TABLE.values():  # every role names a model some built-in preset has
        assert any(tool.role in p.roles for p in presets.values()), tool
    assert set(FRAME_TOOLS) == {"text_to_image", "edit_image"}
    assert set(PATH_ARGS) == {n for n, t in TOOL_TABLE.items() if t.paths}


def _job(task: str, **kwargs) -> RouteRun:
    job = RouteRun(task, {"prompt": "a fox", "instruction": "make it night"}, {o: 8 for o in JOB_OPTIONS}, 5,
              list(route_for(task, {"prompt": "a fox"})), None, **kwargs)
    job.images += ["a.png", "b.png"]
    job.videos += ["a.mp4", "b.mp4"]
    return job


def test_every_scripted_call_fills_its_paths_and_only_its_options():
    assert set(SCRIPTED_CALLS) == set(TOOL_TABLE)
    job = _job("text-to-video")
    for name, tool in TOOL_TABLE.items():
        args = job.scripted_call(name)
        params = inspect.signature(getattr(Toolset, name)).parameters
        assert set(args) <= set(params), name  # a call Toolset can take
        assert all(args[p] for p in tool.paths), name
        assert {k for k in args if k in JOB_OPTIONS} == set(tool.options), name  # pinned where the table says
        assert args["seed"] == 5


def test_the_llm_argument_model_is_the_schema_and_the_check():
    preset = get_preset("mora")
    for name in TOOL_NAMES:
        if TOOL_TABLE[name].role not in preset.roles:
            continue
        bounds = llm_bounds(preset, name)
        schema = args_model(name, bounds).model_json_schema()
        params = [p for p in inspect.signature(getattr(Toolset, name)).parameters if p != "self"]
        assert list(schema["properties"]) == params, name
        assert set(schema.get("required", [])) == {*TOOL_TABLE[name].paths} | ({"prompt"} if name == "text_to_image"
                                                                                else set()) | (
            {"instruction"} if name == "edit_image" else set()), name
        steps = next(s for s in schema["properties"]["steps"]["anyOf"] if s.get("type") == "integer")
        assert (steps["minimum"], steps["maximum"]) == bounds["steps"], name
    i2v = llm_bounds(preset, "image_to_video")
    with pytest.raises(ToolCallFault, match="segments"):
        validate_args("image_to_video", {"image_path": "f.png", "segments": i2v["segments"][1] + 1},
                      lambda p, a: p, i2v)


def test_check_options_takes_the_frame_rules_of_the_video_tool():
    from mora.errors import InputError
    from mora.limits import check_options

    ltx = get_preset("ltx")  # 8k+1 frames for a whole clip; extend counts added frames (any count)
    assert check_options(ltx, {"num_frames": 20}, video_tool="extend_video")["num_frames"] == 20
    for tool in ("connect_videos", "image_to_video"):
        with pytest.raises(InputError, match="^num_frames: 20 is not 8k\\+1"):
            check_options(ltx, {"num_frames": 20}, video_tool=tool)
    tiny = get_preset("tiny")  # tiny's connect model has 4k+1 frames, its image-to-video model any count
    assert check_options(tiny, {"num_frames": 6}, video_tool="image_to_video")["num_frames"] == 6
    with pytest.raises(InputError, match="4k\\+1"):
        check_options(tiny, {"num_frames": 6}, video_tool="connect_videos")

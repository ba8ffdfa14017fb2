"""The team's AutoGen wiring as AutoGen users know it: tools registered with `register_for_llm` /
`register_for_execution` (the LLM's schema carries the preset's bounds, the executor runs the
tool), and the `Route` protocol holding exactly what the team reads of a job.
"""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest
from conftest import gradient_frames

import mora
from mora import media
from mora.agents import roles
from mora.agents.team import LLM_ATTEMPTS, Team
from mora.agents.toolcalls import args_model
from mora.config import get_preset
from mora.limits import llm_bounds
from mora.tools.toolset import Toolset
from mora.tooltable import TOOL_TABLE
from mora.workflows.route_run import RouteRun
from mora.workflows.tasks import route_for

TEAM_SOURCE = Path(__file__).resolve().parents[1] / "agents" / "team.py"
# Never contacted: building a Team only configures the agents' clients.
CONFIG_LIST = [{"model": "fake-model", "api_key": "sk-never-sent", "base_url": "http://127.0.0.1:9/v1"}]


def make_team(tmp_path: Path, config_list: list[dict] | None = CONFIG_LIST) -> Team:
    inputs = {"prompt": "a fox"}
    job = RouteRun("text-to-video", inputs, {}, 0, list(route_for("text-to-video", inputs)), tmp_path)
    return Team(job, Toolset(preset="tiny", device="cpu", output_dir=tmp_path, progress=False), config_list=config_list)


def integer_schema(prop: dict) -> dict:
    """The integer branch of a property's schema (`anyOf: [integer, null]` for an optional one)."""
    return next(s for s in prop.get("anyOf", [prop]) if s.get("type") == "integer")


# --- registration ----------------------------------------------------------------------------------------


def test_tools_are_registered_with_autogens_decorators_not_a_raw_schema():
    source = TEAM_SOURCE.read_text()
    assert "update_tool_signature" not in source
    assert ".register_for_llm(" in source and ".register_for_execution(" in source


def test_each_agent_offers_its_tools_with_the_presets_bounds(tmp_path):
    team = make_team(tmp_path)
    preset = get_preset("tiny")
    offered, bounded = [], set()
    for name, agent in team.agents.items():
        schemas = {t["function"]["name"]: t["function"] for t in agent.llm_config.get("tools", [])}
        expected = [t for t in roles.AGENT_TOOLS.get(name, ()) if TOOL_TABLE[t].role in preset.roles]
        assert sorted(schemas) == sorted(expected), name
        # registered through register_for_llm: AutoGen keeps the Tool objects on the agent
        assert sorted(t.name for t in agent.tools) == sorted(expected), name
        for tool, function in schemas.items():
            offered.append(tool)
            model = args_model(tool, llm_bounds(preset, tool))
            params = function["parameters"]
            assert list(params["properties"]) == list(model.model_fields), tool
            assert params["required"] == [k for k, f in model.model_fields.items() if f.is_required()], tool
            for key, (low, high) in llm_bounds(preset, tool).items():
                if key in params["properties"]:
                    number = integer_schema(params["properties"][key])
                    assert (number["minimum"], number["maximum"]) == (low, high), (tool, key)
                    bounded.add(key)
            for key, raw in inspect.signature(getattr(Toolset, tool)).parameters.items():
                if str(raw.annotation).startswith("Annotated["):  # the Toolset's parameter description reaches the LLM
                    description = params["properties"][key]["description"]
                    assert description != key and description in raw.annotation, (tool, key)
            assert function["description"] and function["description"] in (Toolset.__dict__[tool].__doc__ or "")
    assert {"steps", "seed", "num_frames"} <= bounded
    # the executor can run every tool an agent offers
    assert set(offered) <= set(team.user_proxy.function_map)
    # AutoGen rewrites `Annotated[T, "text"]` it is given in place; the Toolset's own stay text
    hints = typing.get_type_hints(Toolset.text_to_image, include_extras=True)
    assert isinstance(hints["prompt"].__metadata__[0], str)


def test_without_an_llm_tools_are_only_registered_for_execution(tmp_path):
    team = make_team(tmp_path, config_list=None)
    assert all(not agent.tools for agent in team.agents.values())
    assert {"text_to_image", "image_to_video", "extend_video"} <= set(team.user_proxy.function_map)


# --- the bounds at execution: the LLM's call is checked, the user's options are not the LLM's -------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return str(media.write_video(gradient_frames(5, 96, 64), tmp_path_factory.mktemp("clip") / "a.mp4", fps=7))


def extend(out: Path, clip: str, **kwargs):
    return mora.run("extend", preset="tiny", device="cpu", progress=False, out=out, metrics=False, seed=0,
                    video=clip, **kwargs)


@pytest.mark.parametrize("over", [0, 1])
def test_an_llm_call_beyond_the_bound_is_refused(fake_openai, clip, tmp_path, over):
    high = llm_bounds(get_preset("tiny"), "extend_video")["steps"][1]
    fake_openai.default = None
    for _ in range(LLM_ATTEMPTS if over else 1):
        fake_openai.push_tool_call("extend_video", {"video_path": clip, "steps": high + over})
    m = extend(tmp_path / "x.mp4", clip, llm_config=fake_openai.config_list).manifest
    sent = fake_openai.tools_of(fake_openai.requests[0])["extend_video"]["properties"]["steps"]
    assert integer_schema(sent)["maximum"] == high  # what the LLM was told
    (ran,) = m["settings"]  # what the tool ran with
    if over:
        assert m["llm"]["steps"] == [{"agent": "image_to_video_agent", "answer": "fallback"}]
        assert len(m["llm"]["faults"]) == LLM_ATTEMPTS and all("steps" in f for f in m["llm"]["faults"])
        assert ran["steps"] == get_preset("tiny").spec(TOOL_TABLE["extend_video"].role).settings.steps  # scripted
    else:
        assert m["llm"]["steps"] == [{"agent": "image_to_video_agent", "answer": "llm"}]
        assert ran["steps"] == high
    assert fake_openai.pending == 0


def test_the_users_steps_beyond_the_llms_bound_still_run(fake_openai, clip, tmp_path):
    """The executor runs the scripted and pinned values too: it must not carry the LLM's bounds."""
    steps = llm_bounds(get_preset("tiny"), "extend_video")["steps"][1] + 1
    fake_openai.default = None
    fake_openai.push_tool_call("extend_video", {"video_path": clip})
    m = extend(tmp_path / "x.mp4", clip, llm_config=fake_openai.config_list, steps=steps).manifest
    assert m["llm"]["steps"] == [{"agent": "image_to_video_agent", "answer": "llm"}]
    assert m["settings"][0]["steps"] == steps


# --- the Route protocol ------------------------------------------------------------------------------------


def _route_members(tree: ast.Module) -> set[str]:
    route = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Route")
    return ({n.target.id for n in route.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
            | {n.name for n in route.body if isinstance(n, ast.FunctionDef)})


def _read_of_the_job(tree: ast.Module) -> set[str]:
    """Attributes read or set on `job` / `self.job` anywhere in team.py."""
    def is_job(node: ast.expr) -> bool:
        return ((isinstance(node, ast.Name) and node.id == "job")
                or (isinstance(node, ast.Attribute) and node.attr == "job"
                    and isinstance(node.value, ast.Name) and node.value.id == "self"))

    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and is_job(n.value)}


def test_the_route_protocol_is_exactly_what_the_team_uses(tmp_path):
    tree = ast.parse(TEAM_SOURCE.read_text())
    members = _route_members(tree)
    assert members == _read_of_the_job(tree)
    job = make_team(tmp_path, config_list=None).job  # the one implementation has each member
    assert [m for m in sorted(members) if not hasattr(job, m)] == []

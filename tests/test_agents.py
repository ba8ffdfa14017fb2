"""The agent team on the tiny preset, on the CPU: the route of every task read from the group chat
and the manifest, the manifest contract, scripted runs without an LLM, LLM runs against a scripted
OpenAI-compatible server (tests/fake_openai.py) including every kind of unusable answer, the
review gate, early input errors, `mora.chat` and LLM config loading.

Runs that several tests read are made once per module (`runs`); nothing reaches the network.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import gradient_frames
from fake_openai import API_KEY, DEFAULT_ANSWER
from PIL import Image

import mora
from mora import media
from mora.agents.enhance import DIGITAL_WORLD_CUE, SIMULATE_NEGATIVE
from mora.agents.llm import CLIENT_MAX_RETRIES, DEFAULT_TIMEOUT_S, load_llm_config
from mora.agents.team import LLM_ATTEMPTS, USER_PROXY, Team
from mora.errors import InputError, LLMError, ReviewAborted

P, T2I, I2I, I2V, VC = (
    "prompt_agent", "text_to_image_agent", "image_to_image_agent", "image_to_video_agent", "video_connection_agent",
)
FOX = "a red fox running through snow"
MANIFEST_KEYS = {"task", "preset", "seed", "inputs", "prompt", "enhanced_prompt", "route", "artifacts", "video",
                 "models", "settings", "timings", "llm", "metrics", "versions"}
OPENAI_ATTEMPTS = CLIENT_MAX_RETRIES + 1  # requests one mora attempt makes when the server answers 500


# --- helpers -------------------------------------------------------------------------------------------


def run(task: str, out: Path, **kwargs):
    """mora.run on the tiny preset, CPU, seed 0, no score card unless asked."""
    kwargs.setdefault("metrics", False)
    kwargs.setdefault("seed", 0)
    return mora.run(task, preset="tiny", device="cpu", progress=False, out=out, **kwargs)


def record_teams(monkeypatch) -> list:
    """Keep every Team that runs, so tests can read its group chat."""
    made: list = []
    original = Team.run

    def recording_run(self):
        made.append(self)
        return original(self)

    monkeypatch.setattr(Team, "run", recording_run)
    return made


def speakers(team) -> list[str]:
    """Names of the agents that spoke in the group chat, in order, without the executor."""
    return [m["name"] for m in team.groupchat.messages if m.get("name") != USER_PROXY]


def tool_calls(team) -> list[tuple[str, str, dict, str]]:
    """(agent, tool, arguments, executor's result) of each tool call in the group chat.

    The result is the content of the tool response that answers the call's id (None if no
    response followed), so an executed call shows the executor ran it."""
    messages = team.groupchat.messages
    calls = []
    for i, message in enumerate(messages):
        for call in message.get("tool_calls") or []:
            result = None
            for later in messages[i + 1:]:
                for response in later.get("tool_responses") or []:
                    if response.get("tool_call_id") == call["id"] and later.get("name") == USER_PROXY:
                        result = response["content"]
            calls.append((message["name"], call["function"]["name"], json.loads(call["function"]["arguments"]), result))
    return calls


def first_frame_pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(autouse=True)
def _private_cwd(tmp_path, monkeypatch):
    """A developer's ./OAI_CONFIG_LIST must not turn a no-LLM test into a call to a real endpoint."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OAI_CONFIG_LIST", raising=False)


# --- inputs, made once per module ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("inputs")
    image = d / "still.png"
    Image.fromarray(gradient_frames(1, 96, 64)[0]).save(image)
    a = media.write_video(gradient_frames(5, 96, 64), d / "clip_a.mp4", fps=7)
    b = media.write_video(gradient_frames(5, 96, 64, shift=-9)[:, ::-1], d / "clip_b.mp4", fps=7)
    return {"image": str(image), "video": str(a), "video_a": str(a), "video_b": str(b)}


# case -> (task, inputs (keys of the `inputs` fixture are replaced by their paths), [(agent, tool)])
CASES = {
    "text-to-video": ("text-to-video", {"prompt": FOX}, [(P, None), (T2I, "text_to_image"), (I2V, "image_to_video")]),
    "image-to-video": ("image-to-video", {"image": "image", "prompt": "the fox turns its head"},
                       [(P, None), (I2I, "edit_image"), (I2V, "image_to_video")]),
    "extend": ("extend", {"video": "video"}, [(I2V, "extend_video")]),
    "extend+prompt": ("extend", {"video": "video", "prompt": "the camera keeps panning right"},
                      [(P, None), (I2V, "extend_video")]),
    "edit": ("edit", {"video": "video", "instruction": "make it snowy"},
             [(P, None), (I2I, "edit_image"), (I2V, "image_to_video")]),
    "connect": ("connect", {"video_a": "video_a", "video_b": "video_b"}, [(VC, "connect_videos")]),
    "simulate": ("simulate", {"prompt": "a village by a river"},
                 [(P, None), (T2I, "text_to_image"), (I2V, "image_to_video")]),
    "simulate+image": ("simulate", {"prompt": "a village by a river", "image": "image"},
                       [(P, None), (I2I, "edit_image"), (I2V, "image_to_video")]),
}


class Runs:
    """Each case run once without an LLM (on first use), with the Team that ran it and the HTTP
    requests made meanwhile (there must be none)."""

    def __init__(self, root: Path, inputs: dict):
        self.root, self.inputs, self.done, self.http = root, inputs, {}, []

    def get(self, case: str):
        if case not in self.done:
            task, given, _ = CASES[case]
            kwargs = {k: self.inputs.get(v, v) if k != "prompt" and k != "instruction" else v for k, v in given.items()}
            out = self.root / f"{case.replace('+', '_')}.mp4"
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(self.root)  # no ./OAI_CONFIG_LIST here: no LLM
                mp.delenv("OAI_CONFIG_LIST", raising=False)
                teams = record_teams(mp)
                sent = self.http

                def no_network(client, request, *args, **kw):
                    sent.append(str(request.url))
                    raise AssertionError(f"HTTP request without an LLM: {request.url}")

                mp.setattr(httpx.Client, "send", no_network)
                # one run computes the score card, so the manifest's metrics are checked once
                result = run(task, out, metrics=case == "text-to-video", **kwargs)
            assert len(teams) == 1
            self.done[case] = (result, teams[0])
        return self.done[case]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, inputs) -> Runs:
    return Runs(tmp_path_factory.mktemp("runs"), inputs)


# --- routes, from the group chat and the manifest ------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_route_of_each_task(runs, case):
    result, team = runs.get(case)
    expected = CASES[case][2]
    agents = [agent for agent, _ in expected]
    assert speakers(team) == agents
    assert result.manifest["route"] == agents
    # each tool agent called its tool, once, and the user proxy executed it
    calls = tool_calls(team)
    assert [(agent, tool) for agent, tool, _, _ in calls] == [(a, t) for a, t in expected if t]
    for (agent, tool, args, executed), recorded in zip(calls, result.manifest["tool_calls"], strict=True):
        assert executed == recorded["output"], f"{agent}'s {tool} call was not executed by the user proxy"
        assert recorded["tool"] == tool
        assert Path(executed).is_file()
    # the prompt agent answered in text, without a tool call
    for message in team.groupchat.messages:
        if message.get("name") == P:
            assert not message.get("tool_calls") and message["content"] == result.manifest["enhanced_prompt"]


@pytest.mark.parametrize("case", list(CASES))
def test_manifest_video_and_artifacts(runs, case):
    result, _ = runs.get(case)
    m = result.manifest
    assert MANIFEST_KEYS <= set(m)
    assert {"path", "num_frames", "fps", "width", "height"} <= set(m["video"])
    assert {"configured", "used", "model", "steps", "fallbacks"} <= set(m["llm"])
    assert "total_s" in m["timings"] and m["timings"]["total_s"] > 0
    assert {"mora", "torch", "diffusers", "transformers", "autogen"} <= set(m["versions"])
    assert m["task"] == CASES[case][0] and m["preset"] == "tiny" and m["seed"] == 0
    assert m["llm"] == {"configured": False, "used": False, "model": None, "steps": [], "fallbacks": 0, "faults": []}
    # the manifest beside the video is the one returned
    assert result.manifest_path == result.video_path.with_suffix(".json")
    assert json.loads(result.manifest_path.read_text()) == json.loads(json.dumps(m))
    # the video is what the manifest says
    video = media.read_video(result.video_path)
    assert Path(m["video"]["path"]) == result.video_path
    assert video.num_frames == m["video"]["num_frames"]
    assert (video.width, video.height) == (m["video"]["width"], m["video"]["height"])
    assert video.fps == pytest.approx(m["video"]["fps"], rel=0.01)
    # artifacts live in <stem>_artifacts/
    artifacts_dir = result.video_path.with_name(result.video_path.stem + "_artifacts")
    assert result.artifacts_dir == artifacts_dir
    assert m["artifacts"] and all(Path(a).parent == artifacts_dir and Path(a).is_file() for a in m["artifacts"])
    assert m["artifacts"][-1].endswith(".mp4")


def test_without_llm_no_http_request(runs):
    for case in ("text-to-video", "connect"):
        result, _ = runs.get(case)
        assert result.manifest["llm"]["used"] is False
    assert runs.http == []


def test_manifest_metrics_when_computed(runs):
    result, _ = runs.get("text-to-video")
    card = result.manifest["metrics"]
    assert isinstance(card, dict) and card["num_frames"] == result.manifest["video"]["num_frames"]
    assert runs.get("connect")[0].manifest["metrics"] is None  # metrics=False


def test_frame_counts_of_extend_and_connect(runs):
    base = media.read_video(runs.inputs["video"]).num_frames
    extended = runs.get("extend")[0].manifest["video"]
    assert extended["num_frames"] > base and extended["boundaries"] == [base]
    connected = runs.get("connect")[0].manifest["video"]
    assert connected["num_frames"] > 2 * base and connected["boundaries"][0] == base


def test_enhanced_prompt_without_llm_keeps_the_users_words(runs):
    for case in ("text-to-video", "image-to-video", "extend+prompt", "simulate"):
        result, _ = runs.get(case)
        assert result.manifest["enhanced_prompt"].startswith(result.manifest["prompt"])
    assert runs.get("extend")[0].manifest["enhanced_prompt"] is None  # no prompt, no prompt agent


def test_simulate_adds_the_digital_world_cue(runs):
    m = runs.get("simulate")[0].manifest
    assert "voxel" in m["enhanced_prompt"] and DIGITAL_WORLD_CUE in m["enhanced_prompt"]
    t2i = m["tool_calls"][0]
    assert t2i["tool"] == "text_to_image" and t2i["args"]["negative_prompt"] == SIMULATE_NEGATIVE
    with_image = runs.get("simulate+image")[0].manifest
    assert "voxel" in with_image["enhanced_prompt"]
    edit = with_image["tool_calls"][0]
    assert edit["tool"] == "edit_image" and "voxel" in edit["args"]["instruction"]
    assert Path(edit["args"]["image_path"]) == Path(runs.inputs["image"])


def test_edit_edits_the_first_frame_of_the_video(runs):
    result, _ = runs.get("edit")
    first = result.artifacts_dir / "first_frame.png"
    assert first.is_file()
    edit = result.manifest["tool_calls"][0]
    assert edit["args"] == {"image_path": str(first), "instruction": "make it snowy"}


def test_same_seed_same_first_frame(runs, tmp_path):
    # Aborting at the review gate stops right after the first frame: a cheap way to remake it.
    with pytest.raises(ReviewAborted):
        run("text-to-video", tmp_path / "again.mp4", prompt=FOX, review=lambda image, info: "abort")
    again = tmp_path / "again_artifacts" / "text_to_image-001.png"
    first = runs.get("text-to-video")[0].manifest["artifacts"][0]
    assert Path(first).name == again.name
    assert np.array_equal(first_frame_pixels(first), first_frame_pixels(str(again)))
    assert Path(first).read_bytes() == again.read_bytes()


# --- with a scripted LLM (the fake OpenAI-compatible server) -----------------------------------------------


def test_llm_answers_are_used(fake_openai, tmp_path, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    teams = record_teams(monkeypatch)
    out = tmp_path / "x.mp4"
    frame = tmp_path / "x_artifacts" / "text_to_image-001.png"  # the tool chooses it; known in advance
    fake_openai.push_text("LLM: a red fox leaping over snowdrifts at dawn, low tracking shot")
    fake_openai.push_tool_call("text_to_image", {"prompt": "an LLM-chosen first frame of a fox", "seed": 77})
    fake_openai.push_tool_call("image_to_video", {"image_path": str(frame), "prompt": "the fox runs left"})
    result = run("text-to-video", out, prompt=FOX, llm_config=fake_openai.config_list)
    m = result.manifest

    assert m["enhanced_prompt"] == "LLM: a red fox leaping over snowdrifts at dawn, low tracking shot"
    assert m["llm"] == {"configured": True, "used": True, "model": "fake-model", "fallbacks": 0, "faults": [],
                        "steps": [{"agent": a, "answer": "llm"} for a in (P, T2I, I2V)]}
    assert m["route"] == speakers(teams[0]) == [P, T2I, I2V]
    t2i, i2v = m["tool_calls"]
    assert t2i["args"]["prompt"] == "an LLM-chosen first frame of a fox"
    assert t2i["seed"] == 0  # the job's seed wins over the LLM's
    assert i2v["args"] == {"image_path": str(frame), "prompt": "the fox runs left"}
    assert [c[:2] for c in tool_calls(teams[0])] == [(T2I, "text_to_image"), (I2V, "image_to_video")]

    # one request per step; each agent spoke with its own system message and saw only its typed tools
    assert len(fake_openai.requests) == 3 and fake_openai.pending == 0
    prompt_request, t2i_request, i2v_request = fake_openai.requests
    assert "tools" not in prompt_request
    assert prompt_request["messages"][0]["content"].startswith("You are prompt_agent")
    assert t2i_request["messages"][0]["content"].startswith("You are text_to_image_agent")
    tools = fake_openai.tools_of(t2i_request)
    assert list(tools) == ["text_to_image"]
    assert tools["text_to_image"]["properties"]["prompt"]["type"] == "string"
    assert "prompt" in tools["text_to_image"]["required"]
    seed_types = {t.get("type") for t in tools["text_to_image"]["properties"]["seed"]["anyOf"]}
    assert "integer" in seed_types
    tools = fake_openai.tools_of(i2v_request)
    assert set(tools) == {"image_to_video", "extend_video"}
    assert tools["image_to_video"]["properties"]["image_path"]["type"] == "string"
    assert tools["image_to_video"]["required"] == ["image_path"]
    assert "integer" in {t.get("type") for t in tools["image_to_video"]["properties"]["num_frames"]["anyOf"]}
    # the artifact path the LLM must use is in what it was sent
    assert str(frame) in json.dumps(i2v_request["messages"])
    # the key went to the server, and nowhere else
    assert fake_openai.headers[0]["Authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in result.manifest_path.read_text()
    assert API_KEY not in json.dumps(m)
    assert API_KEY not in caplog.text
    captured = capfd.readouterr()
    assert API_KEY not in captured.out + captured.err
    assert caplog.records  # DEBUG logging was on and captured something
    # stdout stays clean (`mora ... --json` prints the manifest there): no AutoGen cost warnings
    assert "is not found. The cost will be 0" not in captured.out


def test_api_key_echoed_by_the_endpoint_is_scrubbed(fake_openai, inputs, tmp_path, caplog):
    """Some OpenAI-compatible servers answer a 401 with the key they got; it must not reach the
    manifest's fault list or the logs."""
    caplog.set_level(logging.DEBUG)
    fake_openai.default = None
    fake_openai.push_error(401, f"Incorrect API key provided: {API_KEY}", times=LLM_ATTEMPTS)  # 401: no retry
    result = run("extend", tmp_path / "x.mp4", video=inputs["video"], llm_config=fake_openai.config_list)
    faults = result.manifest["llm"]["faults"]
    assert len(faults) == LLM_ATTEMPTS and all("AuthenticationError" in f and "***" in f for f in faults)
    assert API_KEY not in result.manifest_path.read_text()
    assert API_KEY not in caplog.text
    assert fake_openai.pending == 0


def test_llm_untrusted_arguments_fall_back(fake_openai, tmp_path, monkeypatch):
    """A width the model cannot use (100, not a multiple of 8) and input paths outside the job
    (`/etc/passwd`, `../../secret.png`) are rejected: the scripted call runs, and is counted."""
    (tmp_path / "secret.png").write_bytes(Path(media.write_image(Image.new("RGB", (8, 8)), tmp_path / "s.png"))
                                          .read_bytes())
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)  # ../../secret.png exists, so only the guard can refuse it
    read: list[str] = []
    real_read_image = media.read_image

    def spy(path, **kw):
        read.append(str(path))
        return real_read_image(path, **kw)

    monkeypatch.setattr(media, "read_image", spy)
    teams = record_teams(monkeypatch)
    fake_openai.default = None  # no more answers than scripted
    fake_openai.push_text("a fox in snow")
    fake_openai.push_tool_call("text_to_image", {"negative_prompt": "blurry"})  # no prompt: cannot run
    fake_openai.push_tool_call("text_to_image", {"prompt": "a fox in snow", "width": 100})
    for bad in ("/etc/passwd", "../../secret.png", str(tmp_path / "secret.png")):
        fake_openai.push_tool_call("image_to_video", {"image_path": bad, "prompt": "run"})
    result = run("text-to-video", tmp_path / "x.mp4", prompt=FOX, llm_config=fake_openai.config_list)
    m = result.manifest

    assert m["llm"]["fallbacks"] == 2
    # text_to_image's second answer passed Mora's checks but not the model's: one record, a fallback
    assert m["llm"]["steps"] == [{"agent": P, "answer": "llm"}, {"agent": T2I, "answer": "fallback"},
                                 {"agent": I2V, "answer": "fallback"}]
    assert m["llm"]["used"] is True
    faults = m["llm"]["faults"]
    assert "prompt: missing; add it" in faults[0]  # mora.validation's one line (was "missing required argument")
    assert any("width" in f and "100" in f for f in faults)
    assert sum("not an input or artifact of this job" in f for f in faults) == LLM_ATTEMPTS
    assert not any("passwd" in p or "secret" in p for p in read)
    t2i, i2v = m["tool_calls"]
    assert next(s for s in m["settings"] if s["tool"] == "text_to_image")["width"] == 96  # the scripted call, at the preset's size
    assert i2v["args"]["image_path"] == t2i["output"]
    assert m["route"] == speakers(teams[0]) == [P, T2I, I2V]
    assert media.read_video(result.video_path).num_frames == m["video"]["num_frames"]
    assert len(fake_openai.requests) == 3 + LLM_ATTEMPTS and fake_openai.pending == 0


def test_llm_call_is_completed_by_the_scripted_one(fake_openai, tmp_path):
    """What the LLM leaves out comes from the scripted call: simulate keeps its negative prompt;
    "" for an optional text means "none"."""
    fake_openai.default = None
    fake_openai.push_text("a voxel village by a river, blocky cubes")
    fake_openai.push_tool_call("text_to_image", {"prompt": "a voxel village", "negative_prompt": ""})
    frame = tmp_path / "x_artifacts" / "text_to_image-001.png"
    fake_openai.push_tool_call("image_to_video", {"image_path": str(frame), "prompt": ""})
    result = run("simulate", tmp_path / "x.mp4", prompt="a village by a river", llm_config=fake_openai.config_list)
    m = result.manifest
    assert m["llm"]["fallbacks"] == 0 and m["llm"]["faults"] == []
    t2i, i2v = m["tool_calls"]
    assert t2i["args"] == {"prompt": "a voxel village", "negative_prompt": SIMULATE_NEGATIVE}
    assert i2v["args"] == {"image_path": str(frame), "prompt": "a voxel village by a river, blocky cubes"}


def test_a_tool_call_autogen_could_not_execute_stops_the_run(inputs, tmp_path, monkeypatch):
    """AutoGen answers a call it cannot make with an error text; the route stops there, clearly."""
    original = Team.__init__

    def without_extend(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.user_proxy._function_map.pop("extend_video")

    monkeypatch.setattr(Team, "__init__", without_extend)
    out = tmp_path / "x.mp4"
    with pytest.raises(RuntimeError, match="extend_video call was not executed: .*not found"):
        run("extend", out, video=inputs["video"])
    assert not out.exists() and not out.with_suffix(".json").exists()


# Cheap runs (extend: one tool step) for each kind of unusable answer; each answer is repeated
# for every attempt, so the step falls back to its scripted call.
FAULTS = {
    "http-500": (lambda fake, video: fake.push_error(500, times=OPENAI_ATTEMPTS * LLM_ATTEMPTS),
                 "InternalServerError", OPENAI_ATTEMPTS * LLM_ATTEMPTS),
    "malformed-json": (lambda fake, video: [fake.push_tool_call("extend_video", '{"video_path": "' + video)
                                            for _ in range(LLM_ATTEMPTS)], "not valid JSON", LLM_ATTEMPTS),
    "unknown-tool": (lambda fake, video: [fake.push_tool_call("delete_all_files", {"video_path": video})
                                          for _ in range(LLM_ATTEMPTS)], "unknown or wrong tool", LLM_ATTEMPTS),
    "negative-frames": (lambda fake, video: [fake.push_tool_call("extend_video", {"video_path": video,
                                                                                  "num_frames": -5})
                                             for _ in range(LLM_ATTEMPTS)], "num_frames", LLM_ATTEMPTS),
    "path-outside-job": (lambda fake, video: [fake.push_tool_call("extend_video", {"video_path": "/etc/passwd"})
                                              for _ in range(LLM_ATTEMPTS)], "not an input or artifact", LLM_ATTEMPTS),
    "no-tool-call": (lambda fake, video: [fake.push_text("Sure! I will extend the video.")
                                          for _ in range(LLM_ATTEMPTS)], "no tool call", LLM_ATTEMPTS),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_llm_fault_falls_back_to_scripted(fake_openai, inputs, tmp_path, fault, caplog):
    push, reason, requests = FAULTS[fault]
    fake_openai.default = None
    push(fake_openai, inputs["video"])
    with caplog.at_level(logging.WARNING, logger="mora"):
        result = run("extend", tmp_path / "x.mp4", video=inputs["video"], llm_config=fake_openai.config_list)
    m = result.manifest
    # its only LLM step fell back: the LLM was configured, not used
    assert m["llm"]["configured"] is True and m["llm"]["used"] is False and m["llm"]["fallbacks"] == 1
    assert m["llm"]["steps"] == [{"agent": I2V, "answer": "fallback"}]
    assert len(m["llm"]["faults"]) == LLM_ATTEMPTS and reason in m["llm"]["faults"][-1]
    assert len(fake_openai.requests) == requests and fake_openai.pending == 0
    assert "using the scripted answer" in caplog.text
    (call,) = m["tool_calls"]
    assert call["tool"] == "extend_video" and call["args"]["video_path"] == inputs["video"]
    assert m["route"] == [I2V]
    assert media.read_video(result.video_path).num_frames == m["video"]["num_frames"]


def test_llm_retry_then_valid_call(fake_openai, inputs, tmp_path):
    fake_openai.default = None
    fake_openai.push_tool_call("extend_video", "{not json")
    fake_openai.push_tool_call("extend_video", {"video_path": inputs["video"], "prompt": "it keeps going"})
    result = run("extend", tmp_path / "x.mp4", video=inputs["video"], llm_config=fake_openai.config_list)
    m = result.manifest
    assert m["llm"]["fallbacks"] == 0 and len(m["llm"]["faults"]) == 1
    assert m["tool_calls"][0]["args"]["prompt"] == "it keeps going"
    # the retry told the model what was wrong
    assert "unusable" in json.dumps(fake_openai.requests[1]["messages"][-1])


def test_prompt_agent_llm_failure_uses_the_enhancer(fake_openai, inputs, tmp_path):
    fake_openai.default = None
    fake_openai.push_error(500, times=OPENAI_ATTEMPTS * LLM_ATTEMPTS)  # the prompt agent's three tries
    fake_openai.push_tool_call("extend_video", {"video_path": inputs["video"]})
    result = run("extend", tmp_path / "x.mp4", video=inputs["video"], prompt="more snow falls",
                 llm_config=fake_openai.config_list)
    m = result.manifest
    assert m["llm"]["fallbacks"] == 1
    assert m["enhanced_prompt"].startswith("more snow falls")


# --- the review gate ------------------------------------------------------------------------------------


def reviewer(*decisions):
    seen: list[str] = []

    def review(image, info):
        seen.append(image)
        return decisions[len(seen) - 1]

    review.seen = seen
    return review


def test_review_approve(tmp_path, monkeypatch):
    teams = record_teams(monkeypatch)
    review = reviewer("approve")
    result = run("text-to-video", tmp_path / "x.mp4", prompt=FOX, review=review)
    m = result.manifest
    assert m["route"] == speakers(teams[0]) == [P, T2I, I2V]
    assert [r["decision"] for r in m["review"]] == ["approve"]
    assert review.seen == [m["artifacts"][0]]


def test_review_regenerate(tmp_path, monkeypatch):
    teams = record_teams(monkeypatch)
    result = run("text-to-video", tmp_path / "x.mp4", prompt=FOX, review=reviewer("regenerate", "approve"))
    m = result.manifest
    assert m["route"] == speakers(teams[0]) == [P, T2I, T2I, I2V]
    assert [r["decision"] for r in m["review"]] == ["regenerate", "approve"]
    first, second, video = m["tool_calls"]
    assert (first["tool"], second["tool"]) == ("text_to_image", "text_to_image")
    assert (first["seed"], second["seed"]) == (0, 1)
    assert not np.array_equal(first_frame_pixels(first["output"]), first_frame_pixels(second["output"]))
    assert video["args"]["image_path"] == second["output"]  # the regenerated frame is animated


def test_review_edit(tmp_path, monkeypatch):
    teams = record_teams(monkeypatch)
    result = run("text-to-video", tmp_path / "x.mp4", prompt=FOX, review=reviewer(("edit", "make it snowy"), "approve"))
    m = result.manifest
    assert m["route"] == speakers(teams[0]) == [P, T2I, I2I, I2V]
    assert m["review"][0] == {"image": m["artifacts"][0], "decision": "edit", "instruction": "make it snowy"}
    frame, edit, video = m["tool_calls"]
    assert edit["tool"] == "edit_image"
    assert edit["args"] == {"image_path": frame["output"], "instruction": "make it snowy"}
    assert video["args"]["image_path"] == edit["output"]
    assert [c[:2] for c in tool_calls(teams[0])] == [(T2I, "text_to_image"), (I2I, "edit_image"),
                                                     (I2V, "image_to_video")]


def test_review_abort(tmp_path):
    out = tmp_path / "x.mp4"
    with pytest.raises(ReviewAborted):
        run("text-to-video", out, prompt=FOX, review=reviewer("abort"))
    assert not out.exists() and not out.with_suffix(".json").exists()
    leftovers = sorted(p.name for p in (tmp_path / "x_artifacts").iterdir())
    assert leftovers == ["text_to_image-001.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_artifacts"]  # no temp files either


def test_review_bad_decision_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="review"):
        run("text-to-video", tmp_path / "x.mp4", prompt=FOX, review=reviewer("maybe"))
    assert not (tmp_path / "x.mp4").exists()


# --- input errors: raised before any model work, nothing written ----------------------------------------


@pytest.mark.parametrize(
    ("task", "kwargs", "match"),
    [
        ("text-to-music", {"prompt": FOX}, "task: 'text-to-music'"),
        ("text-to-video", {}, "prompt: missing"),
        ("text-to-video", {"prompt": "   "}, "prompt"),
        ("text-to-video", {"prompt": FOX, "video": "video"}, "video: .* not an input or option of text-to-video"),
        ("image-to-video", {"image": "missing.png", "prompt": FOX}, "image"),
        ("connect", {"video_a": "video_a"}, "video_b: missing"),
        ("text-to-video", {"prompt": FOX, "out": "x.avi"}, "^out: 'x.avi' does not end in .mp4"),
        ("text-to-video", {"prompt": FOX, "width": 100}, "^width: 100"),
        ("text-to-video", {"prompt": FOX, "num_frames": 0}, "^num_frames: 0 is out of range"),  # Python names the keyword; the CLI --num-frames
        ("text-to-video", {"prompt": FOX, "seed": -1}, "^seed: -1 is out of range"),
        ("text-to-video", {"prompt": FOX, "preset": "enormous"}, "enormous"),
        ("text-to-video", {"prompt": FOX, "llm_config": "no-such-config.json"}, "--llm-config"),
    ],
    ids=["unknown-task", "missing-prompt", "empty-prompt", "extra-input", "missing-file", "missing-video-b",
         "out-not-mp4", "width-multiple", "num-frames", "seed", "unknown-preset", "llm-config-missing"],
)
def test_input_errors_before_any_model_work(inputs, tmp_path, monkeypatch, task, kwargs, match):
    import mora.tools.toolset

    def no_models(*args, **kw):
        raise AssertionError("model work started before the inputs were checked")

    monkeypatch.setattr(mora.tools.toolset, "Toolset", no_models)
    monkeypatch.chdir(tmp_path)
    kwargs = {k: inputs.get(v, v) if isinstance(v, str) and k in inputs else v for k, v in kwargs.items()}
    if "image" in kwargs:
        kwargs["image"] = str(tmp_path / kwargs["image"])
    out = kwargs.pop("out", tmp_path / "out" / "x.mp4")
    preset = kwargs.pop("preset", "tiny")
    with pytest.raises(InputError, match=match):
        mora.run(task, preset=preset, device="cpu", progress=False, out=out, **kwargs)
    assert list(tmp_path.iterdir()) == []


# --- mora.chat ------------------------------------------------------------------------------------------


def test_chat_needs_an_llm(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="--llm-config"):
        mora.chat("a fox in the snow, please")


def test_chat_starts_a_task(fake_openai, tmp_path, monkeypatch):
    teams = record_teams(monkeypatch)
    out = tmp_path / "chat.mp4"
    fake_openai.push_tool_call("start_task", {"task": "text-to-video", "prompt": "a fox in the snow"})
    fake_openai.push_text("a fox in deep snow, wide shot, soft light")
    fake_openai.push_tool_call("text_to_image", {"prompt": "a fox in deep snow"})
    fake_openai.push_tool_call("image_to_video", {"image_path": str(tmp_path / "chat_artifacts" / "text_to_image-001.png")})
    chat = mora.chat("Make me a video of a fox in the snow", llm_config=fake_openai.config_list, preset="tiny",
                     device="cpu", progress=False, out=out, seed=0, metrics=False)
    assert chat.task == "text-to-video" and chat.inputs == {"prompt": "a fox in the snow"}
    m = chat.result.manifest
    assert m["route"] == speakers(teams[0]) == [P, T2I, I2V]
    assert m["prompt"] == "a fox in the snow" and m["llm"]["fallbacks"] == 0
    assert chat.result.video_path == out and out.is_file()
    # the director saw the typed start_task schema
    start = fake_openai.tools_of(fake_openai.requests[0])["start_task"]
    assert start["properties"]["task"]["type"] == "string" and start["required"] == ["task"]
    assert len(fake_openai.requests) == 4


def test_chat_rejects_paths_the_user_never_typed(fake_openai, monkeypatch):
    teams = record_teams(monkeypatch)
    fake_openai.default = None
    for _ in range(3):
        fake_openai.push_tool_call("start_task", {"task": "extend", "video": "/etc/passwd"})
    with pytest.raises(LLMError, match="start_task"):
        mora.chat("extend my holiday video", llm_config=fake_openai.config_list, preset="tiny", device="cpu")
    assert teams == [] and len(fake_openai.requests) == 3
    # each retry told the director why
    assert "was not given by the user" in json.dumps(fake_openai.requests[-1]["messages"])


def test_chat_rejects_a_piece_of_a_typed_path(fake_openai, inputs, monkeypatch):
    """The user typed the full path; `clip_a.mp4` (which exists in the cwd) is not what they typed."""
    monkeypatch.chdir(Path(inputs["video"]).parent)
    fake_openai.default = None
    for _ in range(3):
        fake_openai.push_tool_call("start_task", {"task": "extend", "video": Path(inputs["video"]).name})
    with pytest.raises(LLMError, match="was not given by the user"):
        mora.chat(f"please extend {inputs['video']}", llm_config=fake_openai.config_list, preset="tiny", device="cpu")


def test_chat_endpoint_error_never_shows_the_key(fake_openai, caplog):
    caplog.set_level(logging.DEBUG)
    fake_openai.default = None
    fake_openai.push_error(401, f"Incorrect API key provided: {API_KEY}", times=LLM_ATTEMPTS)
    with pytest.raises(LLMError, match="AuthenticationError") as error:
        mora.chat("make a video of a fox", llm_config=fake_openai.config_list)
    assert API_KEY not in str(error.value) and "***" in str(error.value)
    assert API_KEY not in caplog.text


def test_chat_retry_then_valid_start_task(fake_openai, inputs, tmp_path):
    fake_openai.push_tool_call("start_task", {"task": "extend", "video": "/etc/passwd"})
    fake_openai.push_tool_call("start_task", {"task": "extend", "video": inputs["video"]})
    fake_openai.push_tool_call("extend_video", {"video_path": inputs["video"]})
    chat = mora.chat(f"please extend {inputs['video']}", llm_config=fake_openai.config_list, preset="tiny",
                     device="cpu", progress=False, out=tmp_path / "x.mp4", seed=0, metrics=False)
    assert chat.task == "extend" and chat.result.manifest["route"] == [I2V]
    assert chat.result.manifest["llm"]["fallbacks"] == 0


def test_chat_question_returns_the_reply(fake_openai):
    fake_openai.push_text("Which animal should the video show?")
    chat = mora.chat("make a video", llm_config=fake_openai.config_list, ask=None)
    assert chat.reply == "Which animal should the video show?"
    assert chat.task is None and chat.result is None


def test_chat_asks_then_answer_reaches_the_director(fake_openai):
    fake_openai.push_text("Which animal?")
    fake_openai.push_text("And which season?")
    answers = iter(["a fox", None])
    chat = mora.chat("make a video", llm_config=fake_openai.config_list, ask=lambda q: next(answers))
    assert chat.reply == "And which season?" and chat.task is None
    assert fake_openai.requests[1]["messages"][-1] == {"role": "user", "content": "a fox"}


def test_chat_endpoint_down_is_an_llm_error(fake_openai):
    fake_openai.default = None
    fake_openai.push_error(500, times=OPENAI_ATTEMPTS * LLM_ATTEMPTS)
    with pytest.raises(LLMError, match="endpoint"):
        mora.chat("make a video of a fox", llm_config=fake_openai.config_list)
    assert len(fake_openai.requests) == OPENAI_ATTEMPTS * LLM_ATTEMPTS  # the one retry layer: LLM_ATTEMPTS tries


def test_fake_server_default_answer(fake_openai):
    """The documented default for an empty queue: a plain text answer (a 500 with `default = None`)."""
    chat = mora.chat("make a video", llm_config=fake_openai.config_list)
    assert chat.reply == DEFAULT_ANSWER
    fake_openai.default = None
    with pytest.raises(LLMError, match="fake queue is empty"):
        mora.chat("make a video", llm_config=fake_openai.config_list)


def test_fake_server_without_v1_prefix(fake_openai):
    fake_openai.push_text("Which season?")
    config = [{**fake_openai.config_list[0], "base_url": fake_openai.base_url.removesuffix("/v1")}]
    assert mora.chat("make a video", llm_config=config).reply == "Which season?"


# --- LLM config loading ------------------------------------------------------------------------------


ENTRY = {"model": "llama3.1", "base_url": "http://localhost:11434/v1", "api_key": "ollama"}


def test_llm_config_from_list_and_path(tmp_path):
    (entry,) = load_llm_config([ENTRY])
    assert entry == {**ENTRY, "timeout": DEFAULT_TIMEOUT_S, "max_retries": CLIENT_MAX_RETRIES}
    assert load_llm_config([{**ENTRY, "timeout": 5, "max_retries": 0}])[0] | {} == {**ENTRY, "timeout": 5,
                                                                                   "max_retries": 0}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps([ENTRY, {"model": "gpt-4o-mini"}]))
    entries = load_llm_config(str(path))
    assert [e["model"] for e in entries] == ["llama3.1", "gpt-4o-mini"]
    assert all(e["timeout"] == DEFAULT_TIMEOUT_S and e["max_retries"] == CLIENT_MAX_RETRIES for e in entries)
    assert load_llm_config(path)[0]["model"] == "llama3.1"  # a Path works too


def test_llm_config_from_env_and_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OAI_CONFIG_LIST", raising=False)
    assert load_llm_config(None) is None
    (tmp_path / "OAI_CONFIG_LIST").write_text(json.dumps([{"model": "from-cwd"}]))
    assert load_llm_config(None)[0]["model"] == "from-cwd"
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps([{"model": "from-env-file"}]))
    monkeypatch.setenv("OAI_CONFIG_LIST", str(env_file))
    assert load_llm_config(None)[0]["model"] == "from-env-file"  # the variable wins over ./OAI_CONFIG_LIST
    monkeypatch.setenv("OAI_CONFIG_LIST", json.dumps([{"model": "from-env-json"}]))
    assert load_llm_config(None)[0]["model"] == "from-env-json"
    assert load_llm_config([ENTRY])[0]["model"] == "llama3.1"  # the argument wins over both
    monkeypatch.setenv("OAI_CONFIG_LIST", "nowhere/OAI_CONFIG_LIST")
    with pytest.raises(InputError, match="OAI_CONFIG_LIST"):
        load_llm_config(None)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[{\"model\": ", "not valid JSON"),
        ("[]", "non-empty"),
        ("[{\"api_key\": \"x\"}]", "entry 0 .*: model: missing; each entry needs \\{\"model\": NAME\\}"),
        ("[{\"model\": \"\"}]", "model: '' is blank"),
        ("[\"gpt-4o\"]", "entry 0 .* is a str, not an object"),
    ],
    ids=["malformed", "empty", "no-model", "empty-model", "not-an-object"],
)
def test_llm_config_errors(tmp_path, text, match):
    path = tmp_path / "OAI_CONFIG_LIST"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as error:
        load_llm_config(path)
    assert "--llm-config" in str(error.value)


def test_llm_config_missing_file_names_the_option(tmp_path):
    with pytest.raises(InputError, match="--llm-config: .*nope.json.* is not a file"):
        load_llm_config(tmp_path / "nope.json")


def test_llm_config_entry_without_model_in_a_list():
    with pytest.raises(InputError, match="entry 1 .*: model: missing"):
        load_llm_config([ENTRY, {"api_key": "sk-x"}])


def test_review_regenerate_after_edit_redoes_the_edit(tmp_path, monkeypatch):
    teams = record_teams(monkeypatch)
    review = reviewer(("edit", "make it snowy"), "regenerate", "approve")
    result = run("text-to-video", tmp_path / "x.mp4", prompt=FOX, review=review)
    m = result.manifest
    assert m["route"] == speakers(teams[0]) == [P, T2I, I2I, I2I, I2V]
    frame, edit1, edit2, video = m["tool_calls"]
    # the reviewed (edited) frame is made again from the same source, same instruction, next seed
    assert edit2["args"] == edit1["args"] == {"image_path": frame["output"], "instruction": "make it snowy"}
    assert (edit1["seed"], edit2["seed"]) == (0, 1)
    assert review.seen == [frame["output"], edit1["output"], edit2["output"]]
    assert video["args"]["image_path"] == edit2["output"]

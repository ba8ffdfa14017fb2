"""An InputError carries the job model's field (`param`); each front door spells it its own way.

The command line says `--num-frames: ...` (exit 2), the service `num_frames: ...` with OpenAI's
`param` set from the error, MCP `num_frames: ...`; the Videos API renames the field by its name
(`width` -> `size`), and no door recovers a field from the message text by regex.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient

from mora.cli import main
from mora.errors import InputError
from mora.service.app import build_service
from mora.service.http import from_input_error
from mora.workflows.jobspec import parse_job, spell_flag
from mora.workflows.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
# 0 is below the job model's own bound (>= 1); 1 passes it and is refused by the preset's check
# (`limits.check_options`: at least 2 frames). Both must reach every door with the same field.
CASES = [(0, "0 is out of range; pass a number >= 1"), (1, "1 is out of range; pass a number between 2 and ")]


@pytest.fixture
def client(tmp_path):
    svc = build_service(db=tmp_path / "jobs.db", out_dir=tmp_path / "out", defaults={"preset": "tiny"},
                        host={"device": "cpu"}, start_worker=False)
    yield TestClient(svc.app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    svc.store.close()


def _mcp_text(tmp_path: Path, arguments: dict) -> str:
    pytest.importorskip("mcp")
    from mcp import Client

    from mora.mcp.server import MoraMcp, file_links
    from mora.service.store import JobStore

    store = JobStore(tmp_path / "mcp.db", tmp_path, defaults={"preset": "tiny"}, any_path=True)
    server = MoraMcp(store, file_links(tmp_path), any_path=True, preset="tiny").server()
    texts = []

    async def conversation():
        with anyio.fail_after(60):
            async with Client(server) as mcp_client:
                result = await mcp_client.call_tool("text_to_video", arguments)
                assert result.is_error
                texts.append(result.content[0].text)

    anyio.run(conversation)
    store.close()
    return texts[0]


@pytest.mark.parametrize("frames, problem", CASES)
def test_one_bad_value_is_named_by_each_door_its_own_way(frames, problem, tmp_path, capsys, client):
    code = main(["text-to-video", "a fox", "--preset", "tiny", "--device", "cpu", "--num-frames", str(frames),
                 "--out", str(tmp_path / "cli.mp4")])
    assert code == 2
    assert capsys.readouterr().err.startswith(f"mora: error: --num-frames: {problem}")

    r = client.post("/v1/jobs", json={"task": "text-to-video", "prompt": "a fox", "num_frames": frames})
    error = r.json()["error"]
    assert r.status_code == 422 and error["param"] == "num_frames", error
    assert error["message"].startswith(f"num_frames: {problem}"), error

    text = _mcp_text(tmp_path, {"prompt": "a fox", "num_frames": frames})
    assert text.startswith(f"num_frames: {problem}"), text

    with pytest.raises(InputError) as caught:  # Python: the keyword's own name
        prepare({"task": "text-to-video", "prompt": "a fox", "preset": "tiny", "num_frames": frames,
                 "out": str(tmp_path / "py.mp4")}, files=False)
    assert caught.value.param == "num_frames" and str(caught.value).startswith(f"num_frames: {problem}")


def test_a_source_prefix_keeps_the_field():
    with pytest.raises(InputError) as caught:
        parse_job({"task": "text-to-video", "prompt": "a fox", "num_frames": 0}, where="jobs.jsonl:3")
    e = caught.value
    assert e.param == "num_frames" and str(e).startswith("jobs.jsonl:3: num_frames: 0 is out of range")
    assert e.spelled(spell_flag).startswith("jobs.jsonl:3: --num-frames: 0 is out of range")


def test_the_field_is_the_errors_own_never_read_from_its_text():
    # a message that opens with another word: the param is still the error's
    error = from_input_error(InputError("steps: is a word of this prompt; shorten it", param="prompt"))
    assert error.param == "prompt" and error.message == "prompt: steps: is a word of this prompt; shorten it"
    assert from_input_error(InputError("--steps: a line with no field")).param is None
    # the Videos API's rename maps the field's name (width -> size), whatever the text says
    renamed = from_input_error(InputError("100 is not a multiple of 8", param="width"), 400, {"width": "size"})
    assert renamed.param == "size" and renamed.message == "size: width: 100 is not a multiple of 8"


def test_the_videos_api_names_a_bad_width_size(client):
    r = client.post("/v1/videos", json={"prompt": "a fox", "size": "100x64"})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "size", error
    assert error["message"].startswith("size: width: 100 is not a multiple of"), error


def test_no_door_recovers_a_field_from_message_text():
    sources = {p: p.read_text(encoding="utf-8") for d in ("src", "workflows", "agents", "tools")
               for p in (ROOT / d).rglob("*.py")}
    for name in ("as_field", "field_of"):
        users = [str(p.relative_to(ROOT)) for p, text in sources.items() if f"{name}(" in text]
        assert users == [], f"{name} still recovers fields from text in {users}"


def test_tool_and_route_errors_about_a_field_carry_it(tmp_path):
    """A tool's or the route's refusal of an input or a frame count names its field as `param`,
    so a front door can spell it, rather than finding the name inside the text."""
    from mora.tools.toolset import Toolset
    from mora.workflows.route_run import RouteRun
    from mora.workflows.tasks import route_for

    tools = Toolset(preset="tiny", device="cpu", output_dir=tmp_path)
    with pytest.raises(InputError) as not_a_path:
        tools._input("  ", "image")
    job = RouteRun("extend", {"video": "a.mp4"}, {}, 0, list(route_for("extend", {"video": "a.mp4"})), tmp_path)
    with pytest.raises(InputError) as outside:
        job.guard("/etc/passwd", "video")
    for caught, field in ((not_a_path, "image"), (outside, "video")):
        assert caught.value.param == field and str(caught.value).startswith(f"{field}: ")

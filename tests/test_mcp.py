"""Mora as an MCP server, driven by the official `mcp` SDK's own client.

Fast tier: the server in-process over a real job store (no worker: nothing runs): the tools and
their schemas, and clean tool errors. Slow tier: `mora mcp` over stdio in a subprocess, a real
job on the tiny preset with progress notifications, the video read through the returned link,
tool errors, then more calls on the same server.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import anyio
import pytest

pytest.importorskip("mcp")

from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

from mora import media  # noqa: E402
from mora.mcp import tools as mt  # noqa: E402
from mora.workflows.jobspec import JOB_TASKS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CALL_S = 240  # one whole conversation with a server, at most (a tiny job takes seconds)
SMALL = {"num_frames": 3, "steps": 1, "seed": 1}  # the quickest tiny job


def _in_process(tmp_path: Path):
    from mora.mcp.server import MoraMcp, file_links
    from mora.service.store import JobStore

    store = JobStore(tmp_path / "mcp.db", tmp_path, defaults={"preset": "tiny"}, any_path=True)
    return store, MoraMcp(store, file_links(tmp_path), any_path=True, preset="tiny").server()


def _run(conversation, server) -> None:
    async def main():
        with anyio.fail_after(CALL_S):
            async with Client(server) as client:
                await conversation(client)

    anyio.run(main)


def _text(result) -> str:
    return result.content[0].text


async def _expect_error(client, tool: str, arguments: dict, starts: str) -> None:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, (tool, arguments, result)
    assert _text(result).startswith(starts), _text(result)
    assert "\n" not in _text(result) and "Traceback" not in _text(result)


def test_tools_and_schemas_are_listed_from_the_job_model(tmp_path):
    _, server = _in_process(tmp_path)

    async def conversation(client):
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert set(listed) == {mt.TOOL_NAMES[t] for t in JOB_TASKS} | set(mt.OTHER_TOOLS)
        t2v = listed["text_to_video"]
        assert t2v.input_schema == mt.tool_schema("text-to-video", preset="tiny")
        assert t2v.input_schema["required"] == ["prompt"] and "wait" in t2v.input_schema["properties"]
        assert "device" not in t2v.input_schema["properties"]  # host options are the server's
        assert t2v.output_schema["properties"]["video"]["anyOf"][0]["type"] == "string"
        assert listed["get_job"].annotations.read_only_hint is True
        assert listed["make_story"].description.startswith("Make a multi-shot film")

    _run(conversation, server)


def test_bad_arguments_are_tool_errors_and_the_server_keeps_serving(tmp_path):
    store, server = _in_process(tmp_path)

    async def conversation(client):
        await _expect_error(client, "extend_video", {"video": str(tmp_path / "missing.mp4")},
                            f"video: '{tmp_path / 'missing.mp4'}' does not exist")
        await _expect_error(client, "text_to_video", {"prompt": "a fox", "preset": "nope"},
                            "preset: unknown preset 'nope'; choose one of")
        await _expect_error(client, "text_to_video", {"prompt": "a fox", "num_frames": 0},
                            "num_frames: 0 is out of range; pass a number >= 1")
        await _expect_error(client, "text_to_video", {"prompt": "a fox", "steps": 10_000},
                            "steps: 10000 is out of range")
        await _expect_error(client, "text_to_video", {"prompt": "a fox", "device": "cuda"},
                            "device: an MCP tool call cannot set it")
        await _expect_error(client, "get_job", {"job_id": "job_nope"}, "job_id: 'job_nope' is not a job")
        await _expect_error(client, "score_video", {"video": "job:job_nope"}, "video: 'job:job_nope' is not a job")
        await _expect_error(client, "no_such_tool", {}, "tool: 'no_such_tool' is not a tool of Mora")
        assert store.list() == []  # nothing was queued by a refused call
        queued = await client.call_tool("text_to_video", {"prompt": "a fox", "wait": False, **SMALL})
        assert not queued.is_error and queued.structured_content["status"] == "queued"
        job_id = queued.structured_content["job_id"]
        assert store.get(job_id).job["preset"] == "tiny"  # the server's preset
        cancelled = await client.call_tool("cancel_job", {"job_id": job_id})
        assert cancelled.structured_content["status"] == "cancelled"
        await _expect_error(client, "extend_video", {"video": f"job:{job_id}"},
                            f"video: job:{job_id} is cancelled, not completed")
        presets = await client.call_tool("list_presets", {})
        assert "tiny" in [p["name"] for p in presets.structured_content["presets"]]

    _run(conversation, server)


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # MORA_HOME from conftest: tiny models built once per session
    env.pop("OAI_CONFIG_LIST", None)
    return env


def _stdio(out_dir: Path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "mora.cli", "mcp", "--preset", "tiny",
                                                               "--out-dir", str(out_dir)], env=_env())


def _check_video(result, out_dir: Path) -> tuple[str, Path]:
    """The tool's result: a completed job, its video as a file URI under out_dir, the summary; (id, path)."""
    assert not result.is_error, _text(result)
    summary = result.structured_content
    links = [c for c in result.content if c.type == "resource_link"]
    assert len(links) == 1 and links[0].mime_type == "video/mp4" and links[0].uri == summary["video"]
    path = Path(unquote(urlparse(links[0].uri).path))
    assert links[0].uri.startswith("file://") and path.is_relative_to(out_dir.resolve()) and path.is_file()
    video = media.read_video(str(path), argument="video")
    assert summary["seconds"] == pytest.approx(len(video.frames) / video.fps, abs=0.01)
    assert summary["route"] and summary["score_card"] and summary["elapsed_s"] > 0
    return summary["job_id"], path


@pytest.mark.slow
def test_mora_mcp_over_stdio_runs_a_job_with_progress_and_serves_its_video(tmp_path):
    out_dir = tmp_path / "jobs"

    async def conversation(client):
        steps: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress, total, message):
            steps.append((progress, total, message))

        tools = (await client.list_tools()).tools
        assert {t.name for t in tools} >= {"text_to_video", "get_job", "score_video"}
        result = await client.call_tool("text_to_video", {"prompt": "a red fox in snow", **SMALL},
                                        progress_callback=on_progress)
        job_id, path = _check_video(result, out_dir)
        assert result.structured_content["route"] == ["prompt_agent", "text_to_image_agent", "image_to_video_agent"]
        assert "red fox in snow" in result.structured_content["enhanced_prompt"]
        # one notification per agent step, increasing, each naming its agent, then 100% when done
        assert [m.split(":")[0] for _, _, m in steps] == [*result.structured_content["route"], "done"]
        assert [p for p, _, _ in steps] == sorted({p for p, _, _ in steps}) and all(t == 100 for _, t, _ in steps)
        assert steps[-1][0] == 100
        # the link reads back as the file's bytes through the server too
        read = await client.read_resource(result.structured_content["video"])
        assert base64.b64decode(read.contents[0].blob) == path.read_bytes()
        # errors do not stop the server
        await _expect_error(client, "image_to_video", {"image": str(tmp_path / "nope.png"), "prompt": "x"},
                            f"image: '{tmp_path / 'nope.png'}' does not exist")
        await _expect_error(client, "text_to_video", {"prompt": "a fox", "preset": "nope"}, "preset: unknown preset")
        await _expect_error(client, "text_to_video", {"prompt": "a fox", "fps": 0}, "fps: 0 is out of range")
        # then a job that continues the first one's video (job:<id>), and its score card
        steps.clear()
        more = await client.call_tool("extend_video", {"video": f"job:{job_id}", **SMALL},
                                      progress_callback=on_progress)
        _, longer = _check_video(more, out_dir)
        assert steps[-1][:2] == (100, 100)  # its one agent step reported at its start, then done
        assert len(media.read_video(str(longer), argument="video").frames) > \
            len(media.read_video(str(path), argument="video").frames)
        card = await client.call_tool("score_video", {"video": str(path)})
        assert not card.is_error
        same = {k: v for k, v in card.structured_content.items() if k != "seconds"}  # seconds: time to score
        assert same == {k: v for k, v in result.structured_content["score_card"].items() if k != "seconds"}
        got = await client.call_tool("get_job", {"job_id": job_id})
        assert got.structured_content == result.structured_content

    _run(conversation, _stdio(out_dir))
    assert (out_dir / "mcp.db").is_file()


@pytest.mark.slow
def test_the_example_script_drives_mora_through_mcp(tmp_path):
    out_dir = tmp_path / "jobs"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "mcp_client.py"), "a red fox", "--out-dir",
                           str(out_dir)], env=_env(), capture_output=True, text=True, timeout=CALL_S)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert lines["tools"].split(", ")[:2] == ["text_to_video", "image_to_video"]
    first, extended = (Path(lines[k].rsplit(" (", 1)[0]) for k in ("video", "extended"))
    assert first.is_file() and extended.is_file() and first.is_relative_to(out_dir.resolve())
    assert lines["route"] == "prompt_agent -> text_to_image_agent -> image_to_video_agent"
    assert "% prompt_agent: " in proc.stderr and "% image_to_video_agent: " in proc.stderr  # progress lines


def test_a_caller_that_gives_up_on_a_waiting_call_cancels_its_job(tmp_path):
    store, server = _in_process(tmp_path)  # no worker: the job stays queued while the call waits

    async def conversation(client):
        with anyio.move_on_after(2):
            await client.call_tool("text_to_video", {"prompt": "a fox", **SMALL})
        with anyio.fail_after(10):
            while not store.list() or store.list()[0].status != "cancelled":
                await anyio.sleep(0.05)
        assert store.list()[0].job["prompt"] == "a fox"

    _run(conversation, server)

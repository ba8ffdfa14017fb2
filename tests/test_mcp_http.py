"""`/mcp` on `mora serve` (streamable HTTP), driven by the official `mcp` SDK's client, behind the service's bearer auth."""

from __future__ import annotations

import base64

import anyio
import pytest

pytest.importorskip("mcp")
pytest.importorskip("fastapi")
httpx2 = pytest.importorskip("httpx2")  # the SDK's HTTP client
httpx = pytest.importorskip("httpx")

from mcp import Client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from test_mcp import CALL_S, SMALL, _expect_error  # noqa: E402
from test_serve import Server  # noqa: E402  (`mora serve` in a subprocess)

from mora import media  # noqa: E402

pytestmark = pytest.mark.slow
KEY = "mcp-secret"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-mcp")
    (folder / "keys.txt").write_text(KEY + "\n")
    server = Server(folder, "--api-key-file", str(folder / "keys.txt")).start()
    yield server
    server.kill()


def test_mcp_needs_the_services_bearer_key(keyed_server):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    r = httpx.post(keyed_server.url + "/mcp", json=body, timeout=30,
                   headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_mcp_over_http_runs_jobs_and_links_the_services_url(keyed_server, tmp_path):
    url = keyed_server.url

    async def conversation(client):
        steps = []

        async def on_progress(progress, total, message):
            steps.append(message)

        listed = {t.name: t for t in (await client.list_tools()).tools}
        video_help = listed["extend_video"].input_schema["properties"]["video"]["description"]
        assert "job:<id>" in video_help and "local path" not in video_help  # no paths over HTTP
        assert listed["text_to_video"].input_schema["properties"]["preset"]["default"] == "tiny"
        result = await client.call_tool("text_to_video", {"prompt": "a red fox in snow", **SMALL},
                                        progress_callback=on_progress)
        assert not result.is_error, result.content[0].text
        job_id, link = result.structured_content["job_id"], result.structured_content["video"]
        assert link == f"{url}/v1/jobs/{job_id}/files/video.mp4"
        assert [m.split(":")[0] for m in steps] == [*result.structured_content["route"], "done"]  # then 100%
        # the link is the service's: it serves the video with the same key; the MCP resource is the same bytes
        got = httpx.get(link, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert got.status_code == 200
        (tmp_path / "got.mp4").write_bytes(got.content)
        assert len(media.read_video(str(tmp_path / "got.mp4"), argument="video").frames) > 1
        read = await client.read_resource(link)
        assert base64.b64decode(read.contents[0].blob) == got.content
        # errors: a server path, a bad preset, an out-of-range number; the server keeps serving
        await _expect_error(client, "extend_video", {"video": str(tmp_path / "got.mp4")},
                            "video: 'got.mp4' is a path on the server")  # by its name: no server path comes back
        await _expect_error(client, "text_to_video", {"prompt": "a fox", "preset": "nope"}, "preset: unknown preset")
        await _expect_error(client, "text_to_video", {"prompt": "a fox", "width": 0}, "width: 0 is out of range")
        more = await client.call_tool("extend_video", {"video": f"job:{job_id}", **SMALL})
        assert not more.is_error and more.structured_content["status"] == "completed"
        assert more.structured_content["video"].startswith(f"{url}/v1/jobs/")

    async def main():
        with anyio.fail_after(CALL_S):
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"},
                                      timeout=httpx2.Timeout(30, read=CALL_S))
            async with http, Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
                await conversation(client)

    anyio.run(main)

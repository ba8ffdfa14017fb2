"""Every caller mistake is a 4xx in OpenAI's error shape, values are never converted, inputs are sized
from their headers, and errors quote only a short prefix of a value (issue 28, findings 4, 5, 8, 9).

In-process (FastAPI's TestClient, no worker), like test_serve_app.py.
"""

from __future__ import annotations

import io
import struct
import zlib

import anyio
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from mora import media  # noqa: E402
from mora.errors import InputError, ModelUnavailableError  # noqa: E402
from mora.service.app import build_service  # noqa: E402

MISSING_MODEL = "nobody-org/not-downloaded-sdxl"
PRESET_FILE = f"""name = "missing"
description = "tiny, with a model nobody downloaded"
extends = "tiny"

[roles.text_to_image]
model = "{MISSING_MODEL}"
refiner = false
"""


def _service(tmp_path, **host):
    return build_service(db=tmp_path / "jobs.db", out_dir=tmp_path / "out", defaults={"preset": "tiny"},
                         host={"device": "cpu", **host}, start_worker=False)


@pytest.fixture
def svc(tmp_path):
    service = _service(tmp_path)
    yield service
    service.store.close()


@pytest.fixture
def client(svc):
    return TestClient(svc.app, base_url="http://127.0.0.1", raise_server_exceptions=False)  # a 500 is an answer here, not an exception


def _png(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (an 8x8 image with its IHDR rewritten: nothing big allocated)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts after signature, length and type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _error(r, status: int, param: str | None) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error
    assert error["type"] == "invalid_request_error" and "\n" not in error["message"]
    return error


# Each was a plain-text 500 (a TypeError, ValueError or OverflowError in the log) before.
@pytest.mark.parametrize("method, path, kwargs, param, start", [
    ("post", "/v1/videos", {"json": {"prompt": "x", "model": ["tiny"]}}, "model", "model: ['tiny'] is not text"),
    ("post", "/v1/videos", {"json": {"prompt": "x", "input_reference": {"file_id": 5}}}, "input_reference",
     "input_reference.file_id: 5 is not text"),
    ("post", "/v1/videos/edits", {"json": {"prompt": "x", "video": {"id": 5}}}, "video", "video.id: 5 is not text"),
    ("post", "/v1/videos/extensions", {"json": {"prompt": "x", "video": {"id": "job_a"}, "seconds": "nan"}},
     "seconds", "seconds: 'nan' is not a number"),
    ("post", "/v1/videos/extensions", {"json": {"prompt": "x", "video": {"id": "job_a"}, "seconds": "inf"}},
     "seconds", "seconds: 'inf' is not a number"),
    ("post", "/v1/videos/extensions", {"json": {"prompt": "x", "video": {"id": "job_a"}, "seconds": [1]}},
     "seconds", "seconds: [1] is not text"),
    ("post", "/v1/videos", {"json": {"prompt": "x", "num_frames": [None]}}, "num_frames", "num_frames: [None]"),
    ("post", "/v1/videos", {"json": {"prompt": "x", "fps": "7", "seconds": "4"}}, "fps", "fps: '7'"),
    ("post", "/v1/jobs", {"json": {"task": "extend", "video": "clip\0.mp4"}}, "video",
     "video: 'clip\\x00.mp4' holds a NUL character"),
    ("get", "/v1/jobs/{job}/files/a%00b", {}, "path", "path: holds a NUL character"),
    ("get", "/v1/jobs/{job}/events", {"headers": {"last-event-id": "9" * 40}}, "last-event-id",
     "last-event-id: '99999"),
])
def test_caller_mistakes_that_were_500s_are_4xx_in_openai_shape(client, method, path, kwargs, param, start):
    job = client.post("/v1/jobs", json={"task": "text-to-video", "prompt": "x"}).json()["id"]
    r = getattr(client, method)(path.format(job=job), **kwargs)
    error = _error(r, 422 if path == "/v1/jobs" else 400, param)
    assert error["message"].startswith(start), error["message"]


def test_edits_with_a_list_for_video_name_the_field(client):
    error = _error(client.post("/v1/videos/edits", json={"prompt": "x", "video": ["a"]}), 400, "video")
    assert error["message"].startswith("video: ['a'] is not an object")


@pytest.mark.parametrize("value", [True, "7", 1.0, 7.5])
def test_json_numbers_are_taken_as_typed_never_converted(client, svc, value):
    for field in ("seed", "steps"):
        error = _error(client.post("/v1/jobs", json={"task": "text-to-video", "prompt": "x", field: value}), 422,
                       field)
        assert error["message"].startswith(f"{field}: {value!r} is not a whole number"), error["message"]
        _error(client.post("/v1/videos", json={"prompt": "x", field: value}), 400, field)
    _error(client.post("/v1/videos", json={"prompt": "x", "metrics": 1}), 400, "metrics")
    assert svc.store.list() == []  # nothing was queued with a converted value
    assert client.post("/v1/jobs", json={"task": "text-to-video", "prompt": "x", "seed": 7}).json()["job"]["seed"] == 7


@pytest.mark.parametrize("field, text", [("seed", "7.0"), ("seed", "true"), ("seed", " 7"), ("seed", "7_0"),
                                         ("metrics", "1"), ("metrics", "yes"), ("steps", "1e1")])
def test_form_text_is_parsed_strictly(client, field, text):
    error = _error(client.post("/v1/videos", data={"prompt": "x", field: text}), 400, field)
    assert error["message"].startswith(f"{field}: {text!r} is not"), error["message"]


def test_form_text_that_is_a_number_is_that_number(client, svc):
    video = client.post("/v1/videos", data={"prompt": "x", "seed": "7", "metrics": "false"}).json()
    assert svc.store.get(video["id"]).job["seed"] == 7 and svc.store.get(video["id"]).job["metrics"] is False


def test_python_callers_keep_ints_and_lose_bools():
    from mora.workflows.jobspec import parse_job

    assert parse_job({"task": "text-to-video", "prompt": "x", "seed": 7}).seed == 7
    with pytest.raises(InputError, match=r"^seed: True is not a whole number"):
        parse_job({"task": "text-to-video", "prompt": "x", "seed": True})


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns at 89 MP; ours is 40
def test_an_image_past_the_pixel_limit_is_refused_from_its_header(client, svc):
    r = client.post("/v1/videos", data={"prompt": "x"},
                    files={"input_reference": ("big.png", _png(13000, 13000), "image/png")})
    error = _error(r, 400, "image")
    assert "is 13000x13000 (169.0 MP), more than the 40 MP an input may have" in error["message"], error["message"]
    assert svc.store.list() == []


def test_an_input_video_past_the_frame_or_time_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    from mora.media import video

    clip = media.write_video(np.zeros((8, 16, 16, 3), np.uint8), tmp_path / "clip.mp4", fps=8)
    media.check_file(clip, argument="video", kinds=("video",))  # within the limits: fine
    monkeypatch.setattr(video._Decoder, "frames", lambda *a, **k: pytest.fail("decoded a frame"))
    monkeypatch.setattr(video, "MAX_INPUT_FRAMES", 5)
    with pytest.raises(InputError, match=r"^video: .* has 8 frames, more than the 5 frames an input video may have"):
        media.check_file(clip, argument="video", kinds=("video",))
    monkeypatch.setattr(video, "MAX_INPUT_FRAMES", 100)
    monkeypatch.setattr(video, "MAX_INPUT_SECONDS", 0.5)
    with pytest.raises(InputError, match=r"^video: .* has 1 s, more than the 0.5 s an input video may have"):
        media.check_file(clip, argument="video", kinds=("video",))


def test_errors_quote_only_a_prefix_of_a_value(client):
    prompt = "y" * 100_000
    r = client.post("/v1/jobs", json={"task": "text-to-video", "prompt": prompt})
    error = _error(r, 422, "prompt")
    assert len(r.content) < 1000 and "... (100000 characters)" in error["message"], error["message"]
    r = client.post("/v1/videos", json={"prompt": "x", "model": "m" * 100_000})
    assert len(r.content) < 1000 and _error(r, 400, "model")["message"].startswith("model: 'mmm")


def _missing_preset(tmp_path) -> tuple[str, str]:
    """(a preset file naming a model that is not here, the command line's line for it)."""
    from mora.tools.weights import check_models

    path = tmp_path / "missing.toml"
    path.write_text(PRESET_FILE)
    with pytest.raises(ModelUnavailableError) as caught:
        check_models([MISSING_MODEL], "missing")  # what the command line says (exit 2)
    return str(path), str(caught.value)


def test_a_preset_whose_models_are_unavailable_is_a_4xx_with_the_command_lines_line(tmp_path):
    preset_file, line = _missing_preset(tmp_path)
    service = _service(tmp_path, preset_file=preset_file)
    client = TestClient(service.app, base_url="http://127.0.0.1", raise_server_exceptions=False)
    job = client.post("/v1/jobs", json={"task": "text-to-video", "prompt": "x", "preset": "missing"})
    assert _error(job, 400, "preset")["message"] == line and MISSING_MODEL in line
    video = client.post("/v1/videos", json={"prompt": "x", "model": "missing"})
    assert _error(video, 400, "model")["message"] == line and video.json()["error"]["code"] == "model_unavailable"
    assert service.store.list() == [] and not [p for p in (tmp_path / "out").iterdir() if p.name.startswith("job_")]
    service.store.close()


def test_mcp_answers_an_unavailable_preset_with_is_error(tmp_path):
    pytest.importorskip("mcp")
    from mcp import Client

    from mora.mcp.server import MoraMcp, file_links
    from mora.service.store import JobStore

    preset_file, line = _missing_preset(tmp_path)
    store = JobStore(tmp_path / "mcp.db", tmp_path / "out", host={"preset_file": preset_file, "device": "cpu"},
                     defaults={"preset": "tiny"}, any_path=True)
    server = MoraMcp(store, file_links(tmp_path / "out"), any_path=True, preset="tiny").server()
    results = []

    async def main():
        with anyio.fail_after(60):
            async with Client(server) as client:
                results.append(await client.call_tool("text_to_video", {"prompt": "a fox", "preset": "missing",
                                                                         "wait": False}))

    anyio.run(main)
    assert results[0].is_error and results[0].content[0].text == line
    store.close()

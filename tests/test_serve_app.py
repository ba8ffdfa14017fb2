"""The HTTP side of `mora serve` in-process (FastAPI's TestClient, no worker): routes, errors, auth.

The end-to-end tests with a real server, the openai client and jobs that run are in test_serve.py
(slow tier); these check what needs no job to run.
"""

from __future__ import annotations

import io

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from mora.service.app import build_service  # noqa: E402

LOCAL = "http://127.0.0.1"  # the Host a loopback caller sends (the service refuses other names without keys)


@pytest.fixture
def svc(tmp_path):
    service = build_service(db=tmp_path / "jobs.db", out_dir=tmp_path / "out", defaults={"preset": "tiny"},
                            host={"device": "cpu"}, start_worker=False)
    yield service
    service.store.close()


def test_routes_queue_jobs_and_answer_in_openai_shape(svc):
    c = TestClient(svc.app, base_url=LOCAL)
    video = c.post("/v1/videos", data={"prompt": "a fox", "model": "tiny", "steps": "1"}).json()
    assert video["object"] == "video" and video["status"] == "queued" and video["size"] == "96x64"
    assert video["seconds"] == "1" and video["model"] == "tiny"
    assert svc.store.get(video["id"]).job["steps"] == 1  # a form field as the option's type
    job = c.post("/v1/jobs", json={"task": "simulate", "prompt": "a village"}, headers={"Idempotency-Key": "a"})
    again = c.post("/v1/jobs", json={"task": "simulate", "prompt": "a village"}, headers={"Idempotency-Key": "a"})
    assert job.json()["id"] == again.json()["id"] and job.json()["status"] == "queued"
    listed = c.get("/v1/videos", params={"limit": 1}).json()
    assert [v["id"] for v in listed["data"]] == [job.json()["id"]] and listed["has_more"] is True
    assert c.delete(f"/v1/jobs/{job.json()['id']}").json()["status"] == "cancelled"
    assert c.get(f"/v1/videos/{job.json()['id']}").json()["error"]["code"] == "cancelled"
    r = c.get(f"/v1/videos/{video['id']}/content")
    assert r.status_code == 409 and r.json()["error"]["code"] == "video_not_ready"
    text = c.get("/metrics").text
    assert "mora_queue_length 1" in text and 'mora_jobs{status="cancelled"} 1' in text
    assert {p["id"] for p in c.get("/v1/presets").json()["data"]} >= {"tiny", "mora"}


@pytest.mark.parametrize("call, status, param, start", [
    (("post", "/v1/videos", {"data": {"prompt": "x", "model": "sora-2"}}), 400, "model", "model: 'sora-2' is not"),
    (("post", "/v1/videos", {"data": {"prompt": "x", "size": "big"}}), 400, "size", "size: 'big' is not WIDTHxHEIGHT"),
    (("post", "/v1/videos", {"data": {"prompt": "x", "steps": "many"}}), 400, "steps", "steps: 'many' is not a whole"),
    (("post", "/v1/videos", {"data": {"prompt": "x", "style": "noir"}}), 400, "style", "style: POST /v1/videos has no"),
    (("post", "/v1/videos", {"json": {"prompt": "x", "input_reference": {"image_url": "http://a/b.png"}}}), 400,
     "input_reference", "input_reference: image_url is not supported"),
    (("post", "/v1/videos", {"data": {"prompt": "x"}, "files": {"input_reference": ("a.txt", b"hi", "text/plain")}}),
     415, "input_reference", "input_reference: 'a.txt' (text/plain) is not an accepted image upload"),
    (("post", "/v1/videos", {"content": b"x", "headers": {"content-type": "text/plain"}}), 415, "content-type",
     "content-type: 'text/plain' is not accepted"),
    (("post", "/v1/jobs", {"json": {"task": "extend", "video": "job:nope"}}), 422, "video",
     "video: 'job:nope' is not a job of this server"),
    (("post", "/v1/jobs", {"json": {"task": "text-to-video", "prompt": "x", "out": "/tmp/x.mp4"}}), 422, "out",
     "out: a request cannot set it"),
    (("get", "/v1/jobs/nope", {}), 404, "job", "job: 'nope' is not a job of this server"),
    (("get", "/v1/videos", {"params": {"limit": 0}}), 400, "limit", "limit: 0 is out of range"),
])
def test_errors(svc, call, status, param, start):
    method, path, kwargs = call
    r = getattr(TestClient(svc.app, base_url=LOCAL), method)(path, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert error["message"].startswith(start), error["message"]


def test_uploads_are_limited_and_kept_in_the_job_folder(tmp_path):
    service = build_service(db=tmp_path / "j.db", out_dir=tmp_path / "out", defaults={"preset": "tiny"},
                            max_upload_mb=1, start_worker=False)
    c = TestClient(service.app, base_url=LOCAL)
    big = c.post("/v1/videos", data={"prompt": "x"}, files={"input_reference": ("a.png", b"\0" * (2 << 20), "image/png")})
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), "red").save(buf, "PNG")
    ok = c.post("/v1/videos", data={"prompt": "go"}, files={"input_reference": ("a.png", buf.getvalue(), "image/png")})
    assert ok.status_code == 200, ok.text
    row = service.store.get(ok.json()["id"])
    assert row.task == "image-to-video" and row.job["image"].startswith(str(service.store.folder(row.id)))
    assert not any((tmp_path / "out" / ".uploads").iterdir())  # nothing left behind


def test_bearer_auth(tmp_path):
    service = build_service(db=tmp_path / "j.db", out_dir=tmp_path / "out", api_keys=frozenset({"k1"}),
                            start_worker=False)
    c = TestClient(service.app, base_url=LOCAL)
    assert c.get("/healthz").status_code == 200
    assert c.get("/v1/videos").status_code == 401
    assert c.get("/v1/videos", headers={"Authorization": "Bearer k2"}).json()["error"]["code"] == "invalid_api_key"
    assert c.get("/v1/videos", headers={"Authorization": "Bearer k1"}).status_code == 200


def test_web_page_mounted_at_ui(tmp_path):
    pytest.importorskip("gradio")
    service = build_service(db=tmp_path / "j.db", out_dir=tmp_path / "out", ui=True, start_worker=False)
    r = TestClient(service.app, base_url=LOCAL).get("/ui/")
    assert r.status_code == 200 and "gradio" in r.text.lower()

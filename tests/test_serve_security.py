"""`mora serve` against a hostile caller (issue 28): one test per hole of the threat model in docs/serve.md.

In-process (FastAPI's TestClient over the real app and middlewares, no worker): tenancy between keys,
Idempotency-Key scoping, Host and Origin, bodies limited while they stream, the work budget and the
per-key queue limit, inputs kept apart from outputs, deletes that forget, no server paths.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from mora import media  # noqa: E402
from mora.service.app import build_service  # noqa: E402
from mora.service.security import owner_of  # noqa: E402

LOCAL = "http://127.0.0.1"
KEYS = ("key-of-alice", "key-of-bob")


def _png(color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, format="PNG")
    return buf.getvalue()


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(tmp_path):
    service = build_service(db=tmp_path / "jobs.db", out_dir=tmp_path / "out", defaults={"preset": "tiny"},
                            host={"device": "cpu"}, api_keys=frozenset(KEYS), start_worker=False)
    yield service
    service.store.close()


@pytest.fixture
def local(tmp_path):
    service = build_service(db=tmp_path / "jobs.db", out_dir=tmp_path / "out", defaults={"preset": "tiny"},
                            host={"device": "cpu"}, start_worker=False, max_upload_mb=1)
    yield service
    service.store.close()


def _completed(service, job_id: str) -> None:
    """Finish a queued job as a worker would (a tiny video in its folder): content routes need one."""
    store = service.store
    store.claim()
    video = store.folder(job_id) / "video.mp4"
    media.write_video([Image.new("RGB", (64, 64), "blue")] * 3, video, fps=7)
    store.complete(job_id, {"video": {"path": str(video), "width": 64, "height": 64, "num_frames": 3, "fps": 7}},
                   str(video))


# --- tenancy -----------------------------------------------------------------------------------------

def test_other_keys_get_404_on_every_route_of_a_job(keyed):
    c = TestClient(keyed.app, base_url=LOCAL)
    alice, bob = _auth(KEYS[0]), _auth(KEYS[1])
    job = c.post("/v1/jobs", json={"task": "text-to-video", "prompt": "a fox"}, headers=alice).json()["id"]
    _completed(keyed, job)
    assert keyed.store.get(job).owner == owner_of(KEYS[0]) != owner_of(KEYS[1])
    assert c.get(f"/v1/jobs/{job}", headers=alice).status_code == 200
    for method, path in [("get", f"/v1/jobs/{job}"), ("get", f"/v1/videos/{job}"),
                         ("get", f"/v1/jobs/{job}/files/video.mp4"), ("get", f"/v1/jobs/{job}/events"),
                         ("get", f"/v1/videos/{job}/content"), ("delete", f"/v1/jobs/{job}"),
                         ("delete", f"/v1/videos/{job}")]:
        r = getattr(c, method)(path, headers=bob)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (method, path, r.text)
    assert c.get("/v1/jobs", headers=bob).json()["data"] == []
    assert c.get("/v1/videos", headers=bob).json()["data"] == []
    assert c.get("/v1/jobs", params={"after": job}, headers=bob).status_code == 400  # not even as a cursor
    # nor as an input of bob's jobs
    r = c.post("/v1/jobs", json={"task": "extend", "video": f"job:{job}"}, headers=bob)
    assert r.status_code == 422 and f"'job:{job}' is not a job of this server" in r.json()["error"]["message"]
    assert c.post(f"/v1/videos/{job}/remix", json={"prompt": "x"}, headers=bob).status_code == 404
    r = c.post("/v1/videos/edits", json={"prompt": "x", "video": {"id": job}}, headers=bob)
    assert r.status_code == 400 and "is not a job of this server" in r.json()["error"]["message"]
    # the job is untouched by bob's tries, and alice still has it all
    assert keyed.store.get(job).status == "completed"
    assert c.get(f"/v1/videos/{job}/content", headers=alice).status_code == 200
    assert [j["id"] for j in c.get("/v1/jobs", headers=alice).json()["data"]] == [job]


def test_idempotency_key_is_scoped_to_the_key_and_bound_to_the_request(keyed):
    c = TestClient(keyed.app, base_url=LOCAL)
    body = {"task": "text-to-video", "prompt": "a fox"}
    a = c.post("/v1/jobs", json=body, headers={**_auth(KEYS[0]), "Idempotency-Key": "k1"}).json()
    again = c.post("/v1/jobs", json=body, headers={**_auth(KEYS[0]), "Idempotency-Key": "k1"}).json()
    b = c.post("/v1/jobs", json=body, headers={**_auth(KEYS[1]), "Idempotency-Key": "k1"}).json()
    assert a["id"] == again["id"] != b["id"]  # bob does not get alice's job back
    r = c.post("/v1/jobs", json={**body, "prompt": "a wolf"}, headers={**_auth(KEYS[0]), "Idempotency-Key": "k1"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_reused", r.text
    assert len(c.get("/v1/jobs", headers=_auth(KEYS[0])).json()["data"]) == 1


def test_mcp_get_job_of_another_key_is_not_found(keyed):
    c = TestClient(keyed.app, base_url=LOCAL)
    job = c.post("/v1/jobs", json={"task": "text-to-video", "prompt": "a fox"}, headers=_auth(KEYS[0])).json()["id"]

    def call(client, key: str, name: str) -> dict:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name,
                                                                             "arguments": {"job_id": job}}}
        r = client.post("/mcp", json=body, headers={**_auth(key), "Accept": "application/json, text/event-stream",
                                                     "MCP-Protocol-Version": "2025-06-18"})
        assert r.status_code == 200, r.text
        text = r.text if r.headers["content-type"].startswith("application/json") else \
            next(line[5:] for line in r.text.splitlines() if line.startswith("data:"))
        return json.loads(text)["result"]

    with TestClient(keyed.app, base_url=LOCAL) as client:  # `with`: the app's lifespan runs /mcp's manager
        mine = call(client, KEYS[0], "get_job")
        assert not mine.get("isError") and mine["structuredContent"]["job_id"] == job
        for tool in ("get_job", "cancel_job"):
            theirs = call(client, KEYS[1], tool)
            assert theirs["isError"] and f"job_id: {job!r} is not a job of this server" in theirs["content"][0]["text"]
    assert keyed.store.get(job).status == "queued"


# --- who may call ------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers, status, code", [
    ({"Host": "evil.example"}, 403, "host_not_allowed"),  # DNS rebinding: a foreign name for 127.0.0.1
    ({"Origin": "http://evil.example"}, 403, "origin_not_allowed"),  # a page of another site
    ({"Origin": "null"}, 403, "origin_not_allowed"),  # a sandboxed page or a file:// one
    ({"Host": "localhost:8000", "Origin": "http://localhost:8000"}, 200, None),
    ({"Host": "[::1]:8000"}, 200, None),
])
def test_host_and_origin_are_checked_on_every_route_without_keys(local, headers, status, code):
    with TestClient(local.app, base_url=LOCAL) as c:  # `with`: /mcp's session manager runs
        for path in ("/v1/jobs", "/v1/videos", "/metrics", "/v1/presets"):
            r = c.get(path, headers=headers)
            assert r.status_code == status, (path, r.text)
            if code:
                assert r.json()["error"]["code"] == code
        r = c.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={**headers, "Accept": "application/json, text/event-stream"})
        assert (r.status_code == 403) == (status == 403), r.text


def test_a_foreign_form_post_queues_nothing(local):
    c = TestClient(local.app, base_url=LOCAL)
    r = c.post("/v1/videos", data={"prompt": "a fox"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and local.store.list() == []


def test_allowed_host_admits_a_reverse_proxys_name(tmp_path):
    service = build_service(db=tmp_path / "j.db", out_dir=tmp_path / "o", defaults={"preset": "tiny"},
                            start_worker=False, allowed_hosts=("mora.example.org",))
    c = TestClient(service.app, base_url="https://mora.example.org")
    assert c.get("/v1/jobs", headers={"Origin": "https://mora.example.org"}).status_code == 200
    assert c.get("/v1/jobs", headers={"Host": "other.example.org"}).status_code == 403


# --- how much one caller may ask -----------------------------------------------------------------------

def test_a_chunked_json_body_is_limited_as_it_streams(local):
    c = TestClient(local.app, base_url=LOCAL)
    prompt = "x" * (2 << 20)  # 2 MB against a 1 MB limit, with no Content-Length to read

    def chunks():
        data = json.dumps({"task": "text-to-video", "prompt": prompt}).encode()
        for i in range(0, len(data), 64 << 10):
            yield data[i:i + 64 << 10]

    r = c.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text[:200]
    assert len(r.content) < 1000 and local.store.list() == []  # nothing echoed, nothing queued


def test_a_chunked_multipart_upload_is_refused_while_it_streams(local):
    """Over a real socket: the 413 comes after about the limit, not after the whole 16 MB body."""
    import select
    import socket
    import threading

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(local.app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            threading.Event().wait(0.05)
        boundary = "b0undary"
        part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"input_reference\"; filename=\"a.png\"\r\n"
                "Content-Type: image/png\r\n\r\n").encode()
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(f"POST /v1/videos HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                       f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode())
        sent, answered = 0, False
        for chunk in [part] + [b"\0" * (64 << 10)] * 256:  # 16 MB against the 1 MB limit
            try:
                client.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:  # the server answered and closed: it read no further
                answered = True
                break
            sent += len(chunk)
            if select.select([client], [], [], 0.01)[0]:
                answered = True
                break
        reply = client.recv(4096).decode("latin-1")
        client.close()
        assert answered and reply.startswith("HTTP/1.1 413"), reply[:200]
        assert sent < 4 << 20, sent  # stopped near the limit (socket buffers hold a little more)
        assert [p for p in local.store.out_dir.rglob("*") if p.is_file()] == [] and local.store.list() == []
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_work_budget_refuses_a_job_far_beyond_the_presets_own(local, tmp_path):
    c = TestClient(local.app, base_url=LOCAL)
    r = c.post("/v1/jobs", json={"task": "text-to-video", "prompt": "a fox", "width": 4096, "height": 4096})
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert message.startswith("job work: 4096x4096 px x 8 frames x 2 steps is 2731x the work of preset tiny's own "
                              "job (96x64 px x 8 frames x 2 steps); this server allows 4x (its --max-job-work)")
    assert c.post("/v1/jobs", json={"task": "text-to-video", "prompt": "a fox", "steps": 8}).status_code == 200
    assert c.post("/v1/jobs", json={"task": "text-to-video", "prompt": "a fox", "steps": 9}).status_code == 422
    roomy = build_service(db=tmp_path / "r.db", out_dir=tmp_path / "r", defaults={"preset": "tiny"},
                          start_worker=False, max_job_work=10)
    assert TestClient(roomy.app, base_url=LOCAL).post("/v1/jobs", json={"task": "text-to-video", "prompt": "a",
                                                                         "steps": 9}).status_code == 200


def test_a_key_with_a_full_queue_gets_429_with_retry_after(tmp_path):
    service = build_service(db=tmp_path / "j.db", out_dir=tmp_path / "o", defaults={"preset": "tiny"},
                            api_keys=frozenset(KEYS), start_worker=False, max_queued_per_key=2)
    c = TestClient(service.app, base_url=LOCAL)
    job = {"task": "text-to-video", "prompt": "a fox"}
    first = [c.post("/v1/jobs", json=job, headers=_auth(KEYS[0])).json()["id"] for _ in range(2)]
    r = c.post("/v1/videos", json={"prompt": "one more"}, headers=_auth(KEYS[0]))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert c.post("/v1/jobs", json=job, headers=_auth(KEYS[1])).status_code == 200  # bob has his own queue
    c.delete(f"/v1/jobs/{first[0]}", headers=_auth(KEYS[0]))  # a cancelled job frees its place
    assert c.post("/v1/jobs", json=job, headers=_auth(KEYS[0])).status_code == 200


# --- files -----------------------------------------------------------------------------------------------

def test_inputs_are_kept_apart_from_outputs_and_a_rerun_starts_from_them(local):
    c = TestClient(local.app, base_url=LOCAL)
    media.write_video([Image.new("RGB", (96, 64), "red")] * 4, local.store.out_dir / "src.mp4", fps=7)
    video = (local.store.out_dir / "src.mp4").read_bytes()
    (local.store.out_dir / "src.mp4").unlink()
    r = c.post("/v1/jobs", data={"job": json.dumps({"task": "extend", "num_frames": 3})},
               files={"video": ("clip.mp4", video, "video/mp4")})
    assert r.status_code == 200, r.text
    row = local.store.get(r.json()["id"])
    folder = local.store.folder(row.id)
    assert row.job["video"] == str(folder / "inputs" / "video.mp4") != str(folder / "video.mp4")
    (folder / "video.mp4").write_bytes(b"an earlier attempt's output")
    (folder / "video_artifacts").mkdir()
    local.store.claim()  # a run (or a rerun after a restart) starts from the inputs alone
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == ["inputs", "inputs/video.mp4"]


def test_delete_forgets_the_row_its_events_and_its_files(local):
    c = TestClient(local.app, base_url=LOCAL)
    job = c.post("/v1/jobs", json={"task": "text-to-video", "prompt": "a secret prompt"}).json()["id"]
    _completed(local, job)
    assert c.delete(f"/v1/videos/{job}").json()["deleted"] is True
    con = sqlite3.connect(local.store.db)
    assert con.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert con.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    assert not local.store.folder(job).exists()


def test_responses_name_no_server_path(local):
    c = TestClient(local.app, base_url=LOCAL)
    r = c.post("/v1/jobs", data={"job": json.dumps({"task": "image-to-video", "prompt": "it leaps"})},
               files={"image": ("frame.png", _png(), "image/png")})
    job = r.json()["id"]
    assert r.json()["job"]["image"] == f"job:{job}/inputs/image.png"
    folder = str(local.store.folder(job))
    _completed(local, job)
    for text in (c.get(f"/v1/jobs/{job}").text, c.get("/v1/jobs").text, c.get(f"/v1/videos/{job}").text,
                 c.get(f"/v1/jobs/{job}/events").text):
        assert str(local.store.out_dir) not in text and folder not in text, text
    assert f"job:{job}/video.mp4" in c.get(f"/v1/jobs/{job}").text
    other = c.post("/v1/jobs", json={"task": "text-to-video", "prompt": "x"}).json()["id"]
    local.store.claim()
    local.store.fail(other, f"OSError: cannot read {local.store.folder(other)}/inputs/x.png nor /srv/mora/presets/a.toml")
    error = c.get(f"/v1/jobs/{other}").json()["error"]
    assert error == f"OSError: cannot read job:{other}/inputs/x.png nor a.toml"
    assert c.get(f"/v1/videos/{other}").json()["error"]["message"] == error


def test_the_queue_lives_outside_the_jobs_folder(tmp_path):
    from mora.service.cli import default_db

    out = tmp_path / "serve"
    assert default_db(out) == tmp_path / "serve.db"
    out.mkdir()
    (out / "jobs.db").write_bytes(b"old queue")  # an older release's place: moved once
    (out / "jobs.db-wal").write_bytes(b"wal")
    assert default_db(out) == tmp_path / "serve.db" and (tmp_path / "serve.db").read_bytes() == b"old queue"
    assert (tmp_path / "serve.db-wal").is_file() and not (out / "jobs.db").exists()


def test_refusals_name_no_server_path(local):
    c = TestClient(local.app, base_url=LOCAL)
    r = c.post("/v1/jobs", json={"task": "text-to-video", "prompt": "x", "preset": "nope"})
    message = r.json()["error"]["message"]
    assert r.status_code == 422 and message.startswith("preset: unknown preset 'nope'; choose one of")
    assert not re.search(r"/[\w.-]+/", message), message  # the presets folder by its name alone


def test_sse_done_gives_the_videos_url_and_a_remix_its_length_while_it_runs(local):
    c = TestClient(local.app, base_url=LOCAL)
    job = c.post("/v1/jobs", json={"task": "text-to-video", "prompt": "a fox"}).json()["id"]
    _completed(local, job)
    events = [line for line in c.get(f"/v1/jobs/{job}/events").text.splitlines() if line.startswith("data:")]
    assert json.loads(events[-1][5:]) == {"video": f"{LOCAL}/v1/jobs/{job}/files/video.mp4"}
    assert c.get(f"{LOCAL}/v1/jobs/{job}/files/video.mp4").status_code == 200  # the link serves the video
    remix = c.post(f"/v1/videos/{job}/remix", json={"prompt": "make it night"}).json()
    assert remix["status"] == "queued" and remix["seconds"] == "0.43" and remix["size"] == "64x64", remix

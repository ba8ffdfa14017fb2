"""`mora serve` end to end: a real server in a subprocess on 127.0.0.1, the official `openai` client,
the native /v1/jobs API, SSE, errors, SIGKILL durability and concurrent clients (slow tier).

One server is shared by most tests (module scope); the auth/limits and SIGKILL tests start their own.
"""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

from PIL import Image  # noqa: E402

from mora import media  # noqa: E402

pytestmark = pytest.mark.slow
CHEAP = {"steps": 1, "num_frames": 3, "seed": 1, "metrics": False}  # seconds per job on tiny, on a CPU
WAIT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mora serve` in a subprocess; `.url` is its base URL, `.log` its stderr."""

    def __init__(self, folder: Path, *args: str, db: Path | None = None):
        self.folder, self.args, self.db = folder, args, db or folder / "jobs.db"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        cmd = [sys.executable, "-m", "mora.cli", "serve", "--port", str(self.port), "--out-dir",
               str(self.folder / "out"), "--db", str(self.db), "--preset", "tiny", "--device", "cpu", "--no-ui",
               *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        end = time.monotonic() + 60
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"server did not start: {self.log.read_text()}")

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("serve")).start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused-on-loopback", max_retries=0)


def _png(color="red", size=(96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def _wait_job(url: str, job_id: str) -> dict:
    end = time.monotonic() + WAIT_S
    while True:
        row = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()
        if row["status"] in ("completed", "failed", "cancelled"):
            return row
        assert time.monotonic() < end, row
        time.sleep(0.2)


def _frames(data: bytes, tmp_path: Path, name: str) -> tuple[int, int, float, int]:
    path = tmp_path / name
    path.write_bytes(data)
    return media.probe_video(path)


@pytest.fixture(scope="module")
def first_video(client):
    """One text-to-video made through client.videos.create_and_poll (shared by the tests below)."""
    video = client.videos.create_and_poll(model="tiny", prompt="a red fox running through snow",
                                          poll_interval_ms=200, extra_body=CHEAP)
    assert video.status == "completed", video.error
    return video


def test_openai_create_and_poll_and_every_variant(client, first_video, tmp_path):
    v = first_video
    assert v.progress == 100 and v.model == "tiny" and v.object == "video" and v.completed_at >= v.created_at
    w, h, fps, n = _frames(client.videos.download_content(v.id).content, tmp_path, "v.mp4")  # playable mp4
    assert v.size == f"{w}x{h}" and float(v.seconds) == pytest.approx(n / fps, abs=0.01) and n >= 3
    thumb = Image.open(io.BytesIO(client.videos.download_content(v.id, variant="thumbnail").content))
    assert thumb.size == (w, h)  # the first frame
    sheet = Image.open(io.BytesIO(client.videos.download_content(v.id, variant="spritesheet").content))
    assert sheet.height == h and sheet.width > 2 * w  # several frames side by side
    assert client.videos.retrieve(v.id).status == "completed"


def test_image_to_video_through_input_reference(client, server, first_video, tmp_path):
    made = client.videos.create(model="tiny", prompt="the red square drifts", extra_body=CHEAP,
                                input_reference=("square.png", _png(), "image/png"))
    done = client.videos.poll(made.id, poll_interval_ms=200)
    assert done.status == "completed", done.error
    assert _wait_job(server.url, made.id)["job"]["task"] == "image-to-video"
    # {"file_id": <earlier video>} (sent as JSON: openai-python cannot send a reference object in a form)
    ref = httpx.post(server.url + "/v1/videos", json={"prompt": "go on", "model": "tiny",
                                                      "input_reference": {"file_id": first_video.id}, **CHEAP})
    assert ref.status_code == 200, ref.text
    assert _wait_job(server.url, ref.json()["id"])["status"] == "completed"


def test_edit_extend_and_remix(client, server, first_video, tmp_path):
    source = client.videos.download_content(first_video.id).content
    _, _, fps, n = _frames(source, tmp_path, "src.mp4")
    extended = client.videos.extend(prompt="keeps running", seconds="1", video=("src.mp4", source, "video/mp4"),
                                    extra_body={"steps": 1, "seed": 2})
    edited = client.videos.edit(prompt="make it blue", video=("src.mp4", source, "video/mp4"),
                                extra_body={"steps": 1, "seed": 3})
    remixed = client.videos.remix(first_video.id, prompt="make it night")
    by_id = httpx.post(server.url + "/v1/videos/extensions", json={"prompt": "more", "seconds": "1",
                                                                   "video": {"id": first_video.id}, "steps": 1})
    assert by_id.status_code == 200, by_id.text
    assert remixed.remixed_from_video_id == first_video.id
    for made in (extended, edited, remixed):
        assert client.videos.poll(made.id, poll_interval_ms=200).status == "completed"
    ext = _wait_job(server.url, by_id.json()["id"])
    assert ext["job"]["task"] == "extend" and ext["job"]["num_frames"] == round(fps)  # 1 s at the source's fps
    _, _, _, n_ext = _frames(client.videos.download_content(extended.id).content, tmp_path, "e.mp4")
    assert n_ext > n
    assert _wait_job(server.url, edited.id)["job"]["task"] == "edit"


def test_list_and_delete(client, first_video):
    made = client.videos.create(model="tiny", prompt="to be deleted", extra_body=CHEAP)
    page = client.videos.list(limit=2)
    assert page.data[0].id == made.id and len(page.data) == 2 and page.has_more
    ids = [v.id for v in client.videos.list(order="asc")]  # every page (the client follows last_id)
    assert ids.index(first_video.id) < ids.index(made.id)
    gone = client.videos.delete(made.id)
    assert gone.deleted and gone.object == "video.deleted"
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(made.id)


def test_every_task_through_jobs(server, first_video):
    url, ref = server.url, f"job:{first_video.id}"
    jobs = [{"task": "text-to-video", "prompt": "a fox", **CHEAP},
            {"task": "extend", "video": ref, **CHEAP},
            {"task": "edit", "video": ref, "instruction": "make it blue", **CHEAP},
            {"task": "connect", "video_a": ref, "video_b": ref, **CHEAP, "num_frames": 5},  # 4k+1 frames
            {"task": "simulate", "prompt": "a village at dawn", **CHEAP},
            {"task": "story", "story": "A fox finds a lantern.", "shots": 1, "steps": 1, "seed": 1}]
    ids = []
    for job in jobs:
        r = httpx.post(url + "/v1/jobs", json=job, timeout=30)
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    upload = httpx.post(url + "/v1/jobs", data={"job": json.dumps({"task": "image-to-video", "prompt": "go", **CHEAP})},
                        files={"image": ("a.png", _png("blue"), "image/png")}, timeout=30)
    assert upload.status_code == 200, upload.text
    ids.append(upload.json()["id"])
    for job_id, task in zip(ids, [j["task"] for j in jobs] + ["image-to-video"], strict=True):
        row = _wait_job(url, job_id)
        assert row["status"] == "completed" and row["task"] == task, row
        assert row["manifest"]["task"] == task and row["progress"] == 100
        video = httpx.get(f"{url}/v1/jobs/{job_id}/files/video.mp4", timeout=10)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    assert httpx.get(f"{url}/v1/jobs/{ids[0]}/files/../jobs.db").status_code == 404  # only its own folder


def _sse(url: str) -> list[tuple[str, dict, int]]:
    out = []
    with httpx.stream("GET", url, timeout=WAIT_S) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        event = {}
        for line in r.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                key, _, value = line.partition(": ")
                event[key.rstrip(":")] = value
            elif not line and event:
                out.append((event["event"], json.loads(event["data"]), int(event["id"])))
                event = {}
    return out


def test_sse_events_in_order(server):
    job = httpx.post(server.url + "/v1/jobs", json={"task": "text-to-video", "prompt": "a kite", **CHEAP}).json()
    events = _sse(f"{server.url}/v1/jobs/{job['id']}/events")  # streams while the job runs
    kinds = [k for k, _, _ in events]
    assert kinds[-1] == "done" and kinds.count("step") == 3 and kinds[0] == "step"
    assert [i for _, _, i in events] == list(range(1, len(events) + 1))
    progress = [d["progress"] for k, d, _ in events if k == "progress"]
    assert progress == sorted(progress) and progress[-1] == 100
    assert [d["agent"] for k, d, _ in events if k == "step"] == _wait_job(server.url, job["id"])["manifest"]["route"]


def test_errors_in_openai_shape(client, server, tmp_path):
    with pytest.raises(openai.BadRequestError, match="model: 'sora-2' is not a preset") as e:
        client.videos.create(model="sora-2", prompt="x")
    assert e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError, match=r"seconds: '8' is not a length preset tiny makes; pass '1'"):
        client.videos.create(model="tiny", prompt="x", seconds="8")
    with pytest.raises(openai.BadRequestError, match=r"size: width: 100000 is out of range") as e:
        client.videos.create(model="tiny", prompt="x", size="100000x64")
    assert e.value.body["param"] == "size"
    with pytest.raises(openai.BadRequestError, match=r"^.*style: POST /v1/videos has no such field"):
        client.videos.create(model="tiny", prompt="x", extra_body={"style": "noir"})
    with pytest.raises(openai.BadRequestError, match="device: a request cannot set it"):
        client.videos.create(model="tiny", prompt="x", extra_body={"device": "cuda"})
    with pytest.raises(openai.APIStatusError, match="input_reference: 'notes.txt'") as e:
        client.videos.create(model="tiny", prompt="x", input_reference=("notes.txt", b"hello", "text/plain"))
    assert e.value.status_code == 415
    r = httpx.post(server.url + "/v1/jobs", json={"task": "text-to-video", "prompt": "x", "steps": 0})
    assert r.status_code == 422 and r.json()["error"]["param"] == "steps"
    assert r.json()["error"]["message"].startswith("steps: 0 is out of range")
    r = httpx.post(server.url + "/v1/jobs", json={"task": "paint", "prompt": "x"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("task: 'paint' is not a task")
    r = httpx.post(server.url + "/v1/jobs", json={"task": "extend", "video": "/etc/hosts"})
    assert r.status_code == 422 and "is a path on the server" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/v1/jobs/nope").status_code == 404
    assert set(httpx.get(server.url + "/v1/jobs/nope").json()["error"]) == {"message", "type", "param", "code"}


def test_idempotency_presets_health_metrics(server):
    body = {"task": "text-to-video", "prompt": "the same job", **CHEAP}
    a = httpx.post(server.url + "/v1/jobs", json=body, headers={"Idempotency-Key": "retry-1"}).json()
    b = httpx.post(server.url + "/v1/jobs", json=body, headers={"Idempotency-Key": "retry-1"}).json()
    assert a["id"] == b["id"]
    presets = {p["id"]: p for p in httpx.get(server.url + "/v1/presets").json()["data"]}
    assert presets["tiny"]["seconds"] == "1" and presets["tiny"]["size"] == "96x64"
    assert httpx.get(server.url + "/healthz").json()["worker"] is True
    _wait_job(server.url, a["id"])
    text = httpx.get(server.url + "/metrics").text
    assert "mora_queue_length " in text and 'mora_jobs{status="completed"}' in text
    assert int(text.split("mora_job_seconds_count ")[1].split()[0]) >= 1


def test_twenty_concurrent_clients(server):
    errors, ids = [], []

    def one(k: int) -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                r = c.post("/v1/jobs", json={"task": "text-to-video", "prompt": f"client {k}", **CHEAP})
                assert r.status_code == 200, r.text
                job_id = r.json()["id"]
                for _ in range(5):
                    assert c.get(f"/v1/jobs/{job_id}").json()["status"] in ("queued", "in_progress", "completed")
                ids.append(job_id)
        except AssertionError as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(set(ids)) == 20
    listed = {j["id"] for j in httpx.get(server.url + "/v1/jobs", params={"limit": 100}).json()["data"]}
    assert set(ids) <= listed
    for job_id in ids:  # cancel them: queued ones at once (keeps the test quick)
        assert httpx.delete(f"{server.url}/v1/jobs/{job_id}").json()["status"] in ("cancelled", "in_progress",
                                                                                   "completed")
    assert {_wait_job(server.url, i)["status"] for i in ids} <= {"cancelled", "completed"}


def test_auth_and_upload_limit(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nsecret-1\n")
    s = Server(tmp_path, "--api-key-file", str(keys), "--max-upload-mb", "1").start()
    try:
        assert httpx.get(s.url + "/healthz").status_code == 200  # public
        r = httpx.get(s.url + "/v1/videos")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        bad = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.videos.list()
        good = openai.OpenAI(base_url=s.url + "/v1", api_key="secret-1", max_retries=0)
        assert good.videos.list().data == []
        with pytest.raises(openai.APIStatusError) as e:
            good.videos.create(model="tiny", prompt="x", input_reference=("big.png", b"\0" * (2 << 20), "image/png"))
        assert e.value.status_code == 413
        assert "secret-1" not in s.log.read_text()  # keys are never logged
    finally:
        s.kill()


def test_sigkill_mid_job_loses_nothing(tmp_path):
    s = Server(tmp_path).start()
    slow = {"task": "text-to-video", "prompt": "a long one", "seed": 1, "steps": 8, "num_frames": 6}
    ids = [httpx.post(s.url + "/v1/jobs", json=slow).json()["id"]]
    ids += [httpx.post(s.url + "/v1/jobs", json={"task": "text-to-video", "prompt": f"p{k}", **CHEAP}).json()["id"]
            for k in range(2)]
    end = time.monotonic() + WAIT_S
    while httpx.get(f"{s.url}/v1/jobs/{ids[0]}").json()["status"] != "in_progress":
        assert time.monotonic() < end
        time.sleep(0.05)
    s.kill(signal.SIGKILL)
    assert not (tmp_path / "out" / ids[0] / "video.mp4").exists()  # nothing half-written
    again = Server(tmp_path, db=s.db).start()
    try:
        rows = [_wait_job(again.url, i) for i in ids]
        assert [r["status"] for r in rows] == ["completed"] * 3
        assert rows[0]["attempts"] == 2  # the interrupted job ran again
        assert all(Path(tmp_path / "out" / i / "video.mp4").is_file() for i in ids)
    finally:
        again.kill()


def test_the_start_line_is_information_not_a_warning(tmp_path):
    s = Server(tmp_path).start()
    s.kill()
    log = s.log.read_text()
    assert f"mora serve on {s.url}/v1 (jobs in {s.db})" in log, log
    assert "WARNING" not in log.split(f"mora serve on {s.url}")[0][-200:], log  # not logged as a warning

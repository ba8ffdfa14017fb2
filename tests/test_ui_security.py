"""The web page's file rules, attacked through its real HTTP routes (issue 28, findings 1 and 2).

`mora serve`'s page (`build_service(ui=True)`, FastAPI's TestClient over the whole app) and `mora ui`'s
(`mora.ui.launch` on 127.0.0.1): a client-named path in gradio's FileData is refused and nothing is
copied; `gradio_api/file=` serves neither the job database nor any job folder; a finished job's
files still reach the page that made it; a job the page submits carries its caller's key (owner).
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from mora import media

gr = pytest.importorskip("gradio", reason="the ui extra (gradio) is part of the dev install")
pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

TINY = {"Num frames": 3, "Width": 64, "Height": 64, "Steps": 1, "Metrics": False, "Seed": 1}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """gradio's upload cache for this test alone (GRADIO_TEMP_DIR), so what it holds can be checked."""
    folder = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    return folder


@pytest.fixture
def secrets(tmp_path):
    """Files of the server's that no page user uploaded: a picture and a video outside every job."""
    folder = tmp_path / "private"
    folder.mkdir()
    picture = folder / "secret.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(picture)
    frames = np.random.default_rng(8).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    video = media.write_video(frames, folder / "secret.mp4", fps=8)
    return picture, video


def _service(tmp_path, cache, *, db=None, out_dir=None, start_worker=False):
    from mora.service.app import build_service

    return build_service(db=db or tmp_path / "out" / "jobs.db", out_dir=out_dir or tmp_path / "out", ui=True,
                         start_worker=start_worker, defaults={"preset": "tiny"}, host={"device": "cpu"})


def _api(config: dict, first_input: str) -> tuple[str, list]:
    """The api name of the event whose first input is labelled `first_input`, and its default data."""
    components = {c["id"]: c for c in config["components"]}
    for dep in config["dependencies"]:
        labels = [components[i]["props"].get("label") for i in dep["inputs"]]
        if labels and labels[0] == first_input:
            data = []
            for i, label in zip(dep["inputs"], labels, strict=True):
                given = [v for k, v in TINY.items() if (label or "").startswith(k)]
                data.append(given[0] if given else components[i]["props"].get("value"))
            return dep["api_name"], data
    raise AssertionError(f"no event starts with the input {first_input!r}")


def _call(client, prefix: str, api: str, data: list, headers: dict | None = None) -> tuple[str, object]:
    """Call the page's function through gradio's HTTP API; returns its last SSE event and data."""
    r = client.post(f"{prefix}/gradio_api/call/{api}", json={"data": data}, headers=headers or {})
    assert r.status_code == 200, r.text
    r = client.get(f"{prefix}/gradio_api/call/{api}/{r.json()['event_id']}", headers=headers or {})
    event, payload = None, None
    for block in r.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines.get("event") in ("complete", "error"):
            event, payload = lines["event"], json.loads(lines.get("data", "null"))
    return event, payload


def _stop_at_submit(service, monkeypatch) -> list[dict]:
    """Record what the page submits (the job, its files' bytes, the keywords) and refuse it, so that no
    test waits on a queued job the worker does not run."""
    from mora.errors import InputError

    submitted = []

    def submit(job, **kw):
        files = {k: Path(v).read_bytes() for k, v in (kw.get("files") or {}).items()}
        submitted.append({"job": job, "files": files, **kw})
        raise InputError("test: recorded, not queued")

    monkeypatch.setattr(service.store, "submit", submit)
    return submitted


def _forged(path: Path) -> dict:
    return {"path": str(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def _holders(folder: Path, data: bytes) -> list[Path]:
    """The files under `folder` whose bytes are `data` (a copy of a secret)."""
    return [p for p in folder.rglob("*") if p.is_file() and p.read_bytes() == data] if folder.exists() else []


def test_served_page_refuses_a_forged_upload_path_and_copies_nothing(tmp_path, cache, secrets, monkeypatch):
    picture, _ = secrets
    service = _service(tmp_path, cache)
    submitted = _stop_at_submit(service, monkeypatch)
    with TestClient(service.app, base_url="http://127.0.0.1") as client:
        api, data = _api(client.get("/ui/config").json(), "Image")
        data[0], data[1] = _forged(picture), "a fox"
        event, payload = _call(client, "/ui", api, data)
    assert submitted == [], [s["files"].keys() for s in submitted]  # today: the server's file, as the job's image
    assert event == "error" and "it was not uploaded by a user" in payload["error"], payload  # gradio's check
    secret = picture.read_bytes()
    assert _holders(tmp_path / "out", secret) == [] and _holders(cache, secret) == []  # nothing copied
    service.store.close()


def test_served_evaluate_tab_refuses_a_forged_path(tmp_path, cache, secrets):
    _, video = secrets
    service = _service(tmp_path, cache)
    with TestClient(service.app, base_url="http://127.0.0.1") as client:
        event, payload = _call(client, "/ui", "evaluate", [_forged(video)])
    assert event == "error", payload  # today: a score card of the server's file
    assert _holders(cache, video.read_bytes()) == []
    service.store.close()


def test_served_page_never_serves_the_database(tmp_path, cache, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `mora serve` started in a folder holding outputs/serve/jobs.db
    service = _service(tmp_path, cache, db="outputs/serve/jobs.db", out_dir="outputs/serve")
    db = tmp_path / "outputs" / "serve" / "jobs.db"
    service.store.list()
    assert db.exists() and db.with_name("jobs.db-wal").exists()  # WAL: the open queue has both
    (tmp_path / "outputs" / "serve" / "notes.txt").write_text("another job's file")
    with TestClient(service.app, base_url="http://127.0.0.1") as client:
        for path in (db, db.with_name("jobs.db-wal"), "outputs/serve/jobs.db", "outputs/serve/jobs.db-wal",
                     tmp_path / "outputs" / "serve" / "notes.txt", "outputs/serve/notes.txt"):
            r = client.get(f"/ui/gradio_api/file={path}")
            assert r.status_code == 403 and b"SQLite" not in r.content, (path, r.status_code)
    service.store.close()


def test_finished_job_files_reach_only_the_page_that_made_it(tmp_path, cache):
    service = _service(tmp_path, cache, start_worker=True)
    picture = tmp_path / "upload.png"
    Image.new("RGB", (64, 64), "red").save(picture)
    try:
        with TestClient(service.app, base_url="http://127.0.0.1") as client:
            r = client.post("/ui/gradio_api/upload", files={"files": ("upload.png", picture.read_bytes(), "image/png")})
            [received] = r.json()
            api, data = _api(client.get("/ui/config").json(), "Image")
            data[0], data[1] = _forged(Path(received)), "a fox"  # what the browser sends after its upload
            event, payload = _call(client, "/ui", api, data)
            assert event == "complete", payload
            [row] = service.store.list()
            assert row.status == "completed", row.error
            assert Path(row.job["image"]).read_bytes() == picture.read_bytes()  # the upload, in the job's folder
            video = payload[3]["video"] if "video" in payload[3] else payload[3]
            r = client.get(urlsplit(video["url"]).path)  # the page's own link to the video
            assert r.status_code == 200 and r.content == Path(row.video).read_bytes()
            assert not Path(video["path"]).resolve().is_relative_to((tmp_path / "out").resolve())
            manifest = payload[6]
            assert Path(manifest["path"]).resolve().is_relative_to(cache.resolve())
            for path in (row.video, Path(row.video).with_suffix(".json"), row.job["image"]):
                assert client.get(f"/ui/gradio_api/file={path}").status_code == 403, path  # the folder, by path
    finally:
        service.worker.stop()
        service.store.close()


def test_page_submits_with_the_callers_owner(tmp_path, cache, monkeypatch):
    """Under keys, the page's jobs belong to the key of the request that started them (`BearerGate`)."""
    from mora.service.app import build_service
    from mora.service.security import owner_of

    service = build_service(db=tmp_path / "jobs.db", out_dir=tmp_path / "out", ui=True, start_worker=False,
                            defaults={"preset": "tiny"}, host={"device": "cpu"}, api_keys=frozenset({"ka", "kb"}))
    submitted = _stop_at_submit(service, monkeypatch)
    with TestClient(service.app, base_url="http://127.0.0.1") as client:
        api, data = _api(client.get("/ui/config", headers={"Authorization": "Bearer ka"}).json(), "Prompt")
        data[0] = "a fox"
        for key in ("ka", "kb"):
            _call(client, "/ui", api, data, headers={"Authorization": f"Bearer {key}"})
        assert client.get("/ui/config").status_code == 401  # the page itself needs a key
    assert [s["owner"] for s in submitted] == [owner_of("ka"), owner_of("kb")]
    service.store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mora_ui_serves_no_job_folder(tmp_path, cache, secrets, monkeypatch):
    """`mora ui` (ui.launch): another job's file in the output root is not served by path."""
    import mora.ui as ui

    root = tmp_path / "ui-jobs"
    other = root / "0123456789ab" / "image-to-video.mp4"
    other.parent.mkdir(parents=True)
    other.write_bytes(secrets[1].read_bytes())
    started = []
    real_launch = gr.Blocks.launch

    def launch(self, **kw):  # the real launch, not blocking the test
        started.append(self)
        return real_launch(self, **kw, prevent_thread_lock=True, quiet=True)

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    port = _free_port()
    ui.launch(port=port, preset="tiny", device="cpu", output_root=root)
    try:
        for path in (other, secrets[0]):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/file={path}", timeout=30)
            assert e.value.code == 403, path
    finally:
        started[0].close()


def test_served_page_refuses_a_forged_path_even_without_gradios_check(tmp_path, cache, secrets, monkeypatch):
    """The second guard: were gradio's own check off (its copy made), the page still takes only uploads."""
    from starlette.routing import Mount

    picture, _ = secrets
    service = _service(tmp_path, cache)
    submitted = _stop_at_submit(service, monkeypatch)
    [mount] = [r for r in service.app.routes if isinstance(r, Mount) and r.path == "/ui"]
    mount.app.get_blocks().has_launched = False  # gradio skips its check for a Blocks never launched
    with TestClient(service.app, base_url="http://127.0.0.1") as client:
        api, data = _api(client.get("/ui/config").json(), "Image")
        data[0], data[1] = _forged(picture), "a fox"
        event, payload = _call(client, "/ui", api, data)
        assert _call(client, "/ui", "evaluate", [_forged(secrets[1])]) == ("error", {
            "error": "video: 'secret.mp4' is not a file uploaded to this page; upload it with the Video field",
            "duration": None, "visible": True, "title": "Error"})
    assert submitted == []
    assert event == "error" and payload["error"] == ("image: 'secret.png' is not a file uploaded to this page; "
                                                     "upload it with the Image field"), payload
    service.store.close()

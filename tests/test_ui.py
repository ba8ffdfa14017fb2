"""The web page: it builds and serves, and a real headless Chromium makes videos through it.

The browser is Debian's chromium (/usr/bin/chromium), driven by Playwright without any browser
download. If it is missing the browser tests fail with the command that installs it: they never
skip silently.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

gr = pytest.importorskip("gradio", reason="the ui extra (gradio) is part of the dev install")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
JOB_TIMEOUT_MS = 240_000  # a tiny job takes seconds; the margin is for a busy 2-core CI machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from mora.ui import App

    root = tmp_path_factory.mktemp("ui-jobs")
    app = App(preset="tiny", device="cpu", output_root=root)
    demo = app.build()
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.file_access())  # `mora ui`'s file rules
    yield {"url": f"http://127.0.0.1:{port}/", "root": root, "demo": demo}
    demo.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium) to run the "
                    "browser tests", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1200, "height": 1500})
    page = context.new_page()
    page.goto(server["url"])
    page.get_by_role("button", name="Generate").first.wait_for()
    yield page
    context.close()


def _panel(page):
    """The visible tab's panel: every tab has its own Prompt box and Generate button."""
    return page.locator("[role=tabpanel]:visible").first


def _wait_for_video(page, width: int):
    """Wait until the visible tab's result video has loaded metadata; return (duration, width)."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('video')].some(v => v.readyState >= 1 && v.duration > 0)""",
        timeout=JOB_TIMEOUT_MS,
    )
    return page.evaluate(
        """() => { const v = [...document.querySelectorAll('video')].find(v => v.duration > 0);
                   return [v.duration, v.videoWidth]; }"""
    )


def test_page_serves_every_tab(server):
    html = urllib.request.urlopen(server["url"], timeout=30).read().decode()
    assert "Mora" in html
    config = server["demo"].config
    labels = {c["props"].get("label") for c in config["components"] if c.get("type") == "tabitem"}
    assert {"Text to video", "Image to video", "Extend", "Edit", "Connect", "Simulate", "Story", "Evaluate"} <= labels


def test_jobs_share_one_queue_slot(server):
    starts = [fn for fn in server["demo"].fns.values() if fn.name == "start"]
    assert len(starts) == 6  # one Generate per task tab
    assert {fn.concurrency_id for fn in starts} == {"mora-job"}
    assert all(fn.concurrency_limit in (1, "default") for fn in starts)
    story = [fn for fn in server["demo"].fns.values() if fn.name == "start_story"]
    assert len(story) == 1 and story[0].concurrency_id == "mora-job"  # the Story tab waits for the same slot
    assert server["demo"]._queue.default_concurrency_limit == 1


def test_ui_binds_to_localhost_by_default():
    import inspect

    from mora.cli import build_parser
    from mora.ui import launch

    assert inspect.signature(launch).parameters["host"].default == "127.0.0.1"
    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"


def test_text_to_video_in_the_browser(page, server):
    _panel(page).get_by_label("Prompt", exact=True).fill("a red fox running through snow")
    _panel(page).get_by_role("button", name="Generate").click()
    duration, width = _wait_for_video(page, 96)
    assert duration > 0 and width == 96  # the tiny preset's 96x64 video plays in the browser
    route = page.get_by_label("Route").first.input_value()
    assert route == "prompt_agent -> text_to_image_agent -> image_to_video_agent"
    assert page.get_by_label("Enhanced prompt").first.input_value().startswith("a red fox running through snow")
    assert "image_to_video_agent: animating" in page.content()
    shot = os.environ.get("MORA_UI_SCREENSHOT")
    if shot:  # `MORA_UI_SCREENSHOT=docs/ui.png pytest tests/test_ui.py` refreshes the README's picture
        page.screenshot(path=shot, full_page=True)


def test_review_in_the_page(page):
    _panel(page).get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")
    _panel(page).get_by_label("Review the first frame").check()
    _panel(page).get_by_role("button", name="Generate").click()
    approve = page.get_by_role("button", name="Approve").first
    approve.wait_for(state="visible", timeout=JOB_TIMEOUT_MS)
    assert page.get_by_label("First frame").first.is_visible()
    assert not page.locator("video").first.is_visible()  # no video before the decision
    approve.click()
    duration, _ = _wait_for_video(page, 96)
    assert duration > 0


def test_bad_input_shows_the_cli_message_and_server_keeps_serving(page, server):
    page.get_by_role("tab", name="Image to video").click()
    _panel(page).get_by_label("Prompt", exact=True).fill("the fox leaps")
    _panel(page).get_by_role("button", name="Generate").click()
    page.get_by_text("image: missing; image-to-video needs image and prompt").first.wait_for(timeout=60_000)
    assert urllib.request.urlopen(server["url"], timeout=30).status == 200


def test_upload_is_kept_in_the_job_folder(page, server, tmp_path):
    picture = tmp_path / "upload.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (75, 113, 3), dtype=np.uint8)).save(picture)
    page.get_by_role("tab", name="Image to video").click()
    _panel(page).locator("input[type=file]").first.set_input_files(str(picture))
    _panel(page).get_by_label("Prompt", exact=True).fill("the fox leaps")
    _panel(page).get_by_role("button", name="Generate").click()
    _wait_for_video(page, 0)
    manifests = sorted(Path(server["root"]).glob("*/image-to-video.json"))
    assert manifests, "the job wrote no manifest in its folder"
    manifest = json.loads(manifests[-1].read_text())
    image = Path(manifest["inputs"]["image"])
    assert image.name == "image-upload.png"  # named by its input: video_a and video_b may share a file name
    assert image.parent == manifests[-1].parent / "inputs"  # the job's own copy, not Gradio's cache


def test_story_in_the_browser(page, server):
    page.get_by_role("tab", name="Story").click()
    panel = _panel(page)
    panel.get_by_label("Story", exact=True).fill("A fox wakes in its den. The fox runs through the snow.")
    panel.get_by_label("Shots", exact=True).fill("2")
    panel.get_by_label("Seconds per shot (empty: preset default)").fill("0.6")
    panel.get_by_role("button", name="Generate").click()
    duration, width = _wait_for_video(page, 96)
    assert duration > 0 and width == 96  # the film plays in the browser
    contact = panel.locator("img[src*='story_contact']").first  # the contact sheet, one frame per shot
    contact.wait_for(timeout=60_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=contact.element_handle())
    assert "storyboard" in page.content() and "2 shots" in panel.inner_text()
    boards = sorted(Path(server["root"]).glob("*/story_storyboard.json"))
    assert boards and len(json.loads(boards[-1].read_text())["shots"]) == 2
    shown = panel.locator("[data-testid=json]").first.inner_text()
    assert shown.count("prompt") >= 2, shown  # the storyboard's two shots are in the JSON view
    assert "image_to_video_agent: shot 2/2" in panel.inner_text()  # one line per agent step


def test_story_bad_input_shows_the_message(page, server):
    page.get_by_role("tab", name="Story").click()
    _panel(page).get_by_role("button", name="Generate").click()
    page.get_by_text("story: '' is empty or not text; pass a non-empty description").first.wait_for(timeout=60_000)
    assert urllib.request.urlopen(server["url"], timeout=30).status == 200


def test_story_storyboard_only_stops_after_the_storyboard(tmp_path):
    from mora.ui import App

    steps = list(App(preset="tiny", device="cpu", output_root=tmp_path).run_story(
        "A fox wakes. The fox runs. The fox sleeps.", 3, None, True))
    log, board, video, contact, manifest = steps[-1]
    assert len(board["shots"]) == 3 and video is None and contact is None
    assert manifest.endswith("story_storyboard.json") and "done: storyboard only" in log
    assert not list(tmp_path.glob("*/story.mp4"))


def test_page_fields_seed_zero_uploads_and_sessions(tmp_path):
    """Bug 4: seed 0 was "random", same-named uploads overwrote each other, the session table only grew."""
    import mora.ui as ui
    from mora.workflows.jobspec import OPTIONS, task_options

    # the page's fields are the job model's per-job options (the preset is the page's own)
    assert ui.page_fields("text-to-video") == [o.name for o in task_options("text-to-video", ("job", "person"))
                                               if o.name != "preset"]
    assert ui._value(OPTIONS["seed"], 0) == 0 and ui._value(OPTIONS["seed"], "") is None
    app = ui.App(preset="tiny", device="cpu", output_root=tmp_path)
    clip_a, clip_b = tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4"
    for path, data in ((clip_a, b"A"), (clip_b, b"B")):
        path.parent.mkdir()
        path.write_bytes(data)
    job_dir = app._job_dir()
    kept = [app._keep_upload(str(p), job_dir, key) for p, key in ((clip_a, "video_a"), (clip_b, "video_b"))]
    assert kept[0] != kept[1] and [Path(k).read_bytes() for k in kept] == [b"A", b"B"]
    updates = list(app.run_job("text-to-video", {"prompt": "a fox"}, {"seed": 0, "num_frames": None}, False))
    manifest = json.loads(Path(updates[-1][-1]).read_text())
    assert manifest["seed"] == 0  # seed 0 is a seed
    assert ui._SESSIONS == {}  # the finished job's session is gone

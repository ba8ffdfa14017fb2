"""The demo notebooks run top to bottom on the tiny preset, offline, in a kernel of this interpreter.

Each notebook is executed with nbclient in a fresh temporary working directory; the kernel
inherits this process's environment (MORA_HOME from conftest, so the tiny models are shared with
the other tests; HF_HUB_OFFLINE=1; no OAI_CONFIG_LIST unless a test sets one).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TASKS = ("text-to-video", "image-to-video", "extend", "edit", "connect", "simulate")
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 600
QUICKSTART_VIDEOS = {"text_to_video.mp4", "image_to_video.mp4", "extend.mp4", "edit.mp4", "connect.mp4",
                     "simulate.mp4"}


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory) -> Path:
    """A `python3` kernelspec that starts this interpreter, so the kernel imports this venv's mora."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter-prefix")
    install(prefix=str(prefix), kernel_name="python3", display_name="Python 3 (tests)")
    return prefix / "share" / "jupyter"


@pytest.fixture
def run_notebook(jupyter_path, tmp_path, monkeypatch):
    """Execute a notebook in `tmp_path`; returns (executed notebook, all its text output)."""
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))  # searched before any other kernel folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("OAI_CONFIG_LIST", raising=False)

    def run(name: str, env: dict | None = None):
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec("python3")
        assert spec.argv[0] == sys.executable, f"kernel python3 would start {spec.argv[0]}, not {sys.executable}"
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        client = nbclient.NotebookClient(
            nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, allow_errors=False,
            resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
        )
        client.execute()  # raises CellExecutionError, with the cell's traceback, if any cell fails
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, errors
        return nb, text_of(nb)

    return run


def text_of(nb) -> str:
    """The printed and displayed text of all code cells, in order."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stdout":
                parts.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def images_of(nb) -> int:
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_scripted_group_chat.ipynb", "03_conversational.ipynb"])
def test_notebooks_are_stored_clean(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), "store notebooks without outputs"
    assert any('PRESET = "tiny"' in c.source for c in code)


def test_quickstart_runs_all_six_tasks(run_notebook, tmp_path):
    nb, text = run_notebook("01_quickstart.ipynb")
    out = tmp_path / "outputs" / "notebooks" / "quickstart"
    videos = {p.name for p in out.glob("*.mp4")}
    assert videos == QUICKSTART_VIDEOS
    for video in videos:  # each with its manifest, on the tiny preset
        manifest = json.loads((out / video).with_suffix(".json").read_text())
        assert manifest["preset"] == "tiny" and manifest["video"]["num_frames"] >= 2
    # later tasks used earlier outputs
    image_to_video = json.loads((out / "image_to_video.json").read_text())
    assert Path(image_to_video["inputs"]["image"]).parent.name == "text_to_video_artifacts"
    connect = json.loads((out / "connect.json").read_text())
    assert Path(connect["inputs"]["video_a"]).name == "text_to_video.mp4"
    assert Path(connect["inputs"]["video_b"]).name == "edit.mp4"
    for task in TASKS:
        assert f"task:            {task}\n" in text
    assert "route:           prompt_agent -> text_to_image_agent -> image_to_video_agent" in text
    assert "route:           video_connection_agent" in text
    enhanced = [line for line in text.splitlines() if line.startswith("enhanced prompt: ")]
    assert len(enhanced) == 6 and "red fox" in enhanced[0]
    assert enhanced[4] == "enhanced prompt: (none: no prompt agent on this route)"  # connect
    assert "6 videos in outputs/notebooks/quickstart" in text
    assert images_of(nb) == 6  # one frame strip per task


def test_scripted_group_chat_shows_routes_and_messages(run_notebook, tmp_path):
    nb, text = run_notebook("02_scripted_group_chat.ipynb")
    # the route table, in the order of mora.TASKS
    table = [line.split(" (")[0] for line in text.splitlines() if line.split(" (")[0] in TASKS]
    assert list(dict.fromkeys(table)) == list(TASKS) and len(table) == 8
    assert ("text-to-video (prompt)" in text and "prompt_agent -> text_to_image_agent[text_to_image] -> (review gate) "
            "-> image_to_video_agent[image_to_video]" in text)
    assert "video_connection_agent[connect_videos]" in text
    # the run, in route order
    assert "agents that acted: prompt_agent -> text_to_image_agent -> image_to_video_agent" in text
    assert ("speakers: user_proxy -> prompt_agent -> text_to_image_agent -> user_proxy -> image_to_video_agent "
            "-> user_proxy") in text
    assert "tool call call_" in text and ": text_to_image(" in text and ": image_to_video(" in text
    assert "tool response to call_" in text
    artifacts = tmp_path / "outputs" / "notebooks" / "scripted_chat" / "artifacts"
    assert len(list(artifacts.glob("*.png"))) == 1 and len(list(artifacts.glob("*.mp4"))) == 1
    assert images_of(nb) == 1


def test_conversational_stops_cleanly_without_llm(run_notebook, tmp_path):
    nb, text = run_notebook("03_conversational.ipynb")
    assert "No LLM configured: mora.chat needs one." in text
    assert "Skipped: no LLM configured." in text
    assert not (tmp_path / "outputs").exists()


def test_conversational_runs_a_chat_with_an_llm(run_notebook, tmp_path, fake_openai):
    fake_openai.push_tool_call("start_task", {"task": "text-to-video", "prompt": "a red fox running through snow"})
    nb, text = run_notebook("03_conversational.ipynb", env={"OAI_CONFIG_LIST": json.dumps(fake_openai.config_list)})
    assert "LLM configured: model 'fake-model'" in text
    assert "task:            text-to-video" in text
    assert "route:           prompt_agent -> text_to_image_agent -> image_to_video_agent" in text
    assert (tmp_path / "outputs" / "notebooks" / "conversational" / "chat.mp4").is_file()
    assert fake_openai.requests[0]["tools"][0]["function"]["name"] == "start_task"
    assert "sk-test" not in text  # the key is never shown
    assert images_of(nb) == 1

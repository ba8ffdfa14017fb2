"""The demo notebooks: stored executed and current, and they run top to bottom on the tiny preset, offline.

Stored: `notebooks/make_notebooks.py` generates each notebook and executes it; the stored copies
must be its current cells, executed (a reader on GitHub sees the outputs and the frame strips),
with no errors, library noise or temporary paths in their outputs.

Run: each notebook is executed again with nbclient in a kernel of this interpreter, its working
directory a fresh temporary folder and MORA_OUTPUTS another one (the notebooks write there, never
to their working directory). The kernel inherits this process's environment (MORA_HOME from
conftest, so the tiny models are shared with the other tests; HF_HUB_OFFLINE=1; no
OAI_CONFIG_LIST unless a test sets one).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_scripted_group_chat.ipynb", "03_conversational.ipynb", "04_fine_tuning.ipynb",
         "05_story.ipynb"]
TASKS = ("text-to-video", "image-to-video", "extend", "edit", "connect", "simulate")
CELL_TIMEOUT_S = 600
QUICKSTART_VIDEOS = {"text_to_video.mp4", "image_to_video.mp4", "extend.mp4", "edit.mp4", "connect.mp4",
                     "simulate.mp4"}
# Library chatter a reader must never see in a notebook: loading and progress notices, tokenizer warnings.
NOISE = (
    "TqdmWarning",
    "IProgress",
    "Loading pipeline components",
    "Loading weights",
    "torchvision",
    "Token indices sequence length",
    "truncated because CLIP",
)
# An absolute path of a temporary or home folder (the notebooks print paths relative to their output folder).
MACHINE_PATH = re.compile(r"(?<![\w.~$])/(tmp|var|private|home|root|Users|work)/|mora-notebooks-|pytest-of-")


def generator():
    """notebooks/make_notebooks.py, imported (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOKS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory) -> Path:
    """A `python3` kernelspec that starts this interpreter, so the kernel imports this venv's mora."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter-prefix")
    install(prefix=str(prefix), kernel_name="python3", display_name="Python 3 (tests)")
    return prefix / "share" / "jupyter"


@pytest.fixture
def outputs(tmp_path) -> Path:
    """MORA_OUTPUTS of the notebook runs: the notebooks write under <it>/notebooks/<name>/."""
    return tmp_path / "outputs"


@pytest.fixture
def run_notebook(jupyter_path, tmp_path, outputs, monkeypatch):
    """Execute a notebook; returns (executed notebook, its printed and displayed text)."""
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))  # searched before any other kernel folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MORA_OUTPUTS", str(outputs))
    monkeypatch.delenv("OAI_CONFIG_LIST", raising=False)
    workdir = tmp_path / "work"  # the kernel's working directory: nothing may be written there
    workdir.mkdir()

    def run(name: str, env: dict | None = None):
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        from jupyter_client.kernelspec import KernelSpecManager

        spec = KernelSpecManager().get_kernel_spec("python3")
        assert spec.argv[0] == sys.executable, f"kernel python3 would start {spec.argv[0]}, not {sys.executable}"
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        client = nbclient.NotebookClient(
            nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, allow_errors=False,
            resources={"metadata": {"path": str(workdir)}},
        )
        client.execute()  # raises CellExecutionError, with the cell's traceback, if any cell fails
        errors = [o for c in code_cells(nb) for o in c.outputs if o.output_type == "error"]
        assert not errors, errors
        assert_quiet(nb)
        assert str(tmp_path) not in all_output(nb), "print paths relative to the output folder"
        assert not list(workdir.iterdir()), "the notebook wrote into its working directory"
        return nb, text_of(nb)

    return run


def code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def text_of(nb) -> str:
    """The printed and displayed text of all code cells, in order."""
    parts = []
    for cell in code_cells(nb):
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stdout":
                parts.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def all_output(nb) -> str:
    """Everything the code cells wrote: stdout, stderr, displayed text and tracebacks."""
    parts = []
    for cell in code_cells(nb):
        for output in cell.outputs:
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                parts.append(output.get("data", {}).get("text/plain", ""))
            elif output.output_type == "error":
                parts.append("\n".join([f"{output.ename}: {output.evalue}", *output.traceback]))
    return "\n".join(parts)


def assert_quiet(nb) -> None:
    noisy = [line for line in all_output(nb).splitlines() if any(phrase in line for phrase in NOISE)]
    assert not noisy, f"library noise in the notebook's outputs: {noisy}"


def images_of(nb) -> int:
    """How many outputs show an image (frame strips)."""
    return sum(1 for c in code_cells(nb) for o in c.outputs
               if {"image/png", "image/jpeg"} & set(o.get("data", {})))


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebooks_are_executed_current_and_clean(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = code_cells(nb)
    assert any('PRESET = "tiny"' in c.source for c in code)
    # the generator's current cells (regenerate after editing make_notebooks.py)
    make = generator()
    made = make.notebook(make.NOTEBOOKS[name])
    assert [(c.cell_type, c.source) for c in nb.cells] == [(c.cell_type, c.source) for c in made.cells], (
        f"{name} is not make_notebooks.py's current output: run `python notebooks/make_notebooks.py`")
    # executed top to bottom in one kernel, without errors
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), (
        f"{name} is stored unexecuted or partly executed: run `python notebooks/make_notebooks.py`")
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert_quiet(nb)
    machine = [line for line in all_output(nb).splitlines() if MACHINE_PATH.search(line)]
    assert not machine, f"machine-specific paths in the stored outputs: {machine}"
    # every notebook says where its outputs go; none depends on the folder Jupyter started in
    assert any('os.environ.get("MORA_OUTPUTS", Path.home() / "mora-outputs")' in c.source for c in code)
    assert not any('Path("outputs' in c.source for c in code)


def test_stored_quickstart_shows_frames_and_how_to_open_it():
    nb = nbformat.read(NOTEBOOKS / "01_quickstart.ipynb", as_version=4)
    assert images_of(nb) == 6  # one frame strip per task
    assert "6 videos in $MORA_OUTPUTS/notebooks/quickstart" in text_of(nb)
    intro = nb.cells[0].source
    assert 'pip install -e ".[notebooks]"' in intro and "jupyter lab notebooks/" in intro
    pyproject = (ROOT / "pyproject.toml").read_text()  # the extra that intro installs
    assert re.search(r'^notebooks = \[[^\]]*"jupyterlab', pyproject, re.MULTILINE)
    assert images_of(nbformat.read(NOTEBOOKS / "02_scripted_group_chat.ipynb", as_version=4)) == 1


def test_quickstart_runs_all_six_tasks(run_notebook, outputs):
    nb, text = run_notebook("01_quickstart.ipynb")
    out = outputs / "notebooks" / "quickstart"
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
    assert "video:           text_to_video.mp4 (" in text  # paths relative to the output folder
    assert "first frame: text_to_video_artifacts/" in text
    assert "6 videos in $MORA_OUTPUTS/notebooks/quickstart" in text
    assert images_of(nb) == 6  # one frame strip per task


def test_quickstart_runs_again_over_its_own_outputs(run_notebook, outputs):
    """A second run replaces the first one's videos (overwrite=True) instead of stopping at the first task."""
    run_notebook("01_quickstart.ipynb")
    nb, text = run_notebook("01_quickstart.ipynb")
    assert "6 videos in $MORA_OUTPUTS/notebooks/quickstart" in text
    assert {p.name for p in (outputs / "notebooks" / "quickstart").glob("*.mp4")} == QUICKSTART_VIDEOS


def test_scripted_group_chat_shows_routes_and_messages(run_notebook, outputs):
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
    assert "tool response to call_" in text and ": boat_artifacts/" in text  # relative to the output folder
    artifacts = outputs / "notebooks" / "scripted_chat" / "boat_artifacts"
    videos = [p.name for p in artifacts.glob("*.mp4") if "-segment" not in p.name]  # not the chained segments
    assert len(list(artifacts.glob("*.png"))) == 1 and len(videos) == 1
    assert images_of(nb) == 1


def test_fine_tuning_trains_plots_uses_the_adapter_and_runs_one_data_free_iteration(run_notebook, outputs):
    nb, text = run_notebook("04_fine_tuning.ipynb")
    root = outputs / "notebooks" / "fine_tuning"
    assert "adapter:     run/adapter" in text and "steps:       8" in text and "||z|| =" in text
    assert (root / "run" / "adapter" / "adapter.json").is_file() and (root / "with_adapter.mp4").is_file()
    assert json.loads((root / "with_adapter.json").read_text())["adapter"]["agents"]
    assert "iteration 1: 4 candidates, 2 kept" in text and "single_judge" in text
    assert (root / "data_free" / "data" / "iter-1" / "metadata.jsonl").is_file()
    assert images_of(nb) == 4  # the loss/modulation plot, the adapter video's frames, two contact sheets


def test_stored_story_shows_its_contact_sheet_as_jpeg():
    nb = nbformat.read(NOTEBOOKS / "05_story.ipynb", as_version=4)
    images = [o.data for c in code_cells(nb) for o in c.outputs if {"image/png", "image/jpeg"} & set(o.get("data", {}))]
    assert len(images) == 1 and set(images[0]) == {"image/jpeg", "text/plain"}  # no PNG copy: the file stays small
    assert (NOTEBOOKS / "05_story.ipynb").stat().st_size < 100_000
    assert "the film is noise" in text_of(nb)


def test_story_makes_a_three_shot_film(run_notebook, outputs):
    nb, text = run_notebook("05_story.ipynb")
    root = outputs / "notebooks" / "story"
    manifest = json.loads((root / "fox_story.json").read_text())
    assert manifest["preset"] == "tiny" and manifest["task"] == "story"
    assert [s["index"] for s in manifest["shots"]] == [1, 2, 3] and [s["seed"] for s in manifest["shots"]] == [0, 1, 2]
    assert [s["transition"] for s in manifest["shots"][:2]] == ["connect", "cut"]  # the notebook's edit
    assert len(manifest["transitions"]) == 1 and manifest["metrics"]["cuts"]["intended"]
    assert (root / "fox_story.mp4").is_file() and (root / "fox_story_contact.png").is_file()
    assert json.loads((root / "fox_story_storyboard.json").read_text())["shots"][1]["transition"] == "cut"
    assert sorted(p.name for p in (root / "fox_story_artifacts").iterdir()) == [
        "shot-01", "shot-02", "shot-03", "transition-01"]
    # the storyboard, then the film, its table, seams, cuts and route; paths relative to the output folder
    assert "storyboard: fox_story_storyboard.json" in text and "title:      A red fox wakes" in text
    assert "shot 3: 0.6 s, close-up, then the end" in text
    assert "film:          fox_story.mp4 (" in text and "contact sheet: fox_story_contact.png" in text
    assert re.search(r"^ {3}2 {5}1 +\d+ {5}0\.6  cut$", text, re.MULTILINE)
    assert "shot 2 | shot 3" in text and "seam continuity (1 = seamless):" in text
    assert f"    intended   {manifest['metrics']['cuts']['intended']}" in text
    assert "shot-02        image_to_image_agent -> image_to_video_agent" in text
    assert "transition-01  video_connection_agent" in text
    assert images_of(nb) == 1  # the contact sheet


def test_conversational_stops_cleanly_without_llm(run_notebook, outputs):
    nb, text = run_notebook("03_conversational.ipynb")
    assert "No LLM configured: mora.chat needs one." in text
    assert "Skipped: no LLM configured." in text
    assert not outputs.exists()  # nothing is written without an LLM


def test_conversational_runs_a_chat_with_an_llm(run_notebook, outputs, fake_openai):
    fake_openai.push_tool_call("start_task", {"task": "text-to-video", "prompt": "a red fox running through snow"})
    nb, text = run_notebook("03_conversational.ipynb", env={"OAI_CONFIG_LIST": json.dumps(fake_openai.config_list)})
    assert "LLM configured: model 'fake-model'" in text
    assert "task:            text-to-video" in text
    assert "route:           prompt_agent -> text_to_image_agent -> image_to_video_agent" in text
    assert "video:           chat.mp4 (" in text
    assert (outputs / "notebooks" / "conversational" / "chat.mp4").is_file()
    assert fake_openai.requests[0]["tools"][0]["function"]["name"] == "start_task"
    assert "sk-test" not in text  # the key is never shown
    assert images_of(nb) == 1

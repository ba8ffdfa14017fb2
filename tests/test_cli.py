"""The `mora` command, run for real in subprocesses (the console script, offline, tiny preset).

Checks the command line contract of ARCHITECTURE.md: help without heavy imports, outputs and
manifest of a run, one-line `mora: error: ...` (exit 2) for every kind of bad input with nothing
written, the review gate driven through stdin, `mora eval`, and Ctrl-C (exit 130).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import gradient_frames

from mora import media

T2V_ROUTE = ["prompt_agent", "text_to_image_agent", "image_to_video_agent"]
TASKS = ["text-to-video", "image-to-video", "extend", "edit", "connect", "simulate"]
RUN_TIMEOUT = 600  # seconds; a tiny run takes 5-60 s depending on the machine's load


def _mora_cmd() -> list[str]:
    script = Path(sys.executable).with_name("mora")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mora.cli"]


def _env() -> dict[str, str]:
    env = dict(os.environ)  # keeps MORA_HOME from conftest: tiny models are built once per session
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("OAI_CONFIG_LIST", None)
    return env


def mora(*args: str, cwd: Path, input: str | None = None, timeout: float = RUN_TIMEOUT):
    """Run `mora ARGS...` in `cwd`; stdin is `input` (empty when None, so nothing waits on a tty)."""
    return subprocess.run(
        [*_mora_cmd(), *args], cwd=cwd, env=_env(), input=input or "", capture_output=True, text=True,
        timeout=timeout,
    )


def _no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


def _one_error_line(proc) -> str:
    """The single `mora: error: ...` line of a usage failure."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{proc.stderr}"
    assert lines[0].startswith("mora: error: "), lines[0]
    return lines[0]


def _steps(stderr: str) -> list[tuple[str, str]]:
    """(number, agent) of the `[n] agent: doing` progress lines (bars may share a line via \\r)."""
    return re.findall(r"\[(\d+)\] ([a-z_]+_agent): \S", stderr)


def _pngs(folder: Path) -> list[Path]:
    """Finished PNGs: atomic writes go through hidden temp files, which pathlib's glob also matches."""
    return sorted(p for p in folder.glob("*.png") if not p.name.startswith("."))


def _job_files(cwd: Path, out: str) -> tuple[Path, Path, Path]:
    video = cwd / out
    return video, video.with_suffix(".json"), video.with_name(f"{video.stem}_artifacts")


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    """Input files, good and bad, by absolute path."""
    d = tmp_path_factory.mktemp("cli-inputs")
    media.write_video(gradient_frames(16, 96, 64), d / "clip.mp4", fps=8)
    data = (d / "clip.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (d / "empty.mp4").write_bytes(b"")
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("these are notes, not an image\n")
    (d / "notes.mp4").write_text("these are notes, not a video\n")
    (d / "somedir").mkdir()
    (d / "bad_llm.json").write_text('[{"model": "gpt-4o", ')
    media.write_image(media.Video(gradient_frames(1, 96, 64), fps=1).pil_frames()[0], d / "frame.png")
    return d


@pytest.fixture(scope="module")
def fox_run(tmp_path_factory):
    """One successful quiet --json text-to-video run, shared by the tests that inspect its outputs."""
    cwd = tmp_path_factory.mktemp("cli-fox")
    proc = mora("text-to-video", "a red fox running through snow", "--preset", "tiny", "--seed", "0",
                "--out", "out/fox.mp4", "--quiet", "--json", cwd=cwd)
    return cwd, proc


# --------------------------------------------------------------------------------------------
# Help


def test_help_lists_every_command(tmp_path):
    proc = mora("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for command in [*TASKS, "chat", "eval"]:
        assert re.search(rf"^\s+{re.escape(command)}\b", proc.stdout, re.M), f"{command} not in:\n{proc.stdout}"
    assert proc.stderr == ""


def test_task_help_lists_common_options(tmp_path):
    proc = mora("text-to-video", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "prompt" in proc.stdout
    for option in ("--preset", "--out", "--seed", "--num-frames", "--width", "--height", "--steps", "--fps",
                   "--device", "--profile", "--llm-config", "--review", "--json", "--quiet"):
        assert option in proc.stdout, option


@pytest.mark.parametrize("command", TASKS + ["chat", "eval"])
def test_every_command_has_help(tmp_path, command):
    proc = mora(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: mora {command}")


def test_help_imports_no_heavy_library(tmp_path):
    code = (
        "import sys\n"
        "from mora.cli import main\n"
        "for argv in (['--help'], ['text-to-video', '--help'], ['eval', '--help'], ['--version']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (argv, e.code)\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_version_and_no_command(tmp_path):
    proc = mora("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("mora ")
    proc = mora(cwd=tmp_path)
    assert proc.returncode == 2
    assert "usage: mora" in proc.stderr


# --------------------------------------------------------------------------------------------
# A successful run


def test_text_to_video_json_manifest(fox_run):
    cwd, proc = fox_run
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["task"] == "text-to-video"
    assert manifest["preset"] == "tiny"
    assert manifest["seed"] == 0
    assert manifest["prompt"] == "a red fox running through snow"
    assert manifest["route"] == T2V_ROUTE
    video, manifest_path, artifacts = _job_files(cwd, "out/fox.mp4")
    assert video.is_file() and manifest_path.is_file() and artifacts.is_dir()
    assert json.loads(manifest_path.read_text()) == manifest
    assert manifest["video"]["path"] == "out/fox.mp4"
    written = media.read_video(video)
    assert (written.num_frames, written.width, written.height) == (
        manifest["video"]["num_frames"], manifest["video"]["width"], manifest["video"]["height"])
    names = sorted(p.name for p in artifacts.iterdir())
    # the first frame, the video and its two chained segments (tiny SVD makes 2), each on disk
    assert names == ["image_to_video-002-segment1.mp4", "image_to_video-002-segment2.mp4", "image_to_video-002.mp4",
                     "text_to_image-001.png"], names
    for path in manifest["artifacts"]:
        assert (cwd / path).is_file(), path
    assert "api_key" not in proc.stdout
    # quiet: no traceback, no step lines, no diffusion bars
    _no_traceback(proc)
    assert _steps(proc.stderr) == []
    assert "it/s" not in proc.stderr and "s/it" not in proc.stderr and "%|" not in proc.stderr


def test_progress_lines_and_default_out(tmp_path):
    proc = mora("text-to-video", "a red fox running through snow", "--preset", "tiny", "--seed", "1", "--steps", "1",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    _no_traceback(proc)
    assert _steps(proc.stderr) == [("1", "prompt_agent"), ("2", "text_to_image_agent"), ("3", "image_to_video_agent")]
    # default --out: outputs/<task>-<timestamp>.mp4 in the working directory
    videos = sorted((tmp_path / "outputs").glob("*.mp4"))
    assert len(videos) == 1, list((tmp_path / "outputs").iterdir())
    assert re.fullmatch(r"text-to-video-\d{8}-\d{6}-\d{6}\.mp4", videos[0].name), videos[0].name
    assert videos[0].with_suffix(".json").is_file()
    assert videos[0].with_name(f"{videos[0].stem}_artifacts").is_dir()
    # stdout: the path line, nothing else
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    assert lines[0].startswith(f"outputs/{videos[0].name}"), lines[0]
    assert "frames" in lines[0]


# --------------------------------------------------------------------------------------------
# Bad input: exit 2, one line, nothing written

# (id, args with {d} for the inputs folder, texts the error line must contain)
BAD_INPUTS = [
    ("missing-file", ["image-to-video", "{d}/nope.png", "a cat"], ["image", "nope.png", "does not exist"]),
    ("directory", ["extend", "{d}/somedir"], ["video", "somedir", "directory"]),
    ("empty-video", ["extend", "{d}/empty.mp4"], ["video", "empty.mp4", "empty"]),
    ("empty-image", ["image-to-video", "{d}/empty.png", "a cat"], ["image", "empty.png", "empty"]),
    ("truncated-mp4", ["extend", "{d}/truncated.mp4"], ["video", "truncated.mp4"]),
    ("truncated-video_b", ["connect", "{d}/clip.mp4", "{d}/truncated.mp4"], ["video_b", "truncated.mp4"]),
    ("text-as-png", ["image-to-video", "{d}/notes.png", "a cat"], ["image", "notes.png", "not a readable image"]),
    ("text-as-mp4", ["edit", "{d}/notes.mp4", "make it winter"], ["video", "notes.mp4", "not a readable video"]),
    ("text-as-image", ["simulate", "a city", "--image", "{d}/notes.png"], ["image", "notes.png"]),
    ("video-as-image", ["image-to-video", "{d}/clip.mp4", "a cat"], ["image", "clip.mp4"]),
    ("image-as-video", ["extend", "{d}/frame.png"], ["video", "frame.png"]),
    ("empty-prompt", ["text-to-video", ""], ["prompt", "''", "empty"]),
    ("blank-instruction", ["edit", "{d}/clip.mp4", "   "], ["instruction", "empty"]),
    ("num-frames-0", ["text-to-video", "a fox", "--num-frames", "0"], ["--num-frames", "0"]),
    ("num-frames-negative", ["text-to-video", "a fox", "--num-frames", "-3"], ["--num-frames", "-3"]),
    ("num-frames-1", ["text-to-video", "a fox", "--num-frames", "1"], ["--num-frames", "1"]),
    ("num-frames-float", ["text-to-video", "a fox", "--num-frames", "2.5"], ["--num-frames", "2.5"]),
    ("steps-0", ["text-to-video", "a fox", "--steps", "0"], ["--steps", "0"]),
    ("fps-0", ["text-to-video", "a fox", "--fps", "0"], ["--fps", "0"]),
    ("width-not-multiple", ["text-to-video", "a fox", "--width", "100"], ["--width", "100", "96", "104"]),
    ("width-too-large", ["text-to-video", "a fox", "--width", "100000"], ["--width", "100000", "range"]),
    ("height-too-small", ["text-to-video", "a fox", "--height", "4"], ["--height", "4"]),
    ("unknown-preset", ["text-to-video", "a fox", "--preset", "nope"], ["--preset", "nope", "tiny"]),
    ("seed-not-int", ["text-to-video", "a fox", "--seed", "abc"], ["--seed", "abc"]),
    ("seed-negative", ["text-to-video", "a fox", "--seed", "-1"], ["--seed", "-1"]),
    ("seed-too-large", ["text-to-video", "a fox", "--seed", str(2**32)], ["--seed", str(2**32)]),
    ("unknown-profile", ["text-to-video", "a fox", "--profile", "turbo"], ["--profile", "turbo"]),
    ("missing-llm-config", ["text-to-video", "a fox", "--llm-config", "{d}/missing.json"],
     ["--llm-config", "missing.json"]),
    ("malformed-llm-config", ["text-to-video", "a fox", "--llm-config", "{d}/bad_llm.json"],
     ["--llm-config", "bad_llm.json", "JSON"]),
    ("connect-one-video", ["connect", "{d}/clip.mp4"], ["video_b", "connect"]),
    ("unknown-command", ["text2video", "a fox"], ["text2video", "text-to-video"]),
    ("unknown-option", ["text-to-video", "a fox", "--frames", "8"], ["--frames"]),
]


@pytest.mark.parametrize("args, expected", [pytest.param(a, e, id=i) for i, a, e in BAD_INPUTS])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, media_dir, args, expected):
    args = [a.replace("{d}", str(media_dir)) for a in args]
    if "--preset" not in args:
        args += ["--preset", "tiny"]
    proc = mora(*args, "--out", "out/x.mp4", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc)
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    _no_traceback(proc)
    assert proc.stdout == ""
    assert sorted(tmp_path.iterdir()) == []  # no out/, no outputs/, no manifest, no artifacts


def test_device_without_gpu(tmp_path):
    import torch

    device = "cuda:99" if torch.cuda.is_available() else "cuda"
    proc = mora("text-to-video", "a fox", "--preset", "tiny", "--device", device, "--out", "out/x.mp4",
                cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc)
    assert "--device" in line and repr(device) in line
    assert sorted(tmp_path.iterdir()) == []


def test_out_must_end_in_mp4(tmp_path):
    proc = mora("text-to-video", "a fox", "--preset", "tiny", "--out", "out/fox.avi", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc)
    assert "--out" in line and "out/fox.avi" in line and ".mp4" in line
    assert sorted(tmp_path.iterdir()) == []


def test_out_must_not_be_a_directory(tmp_path):
    (tmp_path / "taken.mp4").mkdir()
    proc = mora("text-to-video", "a fox", "--preset", "tiny", "--out", "taken.mp4", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc)
    assert "--out" in line and "taken.mp4" in line and "directory" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.mp4"]
    assert list((tmp_path / "taken.mp4").iterdir()) == []


def test_debug_shows_the_traceback(tmp_path):
    proc = mora("text-to-video", "", "--preset", "tiny", "--debug", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "InputError" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("mora: error: prompt: ")


def test_chat_without_llm_config(tmp_path):
    proc = mora("chat", "a fox in the snow", "--preset", "tiny", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc)
    assert "llm-config" in line.lower() and "OAI_CONFIG_LIST" in line
    assert sorted(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# mora eval


def test_eval_json_on_a_plain_video(tmp_path, media_dir):
    proc = mora("eval", str(media_dir / "clip.mp4"), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    card = json.loads(proc.stdout)
    assert (card["num_frames"], card["width"], card["height"]) == (16, 96, 64)
    assert 0.0 <= card["temporal_flickering"] <= 1.0
    assert "seam_continuity" not in card  # no manifest beside it, so no known seams


def test_eval_json_on_a_mora_output_scores_its_seams(fox_run):
    cwd, run = fox_run
    assert run.returncode == 0, run.stderr
    manifest = json.loads((cwd / "out/fox.json").read_text())
    proc = mora("eval", "out/fox.mp4", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    card = json.loads(proc.stdout)
    assert card["num_frames"] == manifest["video"]["num_frames"]
    assert manifest["video"]["boundaries"], "an SVD run of 2 segments records where the second one starts"
    assert card["seam_continuity"]["boundaries"] == manifest["video"]["boundaries"]
    assert len(card["seam_continuity"]["scores"]) == len(manifest["video"]["boundaries"])


def test_eval_table(tmp_path, media_dir):
    proc = mora("eval", str(media_dir / "clip.mp4"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "temporal_flickering" in proc.stdout
    assert "motion_smoothness" in proc.stdout


@pytest.mark.parametrize("name", ["truncated.mp4", "notes.mp4", "nope.mp4"])
def test_eval_bad_video(tmp_path, media_dir, name):
    proc = mora("eval", str(media_dir / name), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc)
    assert "video" in line and name in line


def test_closed_stdout_is_not_an_unexpected_failure(tmp_path, media_dir):
    """`mora eval x.mp4 | head -0`: the reader is gone; no "unexpected failure" report, no traceback."""
    p = subprocess.Popen([*_mora_cmd(), "eval", str(media_dir / "clip.mp4")], cwd=tmp_path, env=_env(),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    _, err = p.communicate(timeout=120)
    err = err.decode()
    assert p.returncode != 0
    assert "Traceback" not in err and "unexpected failure" not in err, err


# --------------------------------------------------------------------------------------------
# The review gate, answered on stdin


def _review_run(cwd: Path, answers: str):
    return mora("text-to-video", "a red fox running through snow", "--preset", "tiny", "--seed", "0", "--steps", "1",
                "--out", "out/r.mp4", "--review", "--quiet", "--json", cwd=cwd, input=answers)


def test_review_approve(tmp_path):
    proc = _review_run(tmp_path, "a\n")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["route"] == T2V_ROUTE
    assert [r["decision"] for r in manifest["review"]] == ["approve"]
    assert Path(tmp_path / manifest["review"][0]["image"]).is_file()
    assert "First frame" in proc.stderr and "[a]pprove" in proc.stderr
    assert (tmp_path / "out/r.mp4").is_file()


def test_review_abort_writes_nothing(tmp_path):
    proc = _review_run(tmp_path, "b\n")
    assert proc.returncode == 1, proc.stderr
    _no_traceback(proc)
    assert "mora: error: review: aborted" in proc.stderr
    assert proc.stdout == ""
    video, manifest_path, artifacts = _job_files(tmp_path, "out/r.mp4")
    assert not video.exists() and not manifest_path.exists()
    assert _pngs(artifacts), "the reviewed first frame is kept"
    assert not list(artifacts.glob("*.mp4")), "no video was made after the abort"


def test_review_edit_then_approve(tmp_path):
    proc = _review_run(tmp_path, "e\nmake it snowy\na\n")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    route = manifest["route"]
    assert "image_to_image_agent" in route
    assert route.index("text_to_image_agent") < route.index("image_to_image_agent") < route.index(
        "image_to_video_agent")
    assert route[-1] == "image_to_video_agent"
    assert [r["decision"] for r in manifest["review"]] == ["edit", "approve"]
    assert manifest["review"][0]["instruction"] == "make it snowy"


def test_review_regenerate_then_approve(tmp_path):
    proc = _review_run(tmp_path, "r\na\n")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["route"].count("text_to_image_agent") == 2
    assert manifest["route"][-1] == "image_to_video_agent"
    assert [r["decision"] for r in manifest["review"]] == ["regenerate", "approve"]
    assert len(_pngs(tmp_path / "out/r_artifacts")) == 2


# --------------------------------------------------------------------------------------------
# Ctrl-C


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_stop_cleanly_and_write_nothing_at_out(tmp_path, sig, code):
    """Ctrl-C and SIGTERM (a service manager, `kill`, a container stop) stop the job the same way; SIGTERM
    used to kill the process where it stood."""
    video, manifest_path, artifacts = _job_files(tmp_path, "out/slow.mp4")
    stdout, stderr = open(tmp_path / "stdout.txt", "w+"), open(tmp_path / "stderr.txt", "w+")
    # Many frames and steps make the video step slow (tens of seconds even for the toy models), so
    # the interrupt lands while it runs rather than racing the end of the job.
    proc = subprocess.Popen(
        [*_mora_cmd(), "text-to-video", "a red fox running through snow", "--preset", "tiny", "--seed", "0",
         "--num-frames", "25", "--steps", "200", "--out", "out/slow.mp4", "--quiet"],
        cwd=tmp_path, env=_env(), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not (artifacts.is_dir() and _pngs(artifacts)):
            assert proc.poll() is None, f"exited early ({proc.returncode}): {Path(stderr.name).read_text()}"
            assert time.monotonic() < deadline, "no first frame in time"
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be interrupted"
        proc.send_signal(sig)
        exit_code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stdout.close()
        stderr.close()
    err = Path(stderr.name).read_text()
    assert exit_code == code, err
    assert "Traceback" not in err, err
    assert "interrupted" in err
    assert not video.exists() and not manifest_path.exists()
    assert artifacts.is_dir() and _pngs(artifacts), "finished artifacts are kept"
    for folder in (video.parent, artifacts):  # and no half-written temp files are left behind
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], list(folder.iterdir())



def test_ctrl_c_turned_into_another_error_by_a_library_still_exits_130(monkeypatch, capsys):
    """safetensors/diffusers can turn the KeyboardInterrupt raised in native code into an OSError."""
    import os
    import signal

    from mora import cli

    def interrupted_while_loading(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            raise OSError("Unable to load weights from checkpoint file") from None
        raise AssertionError("SIGINT was not delivered")

    previous = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(cli, "_run_task", interrupted_while_loading)
    monkeypatch.setattr(cli._Interrupts, "seen", False)
    try:
        code = cli.main(["text-to-video", "a fox", "--preset", "tiny", "--quiet"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mora: interrupted; finished work (artifacts, shots, checkpoints) was kept, nothing was written at "
                   "--out"]

"""Progress on stderr (issue 29, item 16): diffusion step bars on a terminal, drawn to their end; written
to a pipe or a log file, no bar fragments at all, only the one line per agent step; and the step lines
say which candidate a `--best-of` step makes and when storyboard_agent writes (item 17)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios

import pytest
from test_cli import RUN_TIMEOUT, _env, _mora_cmd, mora

ARGS = ("text-to-video", "a fox", "--preset", "tiny", "--out", "out/fox.mp4")
STEP_LINES = ["[1] prompt_agent:", "[2] text_to_image_agent:", "[3] image_to_video_agent:"]


@pytest.mark.slow  # a tiny text-to-video in a subprocess
def test_no_bar_fragments_when_stderr_is_a_pipe(tmp_path):
    proc = subprocess.run([*_mora_cmd(), *ARGS], cwd=tmp_path, env=_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "%|" not in proc.stderr and "\r" not in proc.stderr, proc.stderr
    assert [line.split(" ", 2)[:2] for line in proc.stderr.splitlines()[:3]] == [s.split(" ") for s in STEP_LINES]


def _on_a_terminal(cwd) -> tuple[int, str]:
    """Run mora with stderr on a pseudo-terminal; (exit code, what the terminal received)."""
    leader, follower = pty.openpty()
    # a terminal 24 rows by 100 columns: a new pty is 0 columns wide, and tqdm draws nothing in 0 columns
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([*_mora_cmd(), *ARGS], cwd=cwd, env=_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    received = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # Linux: EIO once the child closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(leader)
    return proc.wait(timeout=RUN_TIMEOUT), received.decode("utf-8", "replace")


@pytest.mark.slow  # a tiny text-to-video in a subprocess
def test_bars_shown_and_finished_on_a_terminal(tmp_path):
    code, received = _on_a_terminal(tmp_path)
    assert code == 0, received
    # what stays on the screen: each line as its last carriage return left it
    screen = [line.rsplit("\r", 1)[-1] for line in received.replace("\r\n", "\n").split("\n")]
    bars = [line for line in screen if "%|" in line]
    assert bars and all(line.lstrip().startswith("100%|") for line in bars), screen
    assert any(re.search(r"\| 2/2 ", line) for line in bars), bars  # the video agent's 2 denoising steps
    assert all(any(line.startswith(s) for line in screen) for s in STEP_LINES), screen


def _step_lines(job: dict) -> list[str]:
    from mora.workflows.prepare import Hooks
    from mora.workflows.runner import run_job

    lines: list[str] = []
    run_job(job, Hooks(on_step=lambda agent, doing: lines.append(f"{agent}: {doing}"), progress=False))
    return lines


@pytest.mark.slow  # two tiny candidates
def test_best_of_step_lines_number_the_candidates(tmp_path):
    lines = _step_lines({"task": "text-to-video", "prompt": "a fox", "preset": "tiny", "best_of": 2,
                         "out": str(tmp_path / "fox.mp4")})
    assert lines == ["prompt_agent: writing the detailed prompt",
                     "text_to_image_agent: painting the first frame (candidate 1 of 2)",
                     "image_to_video_agent: animating the frame into video (candidate 1 of 2)",
                     "text_to_image_agent: painting the first frame (candidate 2 of 2)",
                     "image_to_video_agent: animating the frame into video (candidate 2 of 2)",
                     "critic_agent: scoring the candidates and keeping the best"], lines


def test_story_step_lines_start_with_storyboard_agent(tmp_path):
    lines = _step_lines({"task": "story", "story": "A fox wakes. The fox runs.", "preset": "tiny",
                         "storyboard_only": True, "out": str(tmp_path / "story.mp4")})
    assert lines == ["storyboard_agent: writing the storyboard"], lines


@pytest.mark.slow  # a one-job batch in a subprocess
def test_batch_summary_prints_paths_as_the_single_commands_do(tmp_path):
    (tmp_path / "jobs.jsonl").write_text('{"id": "fox", "task": "text-to-video", "prompt": "a fox"}\n')
    proc = mora("batch", "jobs.jsonl", "--out-dir", "out", "--preset", "tiny", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    summary = "\n".join(lines[next(i for i, line in enumerate(lines) if "video / error" in line):])
    assert str(tmp_path) not in summary, summary  # relative, like `mora text-to-video --out out/fox.mp4`
    assert "  out/fox.mp4" in summary and "rows in out/batch.json" in summary, summary


def test_progress_lines_mark_each_tenth_and_the_end(capsys):
    from mora.progress import Lines, bar

    assert isinstance(bar(5, desc="batch", unit="job"), Lines)  # capsys' stderr is no terminal
    lines = Lines(25, desc="batch", unit="job", initial=5)
    for _ in range(20):
        lines.set_postfix({"ok": 1}, refresh=False)
        lines.update(1)
    lines.close()
    shown = capsys.readouterr().err.splitlines()
    # resumed at 5/25: a line at each tenth passed (every 2.5 jobs) after that, the end once
    assert [s.split(" (")[0] for s in shown] == [f"batch: {n}/25 jobs" for n in (8, 10, 13, 15, 18, 20, 23, 25)]
    assert shown[-1] == "batch: 25/25 jobs (ok=1)"

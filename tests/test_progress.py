"""Progress on stderr (issue 29, item 16): diffusion step bars on a terminal, drawn to their end; written
to a pipe or a log file, no bar fragments at all, only the one line per agent step."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios

import pytest
from test_cli import RUN_TIMEOUT, _env, _mora_cmd

pytestmark = pytest.mark.slow  # a tiny text-to-video in a subprocess each

ARGS = ("text-to-video", "a fox", "--preset", "tiny", "--out", "out/fox.mp4")
STEP_LINES = ["[1] prompt_agent:", "[2] text_to_image_agent:", "[3] image_to_video_agent:"]


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


def test_bars_shown_and_finished_on_a_terminal(tmp_path):
    code, received = _on_a_terminal(tmp_path)
    assert code == 0, received
    # what stays on the screen: each line as its last carriage return left it
    screen = [line.rsplit("\r", 1)[-1] for line in received.replace("\r\n", "\n").split("\n")]
    bars = [line for line in screen if "%|" in line]
    assert bars and all(line.lstrip().startswith("100%|") for line in bars), screen
    assert any(re.search(r"\| 2/2 ", line) for line in bars), bars  # the video agent's 2 denoising steps
    assert all(any(line.startswith(s) for line in screen) for s in STEP_LINES), screen

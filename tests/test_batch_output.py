"""What batch and story print (issue 20 item 8): bar counts in step, no Ray chatter, resume hints.

- The batch bar's counts never lag a job: whenever it shows `n/N`, its postfix counts n finished.
- `mora batch --ray` on a Ray instance Mora starts prints only Mora's own lines on stderr.
- Ctrl-C of `mora story` names `--resume`; a resumed story says which shots it reused.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_cli import RUN_TIMEOUT, _env, _mora_cmd
from test_cli import mora as mora_cli

import mora
from mora import cli

# off a terminal the batch's progress is a whole line each tenth of the way (`mora.progress.Lines`)
BAR = re.compile(r"^batch: (?P<n>\d+)/(?P<total>\d+) jobs(?: \((?P<inside>.*)\))?$")
STORY = "A red fox wakes in a snowy forest. The fox runs across a frozen river."


def bar_states(stderr: str) -> list[tuple[int, int, dict[str, int]]]:
    """Every state the batch bar printed: (n, total, postfix counts), in order.

    Example:
        >>> bar_states("batch: 2/3 jobs (ok=1, failed=1)")
        [(2, 3, {'ok': 1, 'failed': 1})]
    """
    states = []
    for segment in re.split(r"[\r\n]", stderr):
        found = BAR.match(segment.strip())
        if found:
            counts = {k: int(v) for k, v in re.findall(r"\b(ok|failed|skipped)=(\d+)", found["inside"] or "")}
            states.append((int(found["n"]), int(found["total"]), counts))
    return states


def test_bar_counts_are_never_one_job_behind(tmp_path, capsys):
    jobs = [{"id": "a", "task": "text-to-video", "prompt": "a fox", "seed": 1},
            {"id": "b", "task": "extend", "video": str(tmp_path / "missing.mp4"), "seed": 2},  # fails alone
            {"id": "c", "task": "text-to-video", "prompt": "a hare", "seed": 3}]
    result = mora.batch(jobs, out_dir=tmp_path / "out", preset="tiny", device="cpu", progress=True)
    assert [r.status for r in result.jobs] == ["ok", "failed", "ok"]
    states = bar_states(capsys.readouterr().err)
    assert states, "the batch printed no progress bar"
    lagging = [s for s in states if sum(s[2].values()) != s[0]]
    assert not lagging, f"bar states whose counts are not the jobs done: {lagging}"
    assert [n for n, _, _ in states] == [1, 2, 3]  # a line per job finished (each is over a tenth of 3)
    assert states[-1] == (3, 3, {"ok": 2, "failed": 1})


def test_interrupted_message_names_resume_where_it_applies(capsys):
    assert cli._interrupted("story") == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err
    cli._interrupted("text-to-video")  # a single job has nothing to resume
    assert "--resume" not in capsys.readouterr().err


@pytest.mark.slow
def test_ray_batch_prints_only_moras_lines(tmp_path):
    pytest.importorskip("ray")
    (tmp_path / "jobs.jsonl").write_text(json.dumps({"task": "text-to-video", "prompt": "a fox", "seed": 1}) + "\n")
    (tmp_path / "home").mkdir()  # Ray keeps its token under ~/.ray: a fresh one, so it is made (and logged) here
    env = {**_env(), "HOME": str(tmp_path / "home")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([*_mora_cmd(), "batch", "jobs.jsonl", "--preset", "tiny", "--out-dir", "out", "--ray",
                           "--workers", "1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    bars, table = proc.stderr.split("id  task", 1)  # the progress lines, then the summary table (header, a row, totals)
    assert "\r" not in bars, bars
    foreign = [s for s in bars.splitlines() if s.strip() and not BAR.match(s.strip())]
    assert not foreign, "lines on stderr that are not Mora's:\n" + "\n".join(foreign)
    assert len(table.strip().splitlines()) == 3 and "1 job: 1 ok" in table, proc.stderr
    assert bar_states(proc.stderr)[-1] == (1, 1, {"ok": 1})


@pytest.mark.slow
def test_sigterm_stops_a_ray_batch_like_ctrl_c(tmp_path):
    """ray.init replaces the SIGTERM handler with its own (a native stack dump, `*** SIGTERM received`);
    the command's is put back: rows saved, the resume hint, exit 143."""
    pytest.importorskip("ray")
    jobs = [{"task": "text-to-video", "prompt": f"fox {i}", "seed": i, "steps": 10} for i in range(12)]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(j) + "\n" for j in jobs))
    (tmp_path / "home").mkdir()
    env = {**_env(), "HOME": str(tmp_path / "home")}
    env.pop("RAY_ADDRESS", None)
    code, err = _interrupt_after([*_mora_cmd(), "batch", "jobs.jsonl", "--preset", "tiny", "--out-dir", "out", "--ray",
                                  "--workers", "1"], tmp_path, "batch: 2/12", signal.SIGTERM, env)
    assert code == 143, err
    assert "SIGTERM received" not in err and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("mora: interrupted") and "--resume" in line], err
    rows = json.loads((tmp_path / "out" / "batch.json").read_text())["jobs"]
    assert rows[0]["status"] == "ok" and any(r["status"] == "pending" for r in rows), rows


def _interrupt_after(cmd: list[str], cwd: Path, marker: str, sig: int = signal.SIGINT,
                     env: dict | None = None) -> tuple[int, str]:
    """Run `cmd`, send `sig` as soon as `marker` appears on its stderr; (exit code, stderr)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env or _env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read1(4096), b"")))
    reader.start()
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while marker.encode() not in b"".join(chunks) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
        code = proc.wait(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
    return code, b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_story_interrupt_names_resume_and_resume_names_reused_shots(tmp_path):
    args = [STORY, "--shots", "2", "--shot-seconds", "0.6", "--preset", "tiny", "--out", "film.mp4"]
    # shot 2's first agent step is printed once shot 1 is finished and recorded
    code, err = _interrupt_after([*_mora_cmd(), "story", *args, "--seed", "1"], tmp_path, "shot 2/2")
    assert code == 130, err
    assert [line for line in err.splitlines() if line.startswith("mora: interrupted") and "--resume" in line], err
    assert not (tmp_path / "film.mp4").exists() and (tmp_path / "film_artifacts" / "shot-01" / "shot.json").is_file()

    resumed = mora_cli("story", *args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "reused shot 1 from the earlier run" in resumed.stderr, resumed.stderr
    again = mora_cli("story", *args, "--resume", cwd=tmp_path)  # a finished film: every shot is reused
    assert again.returncode == 0, again.stderr
    assert "reused shots 1, 2 from the earlier run" in again.stderr, again.stderr

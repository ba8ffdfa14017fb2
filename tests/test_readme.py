"""The README runs: its ```bash and ```python blocks, in order, on a fresh copy of the repository (slow tier).

A block is skipped only when the README says so right above its fence, with one of SKIP_REASONS:

    <!-- readme-test: skip (needs a GPU) -->
    <!-- readme-test: skip (installs packages; starts a server) -->

Everything else runs, in README order, in a temporary copy of the tracked files (a fresh clone's
state, so no earlier `outputs/`), with this test's environment: its venv's `mora` and `python` on
PATH (the README's own venv and pip lines are the blocks marked "installs packages"; CI runs them
itself in `.ci/run`), `MORA_HOME` (the session's tiny-model cache), `HF_HUB_OFFLINE=1` and no LLM
config. Shell blocks run under `bash -euo pipefail`, Python blocks with this venv's python; each
must exit 0, and a failure names the block's README line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# Why a README block may be skipped; a marker with any other reason fails the test.
SKIP_REASONS = ("needs a GPU", "needs an LLM", "needs the network", "installs packages", "starts a server",
                "runs the test suite")
RUNNABLE = {"bash": "bash", "python": "python"}  # fence language -> how the block runs
# Fence languages that would hide runnable code from this test: spell them `bash` or `python`.
HIDDEN = {"sh", "shell", "console", "zsh", "py", "python3", "pycon"}
MARKER = re.compile(r"<!--\s*readme-test:\s*skip\s*\((?P<reasons>[^)]*)\)\s*-->")
BLOCK_TIMEOUT_S = 900  # the slowest block (the per-task examples) takes about a minute on a busy CPU


@dataclass
class Block:
    """One fenced block of the README: its language, first code line (1-based), code and skip reasons."""

    lang: str
    line: int
    code: str
    skip: tuple[str, ...] = ()


def readme_blocks(text: str) -> tuple[list[Block], list[str]]:
    """(every fenced block in order, problems: markers not right above a fence, hidden languages).

    Example:
        >>> blocks, problems = readme_blocks("<!-- readme-test: skip (needs a GPU) -->\\n```bash\\nnvidia-smi\\n```\\n")
        >>> blocks[0].skip, problems
        (('needs a GPU',), [])
    """
    lines = text.splitlines()
    blocks, problems, i = [], [], 0
    pending: tuple[int, tuple[str, ...]] | None = None  # (line, reasons) of a marker awaiting its fence
    while i < len(lines):
        line = lines[i].strip()
        found = MARKER.fullmatch(line)
        if found:
            pending = (i + 1, tuple(r.strip() for r in found["reasons"].split(";")))
        elif line.startswith("```"):
            lang = line[3:].strip().split(" ")[0].lower()
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
            if lang in HIDDEN:
                problems.append(f"README.md line {i + 1}: ```{lang} block; fence it as ```bash or ```python")
            blocks.append(Block(lang, i + 2, "\n".join(lines[i + 1:end]) + "\n", pending[1] if pending else ()))
            pending, i = None, end
        elif line and pending:
            problems.append(f"README.md line {pending[0]}: skip marker not right above a fence")
            pending = None
        if "readme-test" in line and not found:
            problems.append(f"README.md line {i + 1}: malformed marker {line!r}; write "
                            "<!-- readme-test: skip (REASON) -->")
        i += 1
    return blocks, problems


def test_readme_markers_are_well_formed():
    """Every skip has a known reason and sits right above a runnable block; nothing is skipped silently."""
    blocks, problems = readme_blocks(README.read_text(encoding="utf-8"))
    for b in blocks:
        problems += [f"README.md line {b.line - 1}: unknown skip reason {r!r}; use one of {SKIP_REASONS}"
                     for r in b.skip if r not in SKIP_REASONS]
        if b.skip and b.lang not in RUNNABLE:
            problems.append(f"README.md line {b.line - 1}: skip marker on a ```{b.lang} block, which never runs")
    assert not problems, "\n".join(problems)
    assert any(b.lang in RUNNABLE and not b.skip for b in blocks), "the README has no block that runs"


def test_marker_parsing():
    text = ("<!-- readme-test: skip (installs packages; starts a server) -->\n```bash\npip install x\n```\n"
            "<!-- readme-test: skip (needs a GPU) -->\n\ntext between\n```python\nprint(1)\n```\n"
            "<!-- readme-test: skip needs a GPU -->\n```sh\nls\n```\n")
    blocks, problems = readme_blocks(text)
    assert [(b.lang, b.line, b.skip) for b in blocks] == [("bash", 3, ("installs packages", "starts a server")),
                                                          ("python", 9, ()), ("sh", 13, ())]
    assert blocks[1].code == "print(1)\n"
    assert problems == ["README.md line 5: skip marker not right above a fence",
                        "README.md line 11: malformed marker '<!-- readme-test: skip needs a GPU -->'; write "
                        "<!-- readme-test: skip (REASON) -->",
                        "README.md line 12: ```sh block; fence it as ```bash or ```python"]


def _fresh_copy(dest: Path) -> Path:
    """The tracked files of this checkout (their working-tree contents), as a fresh clone would have them."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"needs a git checkout to know the tracked files ({e})")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is not part of this state
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OAI_CONFIG_LIST", "PYTHONPATH", "RAY_ADDRESS")}
    bin_dir = str(Path(sys.executable).parent)  # this venv's `mora`, `python`, `ruff`
    env.update(PATH=bin_dir + os.pathsep + env.get("PATH", ""), HOME=str(home), HF_HUB_OFFLINE="1",
               MORA_HOME=os.environ["MORA_HOME"], PYTHONUNBUFFERED="1")
    return env


def _run_block(block: Block, index: int, cwd: Path, env: dict[str, str]) -> None:
    script = cwd.parent / f"readme-block-{index:02d}.{'sh' if block.lang == 'bash' else 'py'}"
    script.write_text(block.code, encoding="utf-8")
    cmd = ["bash", "-euo", "pipefail", str(script)] if block.lang == "bash" else [sys.executable, str(script)]
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"README.md line {block.line}: the {block.lang} block ran past {BLOCK_TIMEOUT_S} s:\n{block.code}")
    if done.returncode != 0:
        pytest.fail(f"README.md line {block.line}: the {block.lang} block exited {done.returncode}:\n{block.code}\n"
                    f"--- stdout (end) ---\n{done.stdout[-3000:]}\n--- stderr (end) ---\n{done.stderr[-3000:]}",
                    pytrace=False)


@pytest.mark.slow
def test_readme_blocks_run_in_order(tmp_path):
    """Every unmarked ```bash and ```python block of the README exits 0, run in order on a fresh copy."""
    blocks, _ = readme_blocks(README.read_text(encoding="utf-8"))
    runnable = [b for b in blocks if b.lang in RUNNABLE and not b.skip]
    assert runnable, "the README has no block that runs"
    (tmp_path / "home").mkdir()
    repo = _fresh_copy(tmp_path / "repo")
    env = _environment(tmp_path / "home")
    for index, block in enumerate(runnable, start=1):
        _run_block(block, index, repo, env)

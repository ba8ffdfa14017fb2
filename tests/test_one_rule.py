"""Each rule written once (issue 29, item 5): an exception as one line (`mora.errors.one_line`) and
the path-containment check (`mora.paths.is_inside`).

Nine hand-written copies of "exception to one line" had drifted apart (one gave `Type: Type` for an
empty message, one kept every line, one dropped the type of every error, one of none) and six
containment checks each resolved (or not) on their own. The helpers are tested here, and a scan of
the source fails if a copy comes back.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mora.errors import InputError, LLMError, MoraError, one_line
from mora.paths import is_inside

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("src", "agents", "tools", "workflows")


# --- one_line ------------------------------------------------------------------------------------

def test_one_line_is_type_and_first_line_of_a_multi_line_error():
    error = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nSee PYTORCH_CUDA_ALLOC_CONF")
    assert one_line(error) == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_one_line_skips_leading_blank_lines():
    assert one_line(OSError("\n\n  disk full  \nerrno 28")) == "OSError: disk full"


@pytest.mark.parametrize("message", ["", "   ", "\n"])
def test_one_line_of_an_empty_message_is_the_type_alone(message):
    # not "KeyError: " with a dangling colon, nor "KeyError: KeyError"
    assert one_line(ValueError(message)) == "ValueError"
    assert one_line(LLMError(message)) == "LLMError"


def test_one_line_gives_a_mora_error_without_its_type():
    # a MoraError's message was written for the user; "InputError: --steps ..." would be noise
    assert one_line(InputError("--steps: got 0; pass a positive integer")) == "--steps: got 0; pass a positive integer"
    assert one_line(LLMError("the endpoint failed\nbody: ...")) == "the endpoint failed"


def test_one_line_limit_cuts_the_message_not_the_type():
    assert one_line(TimeoutError("x" * 500), limit=10) == "TimeoutError: " + "x" * 10
    assert one_line(MoraError("y" * 500), limit=10) == "y" * 10
    assert one_line(TimeoutError("short"), limit=200) == "TimeoutError: short"


def test_a_tool_call_fault_reads_as_its_reason():
    """The team shows the LLM why its answer was unusable: the reason, without a Python type."""
    from mora.agents.toolcalls import ToolCallFault

    assert one_line(ToolCallFault("no tool call in the answer; call `generate_video`")) == \
        "no tool call in the answer; call `generate_video`"


def test_an_unexpected_failure_on_the_page_is_one_line():
    from mora.ui import _message

    assert _message(RuntimeError("boom\nTraceback detail")) == "unexpected failure: RuntimeError: boom"
    assert _message(InputError("prompt: '' is empty; write a prompt")) == "prompt: '' is empty; write a prompt"


# --- is_inside -----------------------------------------------------------------------------------

def test_is_inside_a_folder(tmp_path):
    (tmp_path / "job" / "sub").mkdir(parents=True)
    assert is_inside(tmp_path / "job" / "sub" / "a.png", tmp_path / "job")
    assert is_inside(tmp_path / "job", tmp_path / "job")  # the folder itself
    assert is_inside(str(tmp_path / "job" / "missing.mp4"), str(tmp_path / "job"))  # no file needed


def test_is_inside_refuses_dot_dot_and_a_sibling_with_the_same_prefix(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    assert not is_inside(job / ".." / "other" / "x.png", job)  # as text it starts with the folder
    assert not is_inside(job / ".." / ".." / "etc" / "passwd", job)
    assert not is_inside(tmp_path / "job2" / "x.png", job)  # "job2" starts with "job"
    assert is_inside(job / "a" / ".." / "b.png", job)  # a `..` that stays inside is fine


def test_is_inside_resolves_symlinks(tmp_path):
    job, outside = tmp_path / "job", tmp_path / "secret"
    job.mkdir()
    outside.mkdir()
    (outside / "key.txt").write_text("s3cret")
    (job / "link.txt").symlink_to(outside / "key.txt")
    (job / "dir").symlink_to(outside, target_is_directory=True)
    assert not is_inside(job / "link.txt", job)  # a link in the folder to a file outside it
    assert not is_inside(job / "dir" / "key.txt", job)
    alias = tmp_path / "alias"
    alias.symlink_to(job, target_is_directory=True)
    (job / "video.mp4").write_bytes(b"v")
    assert is_inside(alias / "video.mp4", job) and is_inside(job / "video.mp4", alias)  # a linked folder


def test_a_public_path_that_climbs_out_of_the_job_folder_is_not_the_jobs(tmp_path):
    """Responses name a job's files as `job:<id>/<name>`: `<folder>/../other/x` is no file of the job."""
    from mora.service.guards import public

    folder = tmp_path / "out" / "j1"
    folder.mkdir(parents=True)
    assert public(str(folder / "video.mp4"), "j1", folder) == "job:j1/video.mp4"
    assert public(str(folder / ".." / "j2" / "video.mp4"), "j1", folder) == "video.mp4"


def test_training_data_refuses_a_symlink_out_of_the_folder(tmp_path):
    from mora.training.data import check_dataset

    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir()
    outside.mkdir()
    (outside / "clip.mp4").write_bytes(b"not read")
    (data / "clip.mp4").symlink_to(outside / "clip.mp4")
    (data / "metadata.jsonl").write_text('{"file_name": "clip.mp4", "text": "a fox"}\n')
    with pytest.raises(InputError, match="outside the data folder"):
        check_dataset(data, train_frames=4)


# --- no copy left --------------------------------------------------------------------------------

# Why a scan: the copies were written one call site at a time and drifted apart; the next call site
# is the likeliest place for another. Each pattern is how a copy was spelled.
_COPIES = {
    "`Type: message` by hand; use mora.errors.one_line": re.compile(r"type\(\w+\)\.__name__\}: "),
    "an exception's first line by hand; use mora.errors.one_line":
        re.compile(r"str\((e|exc|err|error)\)[^\n]*\.splitlines\(\)\[0\]"),
    "an exception's lines joined by hand; use mora.errors.one_line":
        re.compile(r"\"\s\"\.join\(str\((e|exc|err|error)\)\.split\(\)\)"),
    "a containment check by hand; use mora.paths.is_inside": re.compile(r"\.is_relative_to\("),
}
_HOMES = {ROOT / "src" / "mora" / "errors.py", ROOT / "src" / "mora" / "paths.py"}


def test_no_copy_of_the_one_line_or_containment_rule_is_left():
    found = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path in _HOMES:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                found += [f"{path.relative_to(ROOT)}:{number}: {why}" for why, pattern in _COPIES.items()
                          if pattern.search(line)]
    assert not found, "\n".join(found)

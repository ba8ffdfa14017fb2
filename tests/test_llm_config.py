"""What a new user meets with OAI_CONFIG_LIST (issue 29, item 15).

Copied unedited, OAI_CONFIG_LIST.example used to run: every request failed, every step fell back,
autogen's "API key not valid format" warning landed on stdout (the CLI's result channel) and the
manifest said the LLM was used. Now the copied example is refused (exit 2, one line, nothing
written), autogen's records never reach stdout, and the manifest says which steps used the LLM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import gradient_frames

from mora import media
from mora.agents.llm import LLM_ATTEMPTS, PLACEHOLDERS, load_llm_config
from mora.errors import InputError

EXAMPLE = Path(__file__).resolve().parents[1] / "OAI_CONFIG_LIST.example"
RUN_TIMEOUT = 600  # seconds; a tiny run takes 5-60 s depending on the machine's load


def _mora(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("mora")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "mora.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("OAI_CONFIG_LIST", None)
    return subprocess.run([*command, *args], cwd=cwd, env=env, input="", capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)


def _local(entry: dict) -> bool:
    return entry.get("base_url", "").startswith(("http://localhost", "http://127.0.0.1"))


# --- the example's placeholders ------------------------------------------------------------------


def test_every_value_of_the_example_a_user_must_replace_is_a_placeholder():
    """The example's OpenAI and Azure entries are refused as they stand; the Ollama and vLLM entries
    carry those servers' conventional no-key values ("ollama", "EMPTY"), which work as given."""
    entries = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    remote = [e for e in entries if not _local(e)]
    assert remote and len(remote) < len(entries)  # both kinds are in the example
    for i, entry in enumerate(entries):
        if _local(entry):
            assert load_llm_config([entry])[0]["model"] == entry["model"]
            continue
        assert any(marker in entry["api_key"] for marker in PLACEHOLDERS), entry
        with pytest.raises(InputError, match=r"^--llm-config: entry 0 of the llm_config list: api_key is still "
                                             r"OAI_CONFIG_LIST\.example's placeholder; put your real api_key there"):
            load_llm_config([entry])
        # a real key alone is not enough where the endpoint is a placeholder too (Azure's resource)
        if any(marker in entry.get("base_url", "") for marker in PLACEHOLDERS):
            with pytest.raises(InputError, match=f"entry 0 of the llm_config list: base_url \\('{entry['base_url']}'"):
                load_llm_config([{**entry, "api_key": "a-real-key-1234"}])


@pytest.mark.parametrize(("source", "where", "without"), [
    ("flag", "entry 0 of '{path}'", "drop --llm-config"),
    ("env", r"entry 0 of \$OAI_CONFIG_LIST \('{path}'\)", "unset OAI_CONFIG_LIST"),
    ("env-json", r"entry 0 of \$OAI_CONFIG_LIST", "unset OAI_CONFIG_LIST"),
    ("local", "entry 0 of ./OAI_CONFIG_LIST", r"remove \./OAI_CONFIG_LIST"),
])
def test_the_copied_example_is_refused_from_every_source(tmp_path, monkeypatch, source, where, without):
    copy = tmp_path / "OAI_CONFIG_LIST"
    shutil.copyfile(EXAMPLE, copy)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OAI_CONFIG_LIST", raising=False)
    if source.startswith("env"):
        monkeypatch.setenv("OAI_CONFIG_LIST", EXAMPLE.read_text() if source == "env-json" else str(copy))
    with pytest.raises(InputError) as caught:
        load_llm_config(str(copy) if source == "flag" else None)
    text = str(caught.value)
    assert "\n" not in text and "sk-REPLACE-ME" not in text  # a key's value is never shown, even a placeholder
    assert re.match(f"--llm-config: {where.format(path=copy)}: api_key is still "
                                  f"OAI_CONFIG_LIST.example's placeholder; .* or {without} to run without an LLM$", text)


@pytest.mark.slow  # a subprocess
def test_the_cli_refuses_the_copied_example_and_writes_nothing(tmp_path):
    shutil.copyfile(EXAMPLE, tmp_path / "OAI_CONFIG_LIST")
    proc = _mora("text-to-video", "a red fox in snow", "--preset", "tiny", "--out", "out/x.mp4", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mora: error: --llm-config: entry 0 of ./OAI_CONFIG_LIST: api_key is still ")
    assert lines[0].endswith("or remove ./OAI_CONFIG_LIST to run without an LLM")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OAI_CONFIG_LIST"]


# --- library warnings stay off stdout ----------------------------------------------------------------


def test_autogen_client_warnings_never_reach_stdout(tmp_path):
    """autogen warns for each OpenAI client whose key is not in OpenAI's format, on its own stdout
    handler; building Mora's agents sends that record through logging (stderr) instead."""
    code = ("from mora.agents.storyboard import make_storyboard_agent\n"
            "make_storyboard_agent([{'model': 'gpt-4o-mini', 'api_key': 'EMPTY'}])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert "not a valid OpenAI format" in proc.stderr  # still said, where logs go


def test_the_cli_keeps_library_warnings_quiet_after_autogen_is_imported(tmp_path):
    """The CLI shows libraries' errors only (their warnings under --debug); importing autogen, which
    happens after the CLI sets up logging, sets autogen's logger to INFO and must not undo that."""
    code = ("import argparse, logging\n"
            "from mora.cli import _setup_logging\n"
            "_setup_logging(argparse.Namespace(debug={debug}, verbose=False))\n"
            "from mora.agents.llm import logs_off_stdout\n"
            "logs_off_stdout()  # imports autogen, as building Mora's agents does\n"
            "logging.getLogger('autogen.oai.client').warning('a library warning')\n"
            "logging.getLogger('autogen.oai.client').error('a library error')\n"
            "logging.getLogger('mora.x').warning('a mora warning')\n")
    for debug in (False, True):
        proc = subprocess.run([sys.executable, "-c", code.format(debug=debug)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert proc.returncode == 0 and proc.stdout == "", proc.stderr
        assert "a library error" in proc.stderr and "a mora warning" in proc.stderr
        assert ("a library warning" in proc.stderr) is debug


# --- the manifest says what the LLM did ----------------------------------------------------------------


@pytest.mark.slow  # a subprocess and a tiny run
def test_a_failing_server_gives_every_step_fallen_back_and_stdout_only_the_path(fake_openai, tmp_path):
    fake_openai.default = None  # every request: HTTP 500
    clip = media.write_video(gradient_frames(5, 96, 64), tmp_path / "clip.mp4", fps=7)
    (tmp_path / "llm.json").write_text(json.dumps(fake_openai.config_list))
    proc = _mora("extend", str(clip), "more snow falls", "--preset", "tiny", "--no-metrics",
                 "--llm-config", "llm.json", "--out", "out/x.mp4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("out/x.mp4"), proc.stdout
    llm = json.loads((tmp_path / "out" / "x.json").read_text())["llm"]
    assert llm["configured"] is True and llm["used"] is False
    assert llm["steps"] == [{"agent": "prompt_agent", "answer": "fallback"},
                            {"agent": "image_to_video_agent", "answer": "fallback"}]
    assert llm["fallbacks"] == 2 and len(llm["faults"]) == 2 * LLM_ATTEMPTS == len(fake_openai.requests)
    assert "SECRET" not in proc.stdout + proc.stderr


def test_a_step_that_used_the_llm_makes_it_used(fake_openai, tmp_path):
    """One step answered by the LLM, one fallen back: used, and the record says which."""
    import mora

    fake_openai.default = None
    fake_openai.push_text("LLM: more snow falls, heavier, slow dolly-in")
    clip = media.write_video(gradient_frames(5, 96, 64), tmp_path / "clip.mp4", fps=7)
    result = mora.run("extend", preset="tiny", device="cpu", progress=False, metrics=False, seed=0,
                      out=tmp_path / "x.mp4", video=str(clip), prompt="more snow falls",
                      llm_config=fake_openai.config_list)
    llm = result.manifest["llm"]
    assert result.manifest["enhanced_prompt"].startswith("LLM: more snow falls")
    assert llm["used"] is True and llm["fallbacks"] == 1
    assert llm["steps"] == [{"agent": "prompt_agent", "answer": "llm"},
                            {"agent": "image_to_video_agent", "answer": "fallback"}]

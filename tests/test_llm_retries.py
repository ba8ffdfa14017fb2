"""One LLM retry layer (issue 20, item 2) and the LLM config as a typed model (issue 19, item 4).

Before: the openai client's own retries ran inside Mora's three tries, so a failing endpoint got
six requests per agent step and a hanging one cost minutes. Now a step makes at most
`LLM_ATTEMPTS` requests, each bounded by the entry's `timeout`, then falls back to the scripted
answer, counted in `manifest.llm.fallbacks`. Talks to tests/fake_openai.py through the real
openai client.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import gradient_frames

import mora
from mora import media
from mora.agents.llm import LLM_ATTEMPTS, load_llm_config, step_attempts
from mora.errors import InputError


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    return str(media.write_video(gradient_frames(5, 96, 64), tmp_path_factory.mktemp("in") / "clip.mp4", fps=7))


def _extend(out, clip: str, config: list[dict], **kwargs):
    return mora.run("extend", preset="tiny", device="cpu", progress=False, metrics=False, seed=0, out=out,
                    video=clip, llm_config=config, **kwargs)


def test_failing_endpoint_gets_three_requests_per_step(fake_openai, clip, tmp_path):
    fake_openai.default = None  # every request: HTTP 500
    result = _extend(tmp_path / "x.mp4", clip, fake_openai.config_list, prompt="more snow falls")
    m = result.manifest
    assert m["route"] == ["prompt_agent", "image_to_video_agent"]
    assert len(fake_openai.requests) == 2 * LLM_ATTEMPTS == 6  # two steps, three requests each
    assert m["llm"]["fallbacks"] == 2
    assert len(m["llm"]["faults"]) == 2 * LLM_ATTEMPTS and all("InternalServerError" in f for f in m["llm"]["faults"])
    assert media.probe_video(result.video_path)[3] == m["video"]["num_frames"]


def test_hanging_endpoint_costs_the_timeout_per_request(fake_openai, clip, tmp_path):
    fake_openai.default = {"kind": "hang", "seconds": 60}
    config = [{**fake_openai.config_list[0], "timeout": 1}]
    started = time.monotonic()
    result = _extend(tmp_path / "x.mp4", clip, config)
    assert time.monotonic() - started < 30  # a hang guard: 3 requests of 1 s, not 60 s nor minutes
    assert len(fake_openai.requests) == LLM_ATTEMPTS
    m = result.manifest
    assert m["llm"]["fallbacks"] == 1 and m["tool_calls"][0]["args"]["video_path"] == clip
    assert all("Timeout" in f for f in m["llm"]["faults"])


def test_several_entries_share_the_three_requests(fake_openai, clip, tmp_path):
    """autogen asks every entry within one try: with two entries a step makes one try, two requests."""
    fake_openai.default = None
    config = [fake_openai.config_list[0], {**fake_openai.config_list[0], "model": "second-model"}]
    assert step_attempts(config) == 1
    result = _extend(tmp_path / "x.mp4", clip, config)
    assert [r["model"] for r in fake_openai.requests] == ["fake-model", "second-model"]
    assert result.manifest["llm"]["fallbacks"] == 1


def test_storyboard_agent_makes_three_requests(fake_openai):
    from mora.agents.storyboard import write_storyboard

    fake_openai.default = None
    answer = write_storyboard("A fox wakes. It runs.", 2, 1.0, config_list=load_llm_config(fake_openai.config_list),
                              validate=dict, fallback=lambda: {"shots": []})
    assert answer.source == "deterministic" and answer.fallbacks == 1
    assert len(fake_openai.requests) == LLM_ATTEMPTS and len(answer.faults) == LLM_ATTEMPTS


def test_client_retries_are_off_and_timeout_is_the_entrys():
    (entry,) = load_llm_config([{"model": "m", "timeout": 2.5}])
    assert entry["max_retries"] == 0 and entry["timeout"] == 2.5
    from mora.agents.llm import autogen_llm_config
    from mora.agents.team import autogen

    agent = autogen.ConversableAgent("a", llm_config=autogen_llm_config([{**entry, "api_key": "sk-x"}]))
    (client,) = agent.client._clients
    assert client._oai_client.max_retries == 0 and client._oai_client.timeout == 2.5


# --- the config's types ------------------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "match"), [
    ({"model": "m", "timeout": 0}, "timeout: 0 is out of range; give seconds per request, > 0"),
    ({"model": "m", "timeout": "60"}, "timeout: '60' is not a number"),
    ({"model": "m", "max_retries": 2}, "max_retries: 2 is not allowed; remove it: Mora retries"),
    ({"model": "m", "tags": "vision"}, "tags: 'vision' is not a list"),
    ({"model": "m", "base_url": 11434}, "base_url: 11434 is not text"),
    ({"model": ["gpt-4o"]}, "model: \\['gpt-4o'\\] is not text"),
    ({"model": "m", "price": [1]}, "price: "),
], ids=["timeout-zero", "timeout-text", "client-retries", "tags-text", "base-url-number", "model-list", "price"])
def test_llm_config_types(entry, match):
    with pytest.raises(InputError, match=f"^--llm-config: entry 0 of the llm_config list: {match}") as caught:
        load_llm_config([entry])
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("secret", [{"api_key": 987654321}, {"default_headers": {"Authorization": 987654321}},
                                    {"api_key": ["sk-SECRET-in-a-list"]}], ids=["number", "header", "list"])
def test_llm_config_error_never_shows_the_key(secret):
    with pytest.raises(InputError) as caught:
        load_llm_config([{"model": "m", **secret}])
    text = str(caught.value)
    assert "987654321" not in text and "SECRET" not in text and "***" in text


def test_llm_config_keeps_provider_keys():
    """Keys autogen reads for other providers (Azure here) pass through untouched."""
    entry = {"model": "gpt-4o", "api_type": "azure", "azure_endpoint": "https://x.openai.azure.com",
             "api_version": "2024-06-01", "api_key": "k" * 8, "tags": ["vision"]}
    assert load_llm_config([entry]) == [{**entry, "timeout": 60, "max_retries": 0}]
    assert np.isclose(load_llm_config([{"model": "m", "timeout": 7}])[0]["timeout"], 7)
    with pytest.raises(InputError, match="^--llm-config: entry 0 of .*: base_ur: is not a known field"):
        load_llm_config([{"model": "m", "base_ur": "http://localhost:11434/v1"}])  # a typo is refused

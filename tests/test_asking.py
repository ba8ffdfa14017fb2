"""One "ask the LLM, validate, retry" loop (issue 29, item 4): `mora.agents.asking.ask`.

Before, five loops (the team's prompt and tool steps, the vision judge, storyboard_agent, the chat's
director) each asked, validated and retried in their own way, with three attempt constants
(`LLM_ATTEMPTS`, `VOTE_RETRIES`, chat's `ATTEMPTS`), and three of them cut an error's text to
200 characters before masking the API key in it. Here: the helper's own contract, each call site
going through it (a fake server answering badly: exactly `LLM_ATTEMPTS` requests, a fallback
reported by the helper), and a source scan that no other loop or attempt constant remains.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path

import httpx
import pytest
from conftest import gradient_frames
from fake_openai import API_KEY
from PIL import Image

import mora
from mora import media
from mora.agents.asking import MAX_REASON_CHARS, Retry, ask, reason
from mora.agents.llm import LLM_ATTEMPTS, load_llm_config
from mora.errors import InputError, LLMError
from mora.workflows.manifest import llm_record

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-live-" + "K" * 40  # a key an endpoint echoes back
CONFIG = [{"model": "m", "api_key": KEY}]


def _scripted(*answers):
    """An `ask_once` answering `answers` in order and recording what it was told before each try."""
    told: list[Retry | None] = []
    script = iter(answers)

    def ask_once(retry):
        told.append(retry)
        answer = next(script)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return ask_once, told


def _number(answer: str) -> int:
    if not answer.isdigit():
        raise InputError(f"answer: {answer!r} is not a number; answer with digits only")
    return int(answer)


# --- the helper ------------------------------------------------------------------------------------


def test_an_answer_refused_twice_then_valid_is_used_and_each_retry_hears_why():
    ask_once, told = _scripted("four", "4.0", "4")
    answer = ask(ask_once, _number, agent="a", config_list=CONFIG)
    assert answer.used and answer.value == 4 and answer.tries == 3
    assert answer.step == {"agent": "a", "answer": "llm"}
    assert answer.faults == ["a try 1: answer: 'four' is not a number; answer with digits only",
                             "a try 2: answer: '4.0' is not a number; answer with digits only"]
    assert told == [None, Retry("answer: 'four' is not a number; answer with digits only", "four"),
                    Retry("answer: '4.0' is not a number; answer with digits only", "4.0")]


def test_an_answer_that_never_validates_falls_back_with_every_fault(caplog):
    ask_once, told = _scripted(*["no"] * (LLM_ATTEMPTS + 5))
    with caplog.at_level(logging.WARNING, logger="mora.agents.asking"):
        answer = ask(ask_once, _number, agent="a", config_list=CONFIG, fallback="using the scripted answer")
    assert not answer.used and answer.value is None
    assert len(told) == answer.tries == LLM_ATTEMPTS  # exactly LLM_ATTEMPTS requests, then no more
    assert answer.faults == [f"a try {n}: answer: 'no' is not a number; answer with digits only"
                             for n in range(1, LLM_ATTEMPTS + 1)]
    steps, faults = [], []
    answer.record(steps, faults)
    assert steps == [{"agent": "a", "answer": "fallback"}] and faults == answer.faults
    assert llm_record(CONFIG, steps, faults)["fallbacks"] == 1 and not llm_record(CONFIG, steps, faults)["used"]
    assert "a: no usable LLM answer after 3 tries" in caplog.text and "using the scripted answer" in caplog.text


def test_a_failing_endpoint_is_retried_with_the_same_request():
    """An HTTP error says nothing about the LLM's answers: the retry resends; the answer fault stays told."""
    ask_once, told = _scripted("x", httpx.ConnectError("refused"), "7")
    answer = ask(ask_once, _number, agent="a", config_list=CONFIG)
    assert answer.value == 7 and answer.reasons[1] == "ConnectError: refused"
    assert told[1] == told[2] == Retry("answer: 'x' is not a number; answer with digits only", "x")
    ask_once, told = _scripted(*[httpx.ReadTimeout("slow")] * LLM_ATTEMPTS)
    answer = ask(ask_once, _number, agent="a", config_list=CONFIG)
    assert told == [None] * LLM_ATTEMPTS and answer.endpoint_failed and answer.reason == "ReadTimeout: slow"


def test_attempts_are_shared_over_the_entries_and_a_bug_is_not_a_fault():
    two = [*CONFIG, {"model": "n"}]  # autogen asks each entry within one try: one try, two requests
    ask_once, told = _scripted("no", "no")
    assert ask(ask_once, _number, agent="a", config_list=two).tries == 1 and len(told) == 1

    def broken(answer):
        raise KeyError("a bug in the validator")

    with pytest.raises(KeyError):
        ask(_scripted("1")[0], broken, agent="a", config_list=CONFIG)


@pytest.mark.parametrize("error", [ValueError, httpx.HTTPError], ids=["answer", "endpoint"])
@pytest.mark.parametrize("at", [MAX_REASON_CHARS - 30, MAX_REASON_CHARS - 3, MAX_REASON_CHARS + 5])
def test_a_key_across_the_cut_is_masked_whole(error, at):
    """Masking first, then cutting: a key the cut would split is never partly shown."""
    text = "x" * at + f" invalid key {KEY} given" + "y" * 300
    shown = reason(error(text), CONFIG)
    assert "sk-l" not in shown and "KKKK" not in shown
    assert len(shown) <= MAX_REASON_CHARS + len("HTTPError: ")
    assert "\n" not in reason(error(f"line one {KEY}\nline two"), CONFIG)


# --- every call site goes through it -------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("asking")
    videos = [str(media.write_video(gradient_frames(5, 64, 64, shift=s), d / f"c{s}.mp4", fps=7)) for s in (1, 4)]
    images = []
    for n, video in enumerate(videos):
        images.append(str(d / f"c{n}.png"))
        Image.fromarray(media.read_video(video, argument="video").frames[0]).save(images[-1])
    return {"video": videos[0], "videos": videos, "images": images}


def _team_steps(fake, files, tmp_path):
    result = mora.run("extend", preset="tiny", device="cpu", progress=False, metrics=False, seed=0,
                      out=tmp_path / "x.mp4", video=files["video"], prompt="more snow", llm_config=fake.config_list)
    assert result.manifest["llm"]["fallbacks"] == 2
    return ["prompt_agent", "image_to_video_agent"]


def _critic(fake, files, tmp_path):
    from mora.agents.critic import make_critic, rank_candidates

    config = load_llm_config([{**fake.config_list[0], "tags": ["vision"]}])
    candidates = [{"video": v, "image": i} for v, i in zip(files["videos"], files["images"], strict=True)]
    ranking, judged = rank_candidates(make_critic(config), candidates, "a fox", config)
    assert sorted(ranking) == [0, 1] and not judged.used and len(judged.faults) == LLM_ATTEMPTS
    return ["critic_agent"]


def _vote(fake, files, tmp_path):
    from mora.agents.critic import vote

    (entry,) = load_llm_config([{**fake.config_list[0], "tags": ["vision"]}])
    choice, error = vote(entry, files["images"], "a fox", [entry])
    assert choice is None and "InternalServerError" in error
    return ["vision judge fake-model"]


def _storyboard(fake, files, tmp_path):
    from mora.agents.storyboard import write_storyboard

    answer = write_storyboard("A fox wakes. It runs.", 2, 1.0, config_list=load_llm_config(fake.config_list),
                              validate=dict,
                              fallback=lambda: {"title": "t", "shots": []})
    assert answer.source == "deterministic" and answer.steps == [{"agent": "storyboard_agent", "answer": "fallback"}]
    return ["storyboard_agent"]


def _chat(fake, files, tmp_path):
    with pytest.raises(LLMError, match=f"^chat: the LLM endpoint failed in {LLM_ATTEMPTS} tries"):
        mora.chat("make a video of a fox", llm_config=fake.config_list)
    return ["director"]


SITES = {"team": _team_steps, "critic": _critic, "vote": _vote, "storyboard": _storyboard, "chat": _chat}


@pytest.mark.parametrize("site", list(SITES))
def test_each_call_site_asks_through_the_helper(site, fake_openai, files, tmp_path, caplog):
    fake_openai.default = None  # every request: HTTP 500
    with caplog.at_level(logging.WARNING, logger="mora.agents.asking"):
        agents = SITES[site](fake_openai, files, tmp_path)
    assert len(fake_openai.requests) == LLM_ATTEMPTS * len(agents)
    warned = [r.getMessage() for r in caplog.records if r.name == "mora.agents.asking"]
    assert [w.split(":")[0] for w in warned] == agents
    assert all(f"no usable LLM answer after {LLM_ATTEMPTS} tries" in w for w in warned)


def _echo_key_at_the_cut(fake) -> None:
    """Every answer a 401 whose message puts the key across character 200 of the error's text."""
    fake.default = None
    head = "Error code: 401 - {'error': {'message': '"
    fake.push_error(401, "x" * (MAX_REASON_CHARS - len(head) - 5) + API_KEY, times=LLM_ATTEMPTS)


def test_the_judges_and_the_chat_never_show_a_cut_key(fake_openai, files, caplog):
    from mora.agents.critic import vote

    caplog.set_level(logging.DEBUG)
    (entry,) = load_llm_config([{**fake_openai.config_list[0], "tags": ["vision"]}])
    _echo_key_at_the_cut(fake_openai)
    _, error = vote(entry, files["images"], "a fox", [entry])
    _echo_key_at_the_cut(fake_openai)
    with pytest.raises(LLMError) as chat_error:
        mora.chat("make a video of a fox", llm_config=fake_openai.config_list)
    for text in (error, str(chat_error.value), caplog.text):
        assert API_KEY[:5] not in text


# --- no other loop --------------------------------------------------------------------------------

# Module constants counting tries that are not the LLM's: the openai client's own retries (fixed at
# 0: one retry layer) and the Ray pool's reruns of a job whose worker died.
OTHER_COUNTS = {("agents/llm.py", "CLIENT_MAX_RETRIES"), ("workflows/ray_pool.py", "MAX_ATTEMPTS")}
# What makes an LLM request: autogen's reply functions and Mora's wrappers of them.
REQUESTS = {"generate_oai_reply", "generate_reply", "_ask_llm", "ask_director"}


def _sources():
    for folder in ("agents", "workflows", "tools", "src/mora"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _called(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        return node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
    return None


def _calls_outside_nested_functions(node: ast.AST):
    """The calls in `node`'s body, not those of functions defined in it (those are called elsewhere)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if _called(child):
            yield _called(child)
        yield from _calls_outside_nested_functions(child)


def test_one_attempt_constant_and_no_other_retry_loop():
    constants, loops, askers = [], [], {}
    for name, tree in _sources():
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            constants += [(name, t.id) for t in targets
                          if isinstance(t, ast.Name) and re.search(r"(^|_)(ATTEMPTS|RETRIES|TRIES)$", t.id)]
        for node in ast.walk(tree):
            if isinstance(node, (ast.For, ast.While)) and name != "agents/asking.py":
                loops += [f"{name}:{node.lineno}" for call in _calls_outside_nested_functions(node)
                          if call in REQUESTS | {"ask_once"}]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for call in _calls_outside_nested_functions(node):
                    if call in REQUESTS:
                        askers.setdefault(f"{name}:{node.name}", set()).add(call)
    assert set(constants) - OTHER_COUNTS == {("agents/llm.py", "LLM_ATTEMPTS")}
    assert loops == []  # only `ask` loops over LLM requests
    # Whatever makes a request is an `ask_once` given to `ask`, or a wrapper only such functions call.
    assert {where.split(":")[1] for where in askers} <= {"ask_once", "_ask_llm", "ask_director"}
    wrappers = {"_ask_llm", "ask_director"}
    assert {f.split(":")[1] for f, calls in askers.items() if calls & wrappers} <= {"ask_once"}

"""The data-free loop (issue 13): candidates, the multimodal-LLM + score-card vote, the human, fine-tuning.

Judges are the fake OpenAI-compatible server (tests/fake_openai.py) answering image requests per
model name; the decision tests drive `DataFreeLoop.decide` on hand-made candidates (no video), the
end-to-end tests run the loop on the tiny preset (2 prompts, 2 candidates, 1 step per iteration).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mora.errors import InputError

FAST = dict(preset="tiny", train_size=(64, 64), train_frames=4, rank=4, gradient_checkpointing=False, device="cpu",
            progress=False)
PROMPTS = ["a red fox running through snow", "a sailing boat on a calm lake"]


def _has_images(body: dict) -> bool:
    return any(isinstance(m.get("content"), list) and any(p.get("type") == "image_url" for p in m["content"])
               for m in body.get("messages", []))


def _judges(fake, answers: dict[str, object]) -> list[dict]:
    """Vision entries on the fake server, one per model name; image requests get answers[model]
    (a string, or a list popped one per request); everything else the server's script/default."""
    original = fake._next
    scripts = {m: list(a) if isinstance(a, list) else None for m, a in answers.items()}

    def respond(body, headers):
        spec = original(body, headers)
        if not _has_images(body):
            return spec
        model = body.get("model")
        answer = scripts[model].pop(0) if scripts[model] is not None else answers[model]
        return answer if isinstance(answer, dict) else {"kind": "text", "content": answer}

    fake._next = respond
    return [{**fake.config_list[0], "model": m, "tags": ["vision"]} for m in answers]


def _loop(tmp_path, config_list=None, human=None, **kw):
    from mora.training.loop import DataFreeLoop, check_loop

    cfg = check_loop(["a fox"], tmp_path / "run", iterations=1, candidates=2, steps=1, quality_floor=kw.pop(
        "quality_floor", 0.0), llm_config=config_list, preset="tiny", seed=0, device="cpu")
    return DataFreeLoop(cfg, human=human, progress=False)


def _candidates(tmp_path, qualities=(0.5, 0.7)) -> list[dict]:
    out = []
    for n, q in enumerate(qualities, start=1):
        sheet = tmp_path / f"c{n}_sheet.png"
        Image.fromarray(np.full((16, 64, 3), 40 * n, np.uint8)).save(sheet)
        out.append({"number": n, "video": str(tmp_path / f"c{n}.mp4"), "sheet": str(sheet), "seed": n,
                    "enhanced_prompt": "a fox, enhanced", "scores": {}, "quality": q})
    return out


# --- the vote and the decision (no video) ---------------------------------------------------------


def test_parse_choice_validates():
    from mora.agents.critic import parse_choice

    assert parse_choice('{"choice": 2}', 2) == 1 and parse_choice('ok {"choice": "None"}', 2) == "none"
    for bad in ('{"choice": 3}', '{"choice": 0}', '{"choice": true}', '{"choice": "2"}', "2", "{nope}", None):
        with pytest.raises(ValueError):
            parse_choice(bad, 2)


def test_two_judges_that_agree_keep_the_candidate_unanimously(tmp_path, fake_openai):
    config = _judges(fake_openai, {"judge-a": '{"choice": 2}', "judge-b": 'I pick {"choice": 2}'})
    asked = []
    loop = _loop(tmp_path, config, human=lambda c, v: asked.append(v))
    decision = loop.decide(1, 1, "a fox", _candidates(tmp_path))
    assert decision["kept"] == 2 and decision["decided_by"] == "unanimous" and not asked
    assert decision["votes"] == {"score_card": 2, "llm:judge-a": 2, "llm:judge-b": 2}
    requests = [r for r in fake_openai.requests if _has_images(r)]
    assert len(requests) == 2  # one per judge; each saw one contact sheet (several frames) per candidate
    images = [p for p in requests[0]["messages"][-1]["content"] if p["type"] == "image_url"]
    assert len(images) == 2 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_a_disagreement_asks_the_human_once_and_keeps_the_choice(tmp_path, fake_openai):
    config = _judges(fake_openai, {"judge-a": '{"choice": 1}', "judge-b": '{"choice": 2}'})
    asked = []

    def human(candidates, votes):
        asked.append((len(candidates), votes))
        return 1

    loop = _loop(tmp_path, config, human=human)
    decision = loop.decide(1, 1, "a fox", _candidates(tmp_path))
    assert asked == [(2, {"score_card": 2, "llm:judge-a": 1, "llm:judge-b": 2})]
    assert decision["kept"] == 1 and decision["decided_by"] == "human"
    again = loop.decide(1, 1, "a fox", _candidates(tmp_path))  # recorded: never asked again (resume)
    assert again == decision and len(asked) == 1


def test_human_never_drops_a_disagreement(tmp_path, fake_openai):
    config = _judges(fake_openai, {"judge-a": '{"choice": "none"}'})
    decision = _loop(tmp_path, config, human=None).decide(1, 1, "a fox", _candidates(tmp_path))
    assert decision["kept"] is None and decision["dropped"] == "disagreement"


def test_no_vision_llm_is_a_single_judge_and_the_floor_drops(tmp_path):
    loop = _loop(tmp_path)
    decision = loop.decide(1, 1, "a fox", _candidates(tmp_path))
    assert decision["kept"] == 2 and decision["decided_by"] == "single_judge"
    floor = _loop(tmp_path / "f", quality_floor=0.8).decide(1, 1, "a fox", _candidates(tmp_path))
    assert floor["dropped"] == "quality" and floor["kept"] is None


def test_an_invalid_answer_is_retried_twice_then_the_judge_abstains(tmp_path, fake_openai):
    config = _judges(fake_openai, {"judge-a": ["maybe the first", '{"choice": 9}', '{"choice": 1}'],
                                   "judge-b": ["no", "still no", "never"]})
    decision = _loop(tmp_path, config, human=lambda c, v: 2).decide(1, 1, "a fox", _candidates(tmp_path))
    assert decision["votes"] == {"score_card": 2, "llm:judge-a": 1, "llm:judge-b": "abstain"}
    assert "invalid answer" in decision["judge_errors"]["llm:judge-b"]
    assert decision["decided_by"] == "human" and decision["kept"] == 2


# --- bad input: exit 2 before anything is generated ---------------------------------------------------


@pytest.mark.parametrize("case, match", [
    ("missing", "is not a file"), ("blank", "no usable prompt"), ("candidates", "candidates"),
    ("iterations", "iterations"), ("adapter", "already holds a run"), ("both", "exactly one"),
])
def test_bad_input_is_refused_before_anything_is_made(tmp_path, case, match):
    import mora

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n   \n# a comment\n" if case == "blank" else "a fox\n")
    out = tmp_path / "run"
    kw = dict(prompts=str(tmp_path / "nope.txt") if case == "missing" else prompts, out=out, **FAST)
    kw.update({"candidates": {"candidates": 1}, "iterations": {"iterations": 0},
               "both": {"data": tmp_path}}.get(case, {}))
    if case == "adapter":
        (out / "adapter").mkdir(parents=True)
    with pytest.raises(InputError, match=match):
        mora.train(**kw)
    assert not (out / "candidates").exists() and not (out / "train.json").exists()


def test_more_training_frames_than_a_candidate_has_is_refused_before_any_is_made(tmp_path):
    import mora

    with pytest.raises(InputError, match=r"--train-frames: 14 is more than the 7 frames each candidate of preset "
                                         r"'tiny' has; pass --train-frames 7 or less"):
        mora.train(prompts=["a fox"], out=tmp_path / "run", iterations=1, candidates=2, steps=1,
                   **{**FAST, "train_frames": 14})
    assert not (tmp_path / "run").exists()


def test_a_new_run_over_an_earlier_one_needs_overwrite(tmp_path):
    from mora.training.loop import check_loop

    (tmp_path / "run" / "candidates").mkdir(parents=True)
    with pytest.raises(InputError, match="--overwrite to replace it"):
        check_loop(["a fox"], tmp_path / "run", preset="tiny", device="cpu", candidates=2)
    assert check_loop(["a fox"], tmp_path / "run", preset="tiny", device="cpu", candidates=2, overwrite=True).overwrite
    with pytest.raises(InputError, match="--overwrite: cannot be used with --resume"):
        check_loop(["a fox"], tmp_path / "run", preset="tiny", device="cpu", overwrite=True, resume=True)


def test_cli_bad_prompts_is_exit_2(tmp_path):
    import subprocess
    import sys

    (tmp_path / "p.txt").write_text("\n\n")
    proc = subprocess.run([sys.executable, "-m", "mora.cli", "train", "--prompts", str(tmp_path / "p.txt"), "--out",
                           str(tmp_path / "run"), "--preset", "tiny"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--prompts" in proc.stderr and not (tmp_path / "run").exists()


# --- end to end on tiny -----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_iterations_second_uses_the_first_adapter(tmp_path):
    import mora
    from mora.training import check_dataset

    out = tmp_path / "run"
    result = mora.train(prompts=PROMPTS, out=out, iterations=2, candidates=2, steps=1, **FAST)
    rows = result.iterations
    assert [r["iteration"] for r in rows] == [1, 2] and all(r["kept"] == 2 for r in rows)
    assert rows[0]["decided_by"] == {"single_judge": 2} and result.manifest["single_judge"]
    assert "only the score card" in result.manifest["summary"]
    first = json.loads((out / "candidates/iter-1/p001/c1.json").read_text())
    second = json.loads((out / "candidates/iter-2/p001/c1.json").read_text())
    assert "adapter" not in first
    assert Path(second["adapter"]["path"]).resolve() == (out / "train/iter-1/adapter").resolve()
    clips = check_dataset(out / "data/iter-1", train_frames=4)  # the --data format
    meta = [json.loads(line) for line in (out / "data/iter-1/metadata.jsonl").read_text().splitlines()]
    assert len(clips) == 2 and meta[0]["prompt"] == PROMPTS[0] and meta[0]["text"].startswith(PROMPTS[0])
    assert {"seed", "votes", "decided_by", "scores"} <= set(meta[0])
    assert len(check_dataset(out / "data/all", train_frames=4)) == 4  # everything kept so far
    assert (out / "loss.png").is_file() and (out / "adapter/adapter.json").is_file()
    assert json.loads((out / "train.json").read_text())["status"] == "complete"


def test_resume_inside_an_iteration_reuses_finished_candidates(tmp_path, monkeypatch):
    import mora
    from mora.workflows import runner

    calls, real = [], runner.run_job

    def interrupting(job, hooks=None):
        calls.append(job["out"])
        if len(calls) == 3:  # prompt 2, candidate 1
            raise KeyboardInterrupt
        return real(job, hooks)

    monkeypatch.setattr(runner, "run_job", interrupting)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        mora.train(prompts=PROMPTS, out=out, iterations=1, candidates=2, steps=1, **FAST)
    assert json.loads((out / "train.json").read_text())["status"] == "interrupted"
    assert not (out / "data").exists() and not (out / "candidates/iter-1/p002/c1.mp4").exists()
    before = (out / "candidates/iter-1/p001/c1.mp4").stat().st_mtime_ns
    calls.clear()
    result = mora.train(prompts=PROMPTS, out=out, iterations=1, candidates=2, steps=1, resume=True, **FAST)
    assert [Path(c).name for c in calls] == ["c1.mp4", "c2.mp4"]  # prompt 2 only
    assert (out / "candidates/iter-1/p001/c1.mp4").stat().st_mtime_ns == before
    assert result.iterations[0]["kept"] == 2


def test_a_judge_that_echoes_the_key_on_401_leaves_no_key_in_run_dir(tmp_path, fake_openai, caplog):
    from fake_openai import API_KEY

    import mora

    config = _judges(fake_openai, {"judge-a": {"kind": "error", "status": 401,
                                               "message": f"Incorrect API key provided: {API_KEY}"}})
    out = tmp_path / "run"
    with caplog.at_level("DEBUG", logger="mora"):
        result = mora.train(prompts=PROMPTS[:1], out=out, iterations=1, candidates=2, steps=1, llm_config=config,
                            **FAST)
    decision = json.loads((out / "candidates/iter-1/p001/decision.json").read_text())
    assert decision["votes"]["llm:judge-a"] == "abstain" and "***" in decision["judge_errors"]["llm:judge-a"]
    assert decision["decided_by"] == "single_judge" and result.iterations[0]["judge_abstentions"] == 1
    for path in out.rglob("*"):
        if path.is_file():
            assert API_KEY.encode() not in path.read_bytes(), path
    assert API_KEY not in caplog.text


@pytest.mark.slow
def test_cli_prompts_run_prints_progress_the_table_and_the_data_summary(tmp_path):
    import subprocess
    import sys

    # tiny's defaults (issue 20, item 7; issue 30, item 5): no --train-frames; training reads the preset's
    # frames per image-to-video call (4) of the 7 a candidate has
    (tmp_path / "p.txt").write_text("a red fox running through snow\n\n")
    proc = subprocess.run([sys.executable, "-m", "mora.cli", "train", "--prompts", str(tmp_path / "p.txt"), "--out",
                           str(tmp_path / "run"), "--preset", "tiny", "--device", "cpu", "--iterations", "1",
                           "--candidates", "2", "--steps", "1", "--train-size", "64x64", "--rank", "4",
                           "--no-gradient-checkpointing", "--human", "never"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "iteration 1/1: candidates" in proc.stderr and "prompt 1 candidate 2" in proc.stderr  # a line each
    assert "iter prompts" in proc.stderr and "dropped:quality" in proc.stderr and "only the score card" in proc.stderr
    assert "dropped: prompts dropped" in proc.stderr  # the columns say what they count
    summary = proc.stdout.strip()
    assert summary.startswith(str(tmp_path / "run" / "adapter"))
    assert "1 steps, final loss" in summary and "(mean of the last 1 steps)" in summary and "modulation" in summary
    assert json.loads((tmp_path / "run/train/iter-1/train.json").read_text())["config"]["train_frames"] == 4
    both = subprocess.run([sys.executable, "-m", "mora.cli", "train", "--prompts", "p.txt", "--data", "d", "--out",
                           "r"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert both.returncode == 2 and "not allowed with" in both.stderr


def test_resuming_an_iteration_s_fine_tuning_keeps_the_previous_adapter_as_z0(tmp_path, monkeypatch):
    """Issue 30 item 4: a fine-tuning resumed mid-iteration measured drift and modulation_initial from
    E("[Mod]") instead of the previous iteration's z (what the uninterrupted run measures from)."""
    import torch
    from safetensors.torch import load_file

    import mora
    from mora.adapters.modulation import modulation_factor
    from mora.training.trainer import Trainer

    real = Trainer.train_step

    def interrupting(self, step, windows=None):
        if self.run_dir.name == "iter-2" and step == 1 and not self.resumed_from:
            raise KeyboardInterrupt  # iteration 2, after its step-1 checkpoint
        return real(self, step, windows)

    monkeypatch.setattr(Trainer, "train_step", interrupting)
    out = tmp_path / "run"
    options = dict(prompts=PROMPTS[:1], out=out, iterations=2, candidates=2, steps=2, checkpoint_every=1,
                   lr=1e-2, mod_lr=1e-1, **FAST)
    with pytest.raises(KeyboardInterrupt):
        mora.train(**options)
    mora.train(resume=True, **options)
    previous = load_file(str(out / "train/iter-1/adapter/modulation.safetensors"))
    final = load_file(str(out / "train/iter-2/adapter/modulation.safetensors"))
    manifest = json.loads((out / "train/iter-2/train.json").read_text())
    adapter = json.loads((out / "train/iter-2/adapter/adapter.json").read_text())
    assert manifest["resumed_from"]  # the interruption happened where it should
    for agent, z0 in previous.items():
        drift = float((final[agent] - z0).norm())
        assert drift > 0
        assert manifest["modulation_initial"][agent] == pytest.approx(modulation_factor(z0), rel=1e-6)
        assert manifest["modulation_drift"][agent] == pytest.approx(drift, rel=1e-4)
        assert adapter["modulation_drift"][agent] == pytest.approx(drift, rel=1e-4)
        cos = float(torch.nn.functional.cosine_similarity(final[agent].flatten(), z0.flatten(), dim=0))
        assert adapter["modulation_cos"][agent] == pytest.approx(cos, rel=1e-5)


def test_training_frames_at_a_lower_fps_than_the_candidates_are_checked_before_any_is_made(tmp_path):
    """Issue 30 item 1: at --train-fps 3 a 7 fps candidate is read every 2nd frame: 4 frames span 7, 5 span 9."""
    from mora.training.loop import check_loop

    options = dict(iterations=1, candidates=2, steps=1, preset="tiny", device="cpu", train_fps=3)
    assert check_loop(["a fox"], tmp_path / "a", train_frames=4, **options).train_options["train_frames"] == 4
    with pytest.raises(InputError, match=r"--train-frames: 5 at --train-fps 3 \(every 2 frames\) is more than the 7 "
                                         r"frames each candidate of preset 'tiny' has; pass --train-frames 4 or less"):
        check_loop(["a fox"], tmp_path / "b", train_frames=5, **options)
    assert not (tmp_path / "b").exists()

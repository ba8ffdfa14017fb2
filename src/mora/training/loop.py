"""The paper's data-free training: generate candidates, filter them by vote, fine-tune on what survives.

For iteration k = 1..K (`mora train --prompts FILE`, `mora.train(prompts=...)`):

1. each prompt goes through the normal text-to-video route (`mora.run`: the route's prompt_agent
   enhances it, LLM when configured, deterministic otherwise), N times with recorded seeds, using
   the adapter of iteration k - 1 (none at k = 1);
2. judges vote per prompt: the score card (always; the best candidate by `quality`) and every LLM
   entry tagged "vision" (`mora.agents.critic.vote`: one contact sheet of several frames per
   candidate, a validated `{"choice": N | "none"}`, abstaining on failure). All agree -> kept
   (`unanimous`); one judge only -> kept (`single_judge`); they disagree -> `human(candidates, votes)`
   decides, or without one the prompt is dropped (`disagreement`); every candidate under the
   quality floor -> dropped (`quality`);
3. kept samples go to `RUN_DIR/data/iter-k/` (videos + metadata.jsonl, the `--data` format);
4. the trainer fine-tunes `steps` steps on everything kept so far (`RUN_DIR/data/all/`, rebuilt from
   the iter-* folders), starting from the previous adapter; its run is `RUN_DIR/train/iter-k/`.

Every finished candidate (its manifest) and every decision (`decision.json`) is kept, so `resume`
continues inside an iteration without regenerating or asking again. `RUN_DIR/train.json` has a
row per iteration; `RUN_DIR/loss.png` marks the iteration boundaries; `RUN_DIR/adapter` is the
newest adapter.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mora import media
from mora.adapters.adapter import write_folder_atomically
from mora.errors import InputError
from mora.training.loop_config import (  # noqa: F401 - check_loop, load_prompts: this module's API too
    MANIFEST,
    TASK,
    LoopConfig,
    candidate_job_fields,
    check_loop,
    clear_run,
    load_prompts,
)
from mora.training.report import contact_sheet

logger = logging.getLogger(__name__)

SCORE_JUDGE = "score_card"
Human = Callable[[list[dict], dict], Any]


@dataclass
class LoopResult:
    """What `mora.train(prompts=...)` returns.

    Attributes:
        adapter_dir: `RUN_DIR/adapter` (the newest adapter), or None if nothing was ever kept.
        run_dir: RUN_DIR.
        iterations: the rows of train.json, one per iteration.
        manifest: the content of `RUN_DIR/train.json`.
        final: the summary of the last fine-tuning (a `TrainResult`: adapter, steps in all iterations,
            final loss = mean of its last 10 steps, modulation), None if nothing was ever kept.
    """

    adapter_dir: Path | None
    run_dir: Path
    iterations: list[dict]
    manifest: dict = field(repr=False)
    final: Any = None


# --- one iteration ------------------------------------------------------------------------------


def candidate_seed(base: int, k: int, prompt: int, candidate: int) -> int:
    """The seed of candidate `candidate` of prompt `prompt` in iteration k: a pure function of all four."""
    return int(np.random.SeedSequence([base, k, prompt, candidate]).generate_state(1)[0])


class DataFreeLoop:
    """Runs the loop of one `LoopConfig`; `mora.train(prompts=...)` is `DataFreeLoop(...).run()`."""

    def __init__(self, cfg: LoopConfig, *, human: Human | None = None, progress: bool = True):
        from mora.agents.critic import vision_judges

        self.cfg, self.human, self.progress = cfg, human, progress
        self.judges = vision_judges(cfg.config_list)
        self.rows: list[dict] = []
        self.status = "running"

    @property
    def out(self) -> Path:
        return self.cfg.out

    def iter_dir(self, kind: str, k: int) -> Path:
        return self.out / kind / f"iter-{k}"

    def candidates(self, k: int, i: int, prompt: str, adapter: Path | None, bar: Any = None) -> list[dict]:
        """The N candidates of prompt i in iteration k, made now or reused from an earlier attempt.

        Each is a job of the job model: the prompt, the job options given to `mora train` (`cfg.job`),
        and the candidate's seed, output and adapter.
        """
        from mora.evaluation.critic import quality
        from mora.workflows.prepare import Hooks
        from mora.workflows.runner import run_job

        folder = self.iter_dir("candidates", k) / f"p{i:03d}"
        made = []
        for j in range(1, self.cfg.options.candidates + 1):
            seed, video = candidate_seed(self.cfg.seed, k, i, j), folder / f"c{j}.mp4"
            manifest = _reusable(video, seed, adapter)
            if manifest is None:
                job = {"task": "text-to-video", "prompt": prompt, **self.cfg.job, "seed": seed, "out": str(video),
                       "adapter": str(adapter) if adapter else None, "overwrite": True, "metrics": True}
                manifest = run_job(job, Hooks(progress=False)).manifest
            else:
                logger.info("iteration %d, prompt %d: candidate %d reused", k, i, j)
            sheet = folder / f"c{j}_sheet.png"
            if not sheet.is_file():
                contact_sheet(video, sheet)
            card = manifest.get("metrics") or {}
            made.append({"number": j, "video": str(video), "sheet": str(sheet), "seed": seed,
                         "enhanced_prompt": manifest.get("enhanced_prompt") or prompt, "scores": card,
                         "quality": quality(card), "adapter": (manifest.get("adapter") or {}).get("path")})
            if bar is not None:
                bar.set_postfix_str(f"prompt {i} candidate {j}: quality {made[-1]['quality']:.3f}", refresh=False)
                bar.update(1)
        return made

    def decide(self, k: int, i: int, prompt: str, candidates: list[dict]) -> dict:
        """Filter one prompt's candidates (or reuse the recorded decision); returns the decision."""
        path = self.iter_dir("candidates", k) / f"p{i:03d}" / "decision.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        decision = self._vote(prompt, candidates)
        if decision["dropped"] is None and decision["decided_by"] is None:  # the judges disagree
            decision.update(self._ask_human(candidates, decision["votes"]))
        media.write_json(decision, path)
        logger.info("iteration %d, prompt %d: %s", k, i, _describe(decision))
        return decision

    def _vote(self, prompt: str, candidates: list[dict]) -> dict:
        """The judges' votes over the eligible candidates (those at or above the quality floor) only."""
        from mora.agents.critic import vote

        decision: dict[str, Any] = {"kept": None, "dropped": None, "decided_by": None, "votes": {}, "judge_errors": {}}
        eligible = [c for c in candidates if c["quality"] >= self.cfg.options.quality_floor]
        if not eligible:
            decision["dropped"] = "quality"
            return decision
        best = max(eligible, key=lambda c: (c["quality"], -c["number"]))
        votes: dict[str, Any] = {SCORE_JUDGE: best["number"]}
        for name, entry in self.judges:
            choice, error = vote(entry, [c["sheet"] for c in eligible], prompt, self.cfg.config_list)
            votes[name] = "abstain" if choice is None else choice if choice == "none" else eligible[choice]["number"]
            if error:
                decision["judge_errors"][name] = error
        decision["votes"] = votes
        cast = {v for v in votes.values() if v != "abstain"}
        voters = sum(v != "abstain" for v in votes.values())
        if voters == 1:
            decision.update(kept=best["number"], decided_by="single_judge")
        elif cast == {best["number"]}:
            decision.update(kept=best["number"], decided_by="unanimous")
        return decision

    def _ask_human(self, candidates: list[dict], votes: dict) -> dict:
        """The human sees (and may keep) only the eligible candidates; their numbers stay the candidates' own."""
        if self.human is None:
            return {"dropped": "disagreement"}
        eligible = [c for c in candidates if c["quality"] >= self.cfg.options.quality_floor]
        answer = self.human([dict(c) for c in eligible], dict(votes))
        if answer is None or (isinstance(answer, str) and answer.strip().lower() == "none"):
            return {"dropped": "human", "decided_by": "human"}
        try:
            number = int(answer)
        except (TypeError, ValueError):
            number = 0
        numbers = [c["number"] for c in eligible]
        if isinstance(answer, bool) or number not in numbers:
            raise InputError(f"human: {answer!r} is not one of the candidates shown ({', '.join(map(str, numbers))}) "
                             "or None")
        return {"kept": number, "decided_by": "human"}

    def iteration(self, k: int, adapter: Path | None) -> tuple[dict, Path | None, Any]:
        """Run iteration k with `adapter`; returns its train.json row, the new adapter and the fine-tuning's result."""
        started = time.perf_counter()
        kept, decisions = [], []
        bar = self._candidate_bar(k)
        try:
            for i, prompt in enumerate(self.cfg.prompts, start=1):
                candidates = self.candidates(k, i, prompt, adapter, bar)
                decision = self.decide(k, i, prompt, candidates)
                decisions.append(decision)
                if decision.get("kept"):
                    kept.append(_sample(i, prompt, candidates[decision["kept"] - 1], decision))
        finally:
            if bar is not None:
                bar.close()
        write_kept(self.iter_dir("data", k), kept)
        result = self.fine_tune(k, adapter)
        new_adapter = result.adapter_dir if result is not None else adapter
        row = _row(k, self.cfg, decisions, kept, result, time.perf_counter() - started, new_adapter, self.out)
        return row, new_adapter, result

    def _candidate_bar(self, k: int) -> Any:
        """A progress line per candidate made (the first minute of a run would be silent otherwise)."""
        if not self.progress:
            return None
        from mora.progress import bar

        return bar(len(self.cfg.prompts) * self.cfg.options.candidates, unit="video",
                   desc=f"iteration {k}/{self.cfg.options.iterations}: candidates")

    def fine_tune(self, k: int, adapter: Path | None) -> Any:
        """`steps` steps on everything kept so far, from `adapter`; None when nothing was kept yet.

        From iteration 2 on, the run starts from the previous adapter's theta_i and z_i (reported as
        its start: `modulation_initial`, drift and cosine are measured from the loaded z) and from
        the optimizer state of the fine-tuning that wrote it.
        """
        from mora.training.checkpoints import checkpoints
        from mora.training.config import TrainConfig
        from mora.training.trainer import Trainer

        data = assemble_all(self.out / "data", k)
        if data is None:
            logger.warning("iteration %d: nothing kept so far; no fine-tuning, the adapter stays", k)
            return None
        run_dir = self.iter_dir("train", k)
        resume = run_dir.is_dir() and bool(checkpoints(run_dir))
        if run_dir.is_dir() and not resume:  # interrupted before its first checkpoint: start it again
            shutil.rmtree(run_dir)
        cfg = TrainConfig(data=data, out=run_dir, resume=resume, **self.cfg.train_options)
        trainer = Trainer(cfg, progress=self.progress)
        trainer.prepare()
        if adapter is not None and trainer.resumed_from is None:
            load_weights(trainer, adapter)
        elif adapter is not None:  # the checkpoint holds the weights; the reference is still the adapter's z
            from mora.adapters.adapter import load_adapter

            set_reference(trainer, load_adapter(adapter, trainer.cfg.preset_obj()))
        return trainer.run()

    def run(self) -> LoopResult:
        """All iterations (finished ones of a resumed run are skipped); writes train.json after each."""
        if self.cfg.overwrite:
            clear_run(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.cfg.resume:
            previous = json.loads((self.out / MANIFEST).read_text(encoding="utf-8"))
            self.rows = [r for r in previous.get("iterations", []) if r.get("status") == "complete"]
        adapter = self.out / self.rows[-1]["adapter"] if self.rows and self.rows[-1].get("adapter") else None
        self.write_manifest()
        try:
            for k in range(len(self.rows) + 1, self.cfg.options.iterations + 1):
                logger.info("data-free iteration %d of %d (adapter: %s)", k, self.cfg.options.iterations, adapter)
                row, adapter, _ = self.iteration(k, adapter)
                self.rows.append(row)
                self.write_manifest()
            self.status = "complete"
            final = None
            if adapter is not None:
                final = self.out / "adapter"
                write_folder_atomically(final, lambda tmp: shutil.copytree(adapter, tmp, dirs_exist_ok=True))
            plot_iterations(self.out, self.rows)
            manifest = self.write_manifest(final)
            return LoopResult(adapter_dir=final, run_dir=self.out, iterations=self.rows, manifest=manifest,
                              final=self._summary(final, manifest))
        except BaseException as error:
            self.status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            try:
                self.write_manifest()
            except (OSError, TypeError, ValueError):  # the record of the failure is best effort (disk, JSON)
                logger.debug("could not record the %s run", self.status)
            raise

    def _summary(self, final: Path | None, manifest: dict) -> Any:
        """The run's `TrainResult`: the same summary `--data` ends with (steps of every iteration)."""
        from mora.training.trainer import TrainResult

        trained = [r for r in self.rows if r.get("loss") is not None]
        if final is None or not trained:
            return None
        last = trained[-1]
        metrics = self.out / "train" / f"iter-{last['iteration']}" / "metrics.jsonl"
        return TrainResult(adapter_dir=final, metrics_path=metrics, final_loss=float(last["loss"]), run_dir=self.out,
                           steps=sum(r["steps"] for r in trained), modulation=manifest["adapter"]["modulation"],
                           manifest=manifest)

    def write_manifest(self, adapter: Path | None = None) -> dict:
        from mora.adapters.adapter import load_adapter

        single = not self.judges
        manifest = {
            "task": TASK, "status": self.status, "config": self.cfg.to_json(),
            "judges": [SCORE_JUDGE, *(name for name, _ in self.judges)], "single_judge": single,
            "summary": ("only the score card judged (no LLM entry tagged \"vision\" in the LLM config): every "
                        "decision is single_judge") if single else
                       f"{len(self.judges) + 1} judges voted; disagreements went to the human",
            "iterations": self.rows, "adapter": None, "loss_plot": "loss.png",
        }
        if adapter is not None:
            entry = load_adapter(adapter).manifest_entry()
            manifest["adapter"] = {**entry, "path": "adapter"}
        media.write_json(manifest, self.out / MANIFEST)
        return manifest


# --- helpers --------------------------------------------------------------------------------------


def _reusable(video: Path, seed: int, adapter: Path | None) -> dict | None:
    """The manifest of a finished candidate made with this seed and adapter, or None."""
    manifest_path = video.with_suffix(".json")
    if not (video.is_file() and manifest_path.is_file()):
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    made_with = (manifest.get("adapter") or {}).get("path")
    same_adapter = (made_with is None and adapter is None) or (
        made_with is not None and adapter is not None and Path(made_with).resolve() == Path(adapter).resolve())
    return manifest if manifest.get("seed") == seed and same_adapter else None


def _sample(i: int, prompt: str, candidate: dict, decision: dict) -> dict:
    from mora.evaluation.critic import quality

    return {"file_name": f"p{i:03d}.mp4", "text": candidate["enhanced_prompt"], "prompt": prompt,
            "seed": candidate["seed"], "candidate": candidate["number"], "votes": decision["votes"],
            "decided_by": decision["decided_by"], "quality": quality(candidate["scores"]),
            "scores": candidate["scores"], "_video": candidate["video"]}


def write_kept(folder: Path, kept: list[dict]) -> Path:
    """`folder/`: the kept videos and their metadata.jsonl (the `--data` format), written atomically."""

    def fill(tmp: Path) -> None:
        lines = []
        for sample in kept:
            shutil.copyfile(sample["_video"], tmp / sample["file_name"])
            lines.append(json.dumps({k: v for k, v in sample.items() if not k.startswith("_")}, default=str))
        (tmp / "metadata.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    return write_folder_atomically(folder, fill) or folder


def assemble_all(data_root: Path, k: int) -> Path | None:
    """`data_root/all/`: every sample of `iter-1` .. `iter-k` (hard links, else copies); None if none."""
    rows = []
    for j in range(1, k + 1):
        meta = data_root / f"iter-{j}" / "metadata.jsonl"
        if meta.is_file():
            rows += [(j, json.loads(line)) for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        return None

    def fill(tmp: Path) -> None:
        lines = []
        for j, row in rows:
            (tmp / f"iter-{j}").mkdir(exist_ok=True)
            source, name = data_root / f"iter-{j}" / row["file_name"], f"iter-{j}/{row['file_name']}"
            try:
                os.link(source, tmp / name)
            except OSError:
                shutil.copyfile(source, tmp / name)
            lines.append(json.dumps({**row, "file_name": name}))
        (tmp / "metadata.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    write_folder_atomically(data_root / "all", fill)
    return data_root / "all"


def load_weights(trainer: Any, adapter_dir: Path) -> None:
    """Start `trainer` from a saved adapter: its theta_i and z_i for every agent both have.

    The loaded z_i becomes the run's reference (`z_init`: modulation_initial, drift and cosine are
    measured from it), and when the adapter was written by a run with a checkpoint beside it (a
    data-free iteration's `train/iter-k/`), that run's optimizer state is carried over too.
    """
    import torch

    from mora.adapters.adapter import load_adapter
    from mora.adapters.lora import read_lora_file, set_lora_state
    from mora.training.checkpoints import OPTIMIZER, checkpoints

    adapter = load_adapter(adapter_dir, trainer.cfg.preset_obj())
    for agent, model in trainer.models.items():
        if not adapter.has(agent):
            continue
        state, _ = read_lora_file(Path(adapter.path) / f"{agent}.safetensors")
        set_lora_state(model.pipe.unet, state)
        with torch.no_grad():
            model.z.copy_(adapter.modulation(agent).to(model.z.device, model.z.dtype))
    set_reference(trainer, adapter)
    found = checkpoints(Path(adapter_dir).parent)
    if found and set(adapter.agents) == set(trainer.models):
        state = torch.load(found[-1][1] / OPTIMIZER, map_location="cpu", weights_only=True)
        trainer.optimizer.load_state_dict(state)
        logger.info("optimizer state carried over from %s", found[-1][1])


def set_reference(trainer: Any, adapter: Any) -> None:
    """Make a loaded adapter's z_i the run's reference `z_init` (modulation_initial, drift and cosine)
    for every agent it has: a fine-tuning that starts from it, fresh or resumed, is measured from it."""
    for agent, model in trainer.models.items():
        if adapter.has(agent):
            model.z_init = adapter.modulation(agent).to(model.z.device, model.z.dtype).clone()


def _describe(decision: dict) -> str:
    if decision.get("dropped"):
        return f"dropped ({decision['dropped']}); votes {decision['votes']}"
    return f"kept candidate {decision['kept']} ({decision['decided_by']}); votes {decision['votes']}"


def _row(k: int, cfg: LoopConfig, decisions: list[dict], kept: list[dict], result: Any, seconds: float,
         adapter: Path | None, out: Path) -> dict:
    dropped = Counter(d["dropped"] for d in decisions if d.get("dropped"))
    scores = [s["quality"] for s in kept]
    return {
        "iteration": k, "status": "complete", "prompts": len(cfg.prompts),
        "candidates": len(cfg.prompts) * cfg.options.candidates, "kept": len(kept),
        "dropped": {reason: dropped.get(reason, 0) for reason in ("quality", "disagreement", "human")},
        "decided_by": dict(Counter(d["decided_by"] for d in decisions if d.get("kept"))),
        "human_decisions": sum(d.get("decided_by") == "human" for d in decisions),
        "judge_abstentions": sum(len(d.get("judge_errors") or {}) for d in decisions),
        "mean_kept_score": round(sum(scores) / len(scores), 4) if scores else None,
        "loss": None if result is None else round(float(result.final_loss), 6),
        "steps": 0 if result is None else cfg.steps, "seconds": round(seconds, 2),
        "loss_is": "mean of the iteration's last 10 steps",
        "adapter": str(Path(adapter).relative_to(out)) if adapter else None,
    }


def plot_iterations(out: Path, rows: list[dict]) -> Path | None:
    """`out/loss.png`: the fine-tuning steps of every iteration end to end, boundaries marked."""
    from mora.training.report import MetricsLog, plot_losses

    records, boundaries, offset = [], [], 0
    for row in rows:
        path = out / "train" / f"iter-{row['iteration']}" / "metrics.jsonl"
        if row.get("steps") and path.is_file():
            steps = [r for r in MetricsLog(path).read() if "loss" in r]  # not the validation rows
            records += [{**r, "step": r["step"] + offset} for r in steps]
            offset += len(steps)
        boundaries.append(offset)
    return plot_losses(records, out / "loss.png", boundaries=boundaries[:-1])


def train_data_free(prompts: Any, out: Any, *, human: Human | None = None, progress: bool = True,
                    resume: bool = False, job: dict | None = None, **options: Any) -> LoopResult:
    """The data-free loop (`mora.train(prompts=...)`); see the module docstring.

    Args:
        prompts: a text file (one prompt per line) or a list of prompts.
        out: RUN_DIR (new, an earlier run's with `overwrite=True`, or this run with `resume=True`).
        human: `human(candidates, votes)` settles a disagreement: a candidate number (1-based) or None
            to drop the prompt. It is shown only the candidates at or above the quality floor. None:
            such prompts are dropped (`disagreement`).
        job: the candidates' job options (`candidate_job_fields`: preset, preset_file, device,
            llm_config, ...); they may also be given as keywords.
        **options: `LoopOptions` (iterations=3, candidates=4 (>= 2), quality_floor=0.0) and `TrainConfig`
            fields for the fine-tuning (steps per iteration, default 50; rank, lr, train_size, ...).
            `train_frames` defaults to the frames each candidate has (at most the training default).

    Raises:
        InputError: bad prompts or options, a combination that cannot work (e.g. more training frames
            than a candidate has), RUN_DIR holding another run; nothing is generated then.

    Example:
        >>> mora.train(prompts=["a fox"], out="runs/df", preset="tiny", iterations=1, candidates=2,
        ...            steps=2)  # doctest: +SKIP
    """
    cfg = check_loop(prompts, out, resume=resume, job=job, **options)
    return DataFreeLoop(cfg, human=human, progress=progress).run()


def train(data: Any = None, out: Any = None, *, prompts: Any = None, human: Human | None = None,
          progress: bool = True, callback: Callable[[dict[str, Any]], None] | None = None, **options: Any) -> Any:
    """`mora.train`: fine-tuning on a folder of clips (`data=`) or the data-free loop (`prompts=`).

    Exactly one of `data` and `prompts`. With `data`: `mora.training.trainer.train` (a `TrainResult`);
    with `prompts`: `train_data_free` (a `LoopResult`; `human`, iterations, candidates, steps per
    iteration, quality_floor, llm_config).

    Example:
        >>> mora.train(prompts=["a red fox running through snow"], out="runs/df", preset="tiny",
        ...            iterations=1, candidates=2, steps=2)  # doctest: +SKIP
    """
    from mora.training import trainer

    if (data is None) == (prompts is None):
        raise InputError("train: pass exactly one of data (a folder of clips) and prompts (the data-free loop)")
    if prompts is not None:
        return train_data_free(prompts, out, human=human, progress=progress, **options)
    if human is not None:
        raise InputError("human: only the data-free loop (prompts=) asks a human; drop it with data=")
    return trainer.train(data, out, progress=progress, callback=callback, **options)

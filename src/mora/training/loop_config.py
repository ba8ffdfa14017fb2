"""The data-free loop's checks and config: everything `mora train --prompts` verifies before a candidate is made.

Prompts, RUN_DIR (new, `--overwrite`, `--resume`), the loop's options (`LoopOptions`), the job
options every candidate gets (validated by the job model) and the fine-tuning's options
(`TrainConfig`, with `train_frames` defaulting to what a candidate has). Nothing here writes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mora.errors import InputError
from mora.training.manifest import ADAPTER_DIR, MANIFEST

TASK = "train-data-free"
# What a data-free run leaves in RUN_DIR (`--overwrite` removes these, after every check passed).
RUN_PARTS = (ADAPTER_DIR, MANIFEST, "candidates", "checkpoints", "data", "train", "loss.png")


# Options a candidate job gets per candidate from the loop, never from the caller.
LOOP_SETS = ("seed", "out", "adapter", "overwrite", "resume", "metrics")


def candidate_job_fields() -> tuple[str, ...]:
    """The job options `mora train` passes to every candidate: the preset and the host's options (device,
    LLM config, preset file, ...), from the job model; the loop sets seed, out and adapter itself."""
    from mora.workflows.jobspec import OPTIONS

    return tuple(name for name, o in OPTIONS.items()
                 if (name == "preset" or o.scope == "host") and name not in LOOP_SETS)


@dataclass
class LoopConfig:
    """A checked data-free run: prompts, RUN_DIR, the loop's options, the candidates' job options and the
    fine-tuning's options (`TrainConfig` fields, `steps` per iteration)."""

    prompts: list[str]
    out: Path
    options: Any  # LoopOptions
    job: dict  # the candidates' job options, validated by the job model (preset, preset_file, device, ...)
    train_options: dict
    config_list: list[dict] | None = None
    resume: bool = False
    overwrite: bool = False

    @property
    def seed(self) -> int:
        return int(self.train_options.get("seed", 0))

    @property
    def steps(self) -> int:
        return int(self.train_options["steps"])

    def to_json(self) -> dict:
        job = {k: v for k, v in self.job.items() if k != "llm_config"}  # a config list may hold keys
        return {"prompts": self.prompts, **self.options.model_dump(), "job": job,
                "train_options": {k: list(v) if isinstance(v, tuple) else v for k, v in self.train_options.items()}}


# --- checks (before anything is generated) -------------------------------------------------------


def load_prompts(prompts: Any) -> list[str]:
    """The usable prompts of a file (one per line; blank lines and `#` comments skipped) or a list."""
    from mora.limits import check_text

    if isinstance(prompts, (str, os.PathLike)):
        path = Path(prompts).expanduser()
        if not path.is_file():
            raise InputError(f"--prompts: {os.fspath(prompts)!r} is not a file; pass a text file with one prompt "
                             "per line")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"--prompts: {os.fspath(prompts)!r} cannot be read ({type(err).__name__}); write it "
                             "as UTF-8 text, one prompt per line") from None
        where = repr(os.fspath(prompts))
    elif isinstance(prompts, (list, tuple)) and all(isinstance(p, str) for p in prompts):
        lines, where = list(prompts), "the prompts list"
    else:
        raise InputError("prompts: pass a file path or a list of strings")
    usable = [check_text(line, "--prompts") for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not usable:
        raise InputError(f"--prompts: {where} has no usable prompt (only blank or # lines); write one prompt per "
                         "line")
    return usable


def check_loop(prompts: Any, out: Any, *, resume: bool = False, job: dict | None = None,
               **options: Any) -> LoopConfig:
    """Every check of a data-free run; returns its config. Raises InputError; writes nothing.

    Args:
        prompts: a file or a list of prompts.
        out: RUN_DIR.
        resume: continue the run in RUN_DIR.
        job: the candidates' job options (preset, preset_file, device, llm_config, ...: `candidate_job_fields`).
        **options: `LoopOptions` fields (iterations, candidates, quality_floor), `TrainConfig` fields for
            the fine-tuning (steps per iteration, default 50), and job options as keywords too.

    Example:
        >>> cfg = check_loop(["a fox"], "runs/df", preset="tiny", iterations=1, candidates=2, steps=2)
    """
    from mora.agents.llm import load_llm_config
    from mora.training.config import LoopOptions, TrainConfig
    from mora.workflows.jobspec import parse_job

    if out is None:
        raise InputError("--out: missing; pass the run folder (RUN_DIR)")
    job = dict(job or {})
    for name in candidate_job_fields():
        if name in options:
            job[name] = options.pop(name) if name not in TrainConfig.model_fields else options[name]
    loop = LoopOptions(**{k: options.pop(k) for k in list(options) if k in LoopOptions.model_fields})
    bad = sorted(set(options) & {"data", "out", "resume"})
    if bad:
        raise InputError(f"{bad[0]}: not an option of the data-free loop")
    checked = parse_job({"task": "text-to-video", "prompt": "a fox", **job})
    job = {k: v for k in job if (v := getattr(checked, k)) is not None}
    options.setdefault("steps", 50)
    for name in ("preset", "preset_file", "device"):  # the fine-tuning runs on the candidates' models
        if name in job:
            options[name] = job[name]
    overwrite = bool(options.pop("overwrite", False))
    train = TrainConfig(data=Path(out) / "data" / "all", out=Path(out) / "train" / "iter-1", **options).validate()
    options.setdefault("train_frames", _frames_made(train, options))
    cfg = LoopConfig(prompts=load_prompts(prompts), out=Path(out).expanduser(), options=loop, job=job,
                     train_options=options, config_list=load_llm_config(job.get("llm_config")),
                     resume=bool(resume), overwrite=overwrite)
    _check_run_dir(cfg)
    return cfg


def _frames_made(train: Any, options: dict) -> int:
    """The frames training reads from each candidate: the training default (the preset's), at most
    what a candidate has.

    Refuses `--train-frames` (at `--train-fps`) spanning more than what the preset's text-to-video
    makes, before any candidate is made.
    """
    from mora.tools.segments import chained_length
    from mora.training.data import frame_stride

    if "image_to_video_agent" not in train.agents and "train_frames" not in options:
        return train.train_frames
    settings = train.preset_obj().spec("image_to_video").settings
    made = chained_length(settings.num_frames, getattr(settings, "segments", 1))
    stride = frame_stride(settings.fps, train.train_fps)  # the candidates are made at the preset's fps
    if "train_frames" in options:
        if (train.train_frames - 1) * stride + 1 > made:
            most = (made - 1) // stride + 1
            at = f" at --train-fps {train.train_fps:g} (every {stride} frames)" if stride > 1 else ""
            raise InputError(f"--train-frames: {train.train_frames}{at} is more than the {made} frames each "
                             f"candidate of preset {train.preset_name!r} has; pass --train-frames {most} or less "
                             "(or leave it out: training then reads what the preset makes)")
        return train.train_frames
    return min(train.train_frames, (made - 1) // stride + 1)


def _check_run_dir(cfg: LoopConfig) -> None:
    out = cfg.out
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {str(out)!r} is a file; pass a folder for the run")
    manifest = out / MANIFEST
    if cfg.resume and cfg.overwrite:
        raise InputError("--overwrite: cannot be used with --resume; pick one (resume continues the run, "
                         "overwrite starts a new one)")
    if not cfg.resume:
        if not cfg.overwrite and any((out / name).exists() for name in RUN_PARTS):
            raise InputError(f"--out: {str(out)!r} already holds a run (its adapter or train.json); pass --resume "
                             "to continue it, --overwrite to replace it, or choose a new folder")
        return
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(f"--resume: {str(out)!r} has no data-free run to resume (no readable {MANIFEST}); drop "
                         "--resume to start one") from None
    if previous.get("task") != TASK:
        raise InputError(f"--resume: {str(out)!r} holds a training run on --data, not a --prompts run")
    if previous.get("config") != json.loads(json.dumps(cfg.to_json())):
        raise InputError(f"--resume: the options differ from those of the run in {str(out)!r}; resume with the "
                         "same prompts and options, or start a new folder")


def clear_run(out: Path) -> None:
    """Remove an earlier run's parts from RUN_DIR (`--overwrite`, after every check passed)."""
    for name in RUN_PARTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

"""Checkpoints (`RUN_DIR/checkpoints/step-N/`) and the rules for starting or resuming a run in RUN_DIR.

A checkpoint is an adapter folder (so `load_adapter` reads it too) plus `optimizer.pt` and
`state.json` (the step and the run's options). It is written into a hidden temp folder and renamed
into place, so the newest complete checkpoint survives a Ctrl-C or a crash at any moment.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from mora.adapters.adapter import write_adapter, write_folder_atomically
from mora.adapters.lora import read_lora_file
from mora.errors import InputError
from mora.training.config import RUN_DEFINING, TrainConfig
from mora.training.ema import EMA_FILE

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE = "state.json"
OPTIMIZER = "optimizer.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")
# What makes a folder "a run": any of these (a lone train.log is a failed start, not a run).
RUN_MARKERS = ("adapter", CHECKPOINTS, "metrics.jsonl", "train.json", "loss.png")


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first (temp folders of interrupted writes are not listed)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def check_run_dir(cfg: TrainConfig) -> Path | None:
    """Decide how the run starts: None (a new run) or the checkpoint to resume. Writes nothing.

    Raises:
        InputError: `out` is a file; it holds another run and `resume` is off; `resume` is on and
            there is no checkpoint.
    """
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {str(out)!r} is a file; pass a folder for the run")
    is_run = out.is_dir() and any((out / marker).exists() for marker in RUN_MARKERS)
    if cfg.resume:
        found = checkpoints(out) if out.is_dir() else []
        if not found:
            raise InputError(f"--resume: {str(out)!r} has no checkpoint to resume from; drop --resume to start a "
                             "new run (in an empty folder)")
        return found[-1][1]
    if is_run and not cfg.overwrite:
        raise InputError(f"--out: {str(out)!r} already holds a training run; pass --resume to continue it, "
                         "--overwrite to replace it, or choose a new folder")
    return None


def clear_run(run_dir: Path) -> None:
    """Remove an earlier run's files from `run_dir` (`--overwrite`, after every check passed)."""
    for name in (*RUN_MARKERS, "train.log"):  # the cache stays: its index says when it is stale
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def save_checkpoint(run_dir: Path, step: int, *, lora: dict[str, dict[str, torch.Tensor]],
                    modulation: dict[str, torch.Tensor], optimizer_state: dict[str, Any], info: dict[str, Any],
                    config: TrainConfig, keep: int, ema_state: dict | None = None) -> Path:
    """Write `checkpoints/step-<step>/` atomically, then delete all but the `keep` newest (`ema_state`: --ema's)."""
    target = run_dir / CHECKPOINTS / f"step-{step}"

    def fill(tmp: Path) -> None:
        write_adapter(tmp, lora=lora, modulation=modulation, info={**info, "steps": step})
        torch.save(optimizer_state, tmp / OPTIMIZER)
        if ema_state is not None:
            torch.save(ema_state, tmp / EMA_FILE)
        state = {"step": step, "config": config.to_json()}
        (tmp / STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    write_folder_atomically(target, fill)
    for _, old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in (run_dir / CHECKPOINTS).glob(".step-*"):  # temp folders of earlier interrupted writes
        shutil.rmtree(stale, ignore_errors=True)
    logger.info("checkpoint written: %s", target)
    return target


def load_checkpoint(path: Path, config: TrainConfig) -> tuple[int, dict, dict, dict]:
    """(step, agent -> LoRA state, agent -> z, optimizer state) of a checkpoint made with the same options.

    Raises:
        InputError: the checkpoint was made with other run-defining options (named, with both values).
    """
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    saved, now = state["config"], config.to_json()
    for key in RUN_DEFINING:
        a, b = _comparable(key, saved.get(key)), _comparable(key, now.get(key))
        if a != b:
            raise InputError(f"--resume: the checkpoint {str(path)!r} was made with {key}={saved.get(key)!r}, this "
                             f"run has {now.get(key)!r}; resume with the same options or start a new run")
    from safetensors.torch import load_file

    modulation = load_file(str(path / "modulation.safetensors"))
    lora = {agent: read_lora_file(path / f"{agent}.safetensors")[0] for agent in modulation}
    optimizer_state = torch.load(path / OPTIMIZER, map_location="cpu", weights_only=True)
    return int(state["step"]), lora, modulation, optimizer_state


def _comparable(key: str, value: Any) -> Any:
    if key == "data" and value is not None:
        return str(Path(value).expanduser().resolve())
    if isinstance(value, tuple):
        return list(value)
    return value

"""The run's record: `RUN_DIR/train.json`, and the description of the run that adapter.json carries.

Both are read off a prepared `Trainer` (its options, models, data and progress). Kept import-light
(the standard library at the top) so the data-free loop's checks can name the files without torch.
"""

from __future__ import annotations

import time
from typing import Any

MANIFEST = "train.json"
ADAPTER_DIR = "adapter"

FINAL_LOSS_STEPS = 10  # a run's final loss: the mean of its last this-many steps (one step is noise)


def adapter_info(trainer: Any) -> dict[str, Any]:
    """adapter.json content other than the files and modulation (which `write_adapter` adds)."""
    from importlib.metadata import version

    from mora.adapters.modulation import INIT_METHODS
    from mora.adapters.spec import AGENTS, MOD_TOKEN

    cfg, models = trainer.cfg, trainer.models
    stats = trainer.modulation_stats()
    return {
        "base": {"preset": cfg.preset_name, "models": {
            a: {"role": AGENTS[a].role, "family": m.family, "model": m.model} for a, m in models.items()}},
        "agents": list(models), "rank": cfg.rank, "lora_alpha": cfg.rank, "mod_token": MOD_TOKEN,
        "mod_tokens": cfg.mod_tokens, "modulation_init": {a: INIT_METHODS[m.family] for a, m in models.items()},
        "coupling": cfg.coupled, "lambda_image": cfg.lambda_image, "train_size": list(cfg.train_size),
        "train_frames": cfg.train_frames, "steps": trainer.step, "seed": cfg.seed, "mora_version": version("mora"),
        "modulation_drift": stats["modulation_drift"], "modulation_cos": stats["modulation_cos"],
        "ema": {"decay": cfg.ema_decay} if cfg.ema else None,
        "svd_conditioning": {"motion_bucket_id": cfg.motion_bucket_id, "noise_aug": cfg.noise_aug,
                             "fps": cfg.train_fps},
        "frame_strides": frame_strides(trainer.clips),
    }


def frame_strides(clips: list[Any]) -> dict[str, int]:
    """How many clips were read at each frame stride (`{"3": 10}`: ten clips, every 3rd frame)."""
    counts: dict[str, int] = {}
    for clip in sorted(clips, key=lambda c: c.stride):
        counts[str(clip.stride)] = counts.get(str(clip.stride), 0) + 1
    return counts


def write_manifest(trainer: Any, status: str, records: list[dict[str, Any]],
                   final_loss: float | None = None) -> dict[str, Any]:
    """Write `RUN_DIR/train.json` with `status` (running, complete, failed, interrupted); return its content."""
    from mora.adapters.adapter import ADAPTER_JSON, load_adapter
    from mora.adapters.modulation import modulation_factor
    from mora.media import write_json
    from mora.training.report import LOG_FILE, LOSS_PLOT, METRICS, peak_memory_gb, relative, versions

    run, cfg = trainer.run_dir, trainer.cfg
    adapter = None
    if status == "complete":
        adapter = load_adapter(run / ADAPTER_DIR).manifest_entry()
        adapter["path"] = relative(run / ADAPTER_DIR, run)
    seconds = [r["seconds"] for r in records]
    manifest = {
        "status": status, "task": "train", "preset": cfg.preset_name, "agents": list(cfg.agents),
        "models": {a: m.model for a, m in trainer.models.items()}, "coupled": cfg.coupled,
        "config": cfg.to_json(),
        "data": {"dir": str(cfg.data), "clips": len(trainer.clips), "fps": cfg.train_fps,
                 "frame_strides": frame_strides(trainer.clips)},
        "steps_done": trainer.step, "final_loss": final_loss,
        **trainer.modulation_stats(),
        "modulation_initial": {a: modulation_factor(m.z_init) for a, m in trainer.models.items()},
        "adapter": adapter, "files": {"metrics": METRICS, "loss_plot": LOSS_PLOT, "log": LOG_FILE,
                                      "adapter_json": f"{ADAPTER_DIR}/{ADAPTER_JSON}"},
        "resumed_from": relative(trainer.resumed_from, run) if trainer.resumed_from else None,
        "device": trainer.device, "dtype": str(trainer.dtype).removeprefix("torch."),
        "timings": {"total_s": round(time.time() - trainer.started, 2),
                    "s_per_step": round(sum(seconds) / len(seconds), 4) if seconds else None},
        "peak_memory_gb": peak_memory_gb(trainer.device), "versions": versions(),
    }
    write_json(manifest, run / MANIFEST)
    return manifest

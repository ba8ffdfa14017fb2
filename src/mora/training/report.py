"""What a run reports: `metrics.jsonl` (a line per step), `loss.png`, the run's log file and versions."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mora.media import atomic_path

logger = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
LOSS_PLOT = "loss.png"
LOG_FILE = "train.log"


class MetricsLog:
    """`metrics.jsonl`: one JSON object per optimizer step, appended and flushed as the step ends.

    Args:
        path: the file.

    Example:
        >>> log = MetricsLog(Path("run/metrics.jsonl"))  # doctest: +SKIP
        >>> log.append({"step": 1, "loss": 0.9})          # doctest: +SKIP
    """

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write: the step is redone anyway
                break
        return records

    def keep_until(self, step: int) -> list[dict[str, Any]]:
        """Drop lines after `step` (a resumed run redoes them), atomically; return what is kept."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        with atomic_path(self.path, suffix=".jsonl") as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        return kept

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


def plot_losses(records: list[dict[str, Any]], path: Path, boundaries: Sequence[int] = ()) -> Path | None:
    """`loss.png`: loss (total and per agent), modulation ||z_i||, drift and cosine, and (when `records` has
    validation rows) the validation videos' quality, over steps. None if nothing to plot.

    `boundaries`: steps after which a new data-free iteration starts, drawn as dashed lines.

    Uses matplotlib's Agg canvas directly (no pyplot), so the caller's backend is left alone.
    """
    validations = [r for r in records if "validation" in r]
    records = [r for r in records if "loss" in r]
    if not records:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r["step"] for r in records]
    fig = Figure(figsize=(9, 11 if validations else 9), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(4 if validations else 3, 1, sharex=True)
    loss_ax, mod_ax, drift_ax = axes[:3]
    if validations:  # the validation videos' score-card quality, one line per prompt
        for j in range(len(validations[-1]["validation"]["quality"])):
            axes[3].plot([v["step"] for v in validations],
                         [v["validation"]["quality"][j] if j < len(v["validation"]["quality"]) else math.nan
                          for v in validations], marker="o", label=f"prompt {j + 1}")
        axes[3].set_ylabel("validation quality")
        axes[3].legend(fontsize=8)
    loss_ax.plot(steps, [r["loss"] for r in records], label="total", color="black", linewidth=1.2)
    for agent in records[-1].get("loss_per_agent", {}):
        loss_ax.plot(steps, [r["loss_per_agent"].get(agent, math.nan) for r in records], label=agent, linewidth=0.9)
    loss_ax.set_ylabel("loss")
    loss_ax.set_yscale("log" if min(r["loss"] for r in records) > 0 else "linear")
    loss_ax.legend(fontsize=8)
    _per_agent(mod_ax, steps, records, "modulation", "modulation factor ||z_i||")
    # ||z|| barely moves while z does: its distance from the start and its direction show the change
    _per_agent(drift_ax, steps, records, "modulation_drift", "drift ||z_i - z_i0||")
    cos_ax = drift_ax.twinx()
    _per_agent(cos_ax, steps, records, "modulation_cos", "cos(z_i, z_i0) (dashed)", linestyle="--")
    axes[-1].set_xlabel("step")
    for ax in axes:
        for at in boundaries:
            ax.axvline(at + 0.5, color="grey", linestyle="--", linewidth=0.8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def _per_agent(ax: Any, steps: list[int], records: list[dict[str, Any]], key: str, label: str, **style: Any) -> None:
    """One line per agent of `key` (a dict per record); records without it (older runs) plot as gaps."""
    for agent in records[-1].get(key, {}):
        ax.plot(steps, [r.get(key, {}).get(agent, math.nan) for r in records], label=agent, **style)
    ax.set_ylabel(label)
    if records[-1].get(key):
        ax.legend(fontsize=8)


def contact_sheet(video_path: Path, path: Path, frames: int = 4) -> Path:
    """One image of `frames` frames of the video, evenly spaced in time, left to right."""
    import numpy as np
    from PIL import Image

    from mora import media

    video = media.read_video(video_path, argument="video")
    picks = np.linspace(0, len(video.frames) - 1, num=min(frames, len(video.frames))).round().astype(int)
    tiles = [Image.fromarray(np.asarray(video.frames[i])) for i in picks]
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 4
    return media.write_image(sheet, path)


def open_tracker(kind: str, run_dir: Path, config: dict[str, Any]) -> Any:
    """`--report-to tensorboard`: accelerate's TensorBoard tracker writing to `RUN_DIR/tensorboard` (None: off)."""
    if kind == "none":
        return None
    from accelerate.tracking import TensorBoardTracker

    tracker = TensorBoardTracker("train", run_dir / "tensorboard")
    if hasattr(tracker, "start"):  # accelerate >= 1.x starts trackers lazily
        tracker.start()
    tracker.log({"config": json.dumps(config, indent=1)}, step=0)
    return tracker


def track(tracker: Any, record: dict[str, Any]) -> None:
    """One metrics.jsonl row to the tracker: numbers as scalars, per-agent dicts as grouped scalars."""
    if tracker is None:
        return
    if "validation" in record:
        values: dict[str, Any] = {"validation_quality": {f"prompt {j + 1}": q for j, q in
                                                         enumerate(record["validation"]["quality"])}}
    else:
        values = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float, dict))}
    tracker.log(values, step=record["step"])


def open_log(path: Path) -> tuple[logging.Handler, list]:
    """Send Mora's log records (training's at INFO) to `path` until `close_log`; returns what to undo."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger("mora").addHandler(handler)
    changed = []
    training = logging.getLogger("mora.training")
    if training.getEffectiveLevel() > logging.INFO:
        # The file gets training's INFO records; the console keeps the level the caller chose.
        quiet = _Below(training.getEffectiveLevel())
        for other in logging.getLogger().handlers:
            other.addFilter(quiet)
            changed.append((other, quiet))
        changed.append((training, training.level))
        training.setLevel(logging.INFO)
    return handler, changed


class _Below(logging.Filter):
    """Drops mora.training records under `level` (those only the run log should get)."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("mora.training") and record.levelno < self.level)


def close_log(handler: logging.Handler, changed: list) -> None:
    logging.getLogger("mora").removeHandler(handler)
    handler.close()
    for target, undo in changed:
        if isinstance(target, logging.Handler):
            target.removeFilter(undo)
        else:
            target.setLevel(undo)


def versions() -> dict[str, str]:
    """Versions of Mora and the libraries a run depends on (for train.json)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("mora", "torch", "diffusers", "transformers", "peft", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def peak_memory_gb(device: str) -> float | None:
    """Peak memory of the run: the GPU's allocator peak on CUDA, else the process's max RSS (Linux, GB)."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 1e9
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux
    except (ImportError, OSError):  # pragma: no cover - not on Linux
        return None


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root` when inside it (manifests stay valid when a run folder moves)."""
    try:
        return os.fspath(path.relative_to(root))
    except ValueError:
        return os.fspath(path)

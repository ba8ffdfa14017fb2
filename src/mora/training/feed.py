"""What each training step is fed: this process's clips of a step, from the cache or decoded, and its draws.

A step's batch and random draws are pure functions of (seed, step, micro-batch, process): the
clips of step s come from a seeded permutation per epoch (`mora.training.data.batch_indices`),
each process takes its positions in the global batch, and every draw comes from one generator per
sample. So a resumed run, a run with DataLoader workers and a run over several processes are fed
exactly what one uninterrupted run is.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from mora.errors import InputError
from mora.training.config import TrainConfig
from mora.training.coupled import Batch
from mora.training.data import batch_indices, cover_crop, load_clip, window_start
from mora.training.distributed import Processes
from mora.training.encodings import EncodingCache, NoCache, cached_batch, clip_key, encode_frames
from mora.training.objectives import Draws
from mora.training.timing import StepTimer


def open_cache(cfg: TrainConfig, models: dict[str, Any], dtype: torch.dtype, run_dir: Path,
               processes: Processes, clips: list[Any]) -> EncodingCache:
    """The run's `EncodingCache` (`NoCache` with `--no-cache`), keyed by what its entries depend on,
    without the entries of clips and captions no longer in the data `clips`."""
    if not cfg.cache:
        return NoCache()
    fingerprint = {"preset": cfg.preset_name, "models": {a: m.model for a, m in models.items()},
                   "dtype": str(dtype), "train_size": list(cfg.train_size)}
    cache = EncodingCache.open(run_dir, fingerprint, write=processes.main)
    cache.prune([c.path for c in clips], [c.text for c in clips])
    return cache


def conditioning_fps(clip: Any, cfg: TrainConfig) -> float:
    """The fps SVD is conditioned on for `clip`'s windows: `--train-fps` (the preset's fps, what inference
    passes), or without one (A4 not trained) the clip's own rate."""
    return float(cfg.train_fps) if cfg.train_fps else float(clip.fps)


class StepFeed:
    """This process's batches and draws, step by step.

    Args:
        cfg: the run's options (batch size, accumulation, frames, size, seed, cache, workers).
        clips: the checked clips (`mora.training.data.check_dataset`).
        models: the trained agents (their VAEs and encoders fill the cache).
        processes: this process's rank among the run's processes.
        device: where batches go.
        encodings: the run's cache (`open_cache`).

    Example:
        >>> feed = StepFeed(cfg, clips, models, Processes(), "cpu", open_cache(...))  # doctest: +SKIP
        >>> batch, draws = feed.batch(0), feed.draws(0)                               # doctest: +SKIP
    """

    def __init__(self, cfg: TrainConfig, clips: list[Any], models: dict[str, Any], processes: Processes,
                 device: str, encodings: EncodingCache):
        self.cfg, self.clips, self.models, self.processes = cfg, clips, models, processes
        self.device, self.encodings = device, encodings

    @property
    def global_batch(self) -> int:
        """Samples per optimizer step over every process and micro-batch."""
        return self.cfg.batch_size * self.cfg.grad_accum * self.processes.world

    def positions(self, micro: int = 0) -> list[int]:
        """This process's sample positions in the step's global batch for micro-batch `micro`."""
        start = (micro * self.processes.world + self.processes.rank) * self.cfg.batch_size
        return list(range(start, start + self.cfg.batch_size))

    def draws(self, step: int, micro: int = 0) -> Draws:
        """The random draws of this process's samples of (step, micro): one generator per sample."""
        return Draws.for_samples(self.cfg.seed, step, self.positions(micro))

    def batch(self, step: int, micro: int = 0, windows: list[Any] | None = None,
              timer: StepTimer | None = None) -> Batch:
        """This process's clips of micro-batch `micro` of training step `step` (0-based).

        `windows`: the clips' frames already decoded (by the DataLoader workers, `--no-cache`).
        `timer`: the step's timer, charged the cache read under `encode`.
        """
        cfg = self.cfg
        picked = [self.clips[i] for i in batch_indices(step, self.global_batch, len(self.clips), cfg.seed)]
        picked = [picked[k] for k in self.positions(micro)]
        texts, fps = [c.text for c in picked], [conditioning_fps(c, cfg) for c in picked]
        if not cfg.cache:
            windows = windows or [load_clip(c, frames=cfg.train_frames, size=cfg.train_size, seed=cfg.seed,
                                            step=step) for c in picked]
            return Batch.from_windows(windows, texts, fps, self.device)
        with timer.phase("encode") if timer is not None else contextlib.nullcontext():  # the cache read
            entries = [self.encodings.get(clip_key(c.path), lambda c=c: self._encode_clip(c)) for c in picked]
        starts = [window_start(c, cfg.train_frames, cfg.seed, step) for c in picked]
        return cached_batch(entries, starts, [c.stride for c in picked], cfg.train_frames, texts, fps, self.device,
                            self.encodings)

    def _encode_clip(self, clip: Any) -> dict[str, torch.Tensor]:
        """A whole clip at the training size and what every trained agent's frozen encoders make of it."""
        from mora import media

        window = cover_crop(media.read_video(clip.path, argument="file_name").frames, self.cfg.train_size)
        if len(window.frames) < clip.num_frames:
            raise InputError(f"--data: {clip.path.name!r} now has {len(window.frames)} frames, fewer than the "
                             f"{clip.num_frames} it had when checked; restore the file or remove its line")
        pixels = torch.from_numpy(window.frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        return {"frames": torch.from_numpy(window.frames[:clip.num_frames].copy()),
                "source_size": torch.tensor(window.source_size), "crop": torch.tensor(window.crop_top_left),
                **encode_frames(self.models, pixels[:clip.num_frames])}

    def prefetched(self, start: int) -> Any:
        """With `--no-cache` and `--workers N`: the windows of steps `start`.. decoded ahead; else None."""
        if self.cfg.cache or self.cfg.workers == 0 or start >= self.cfg.steps:
            return None
        from mora.training.loader import StepWindows, prefetch

        positions = [self.positions(m) for m in range(self.cfg.grad_accum)]
        steps = [0 if self.cfg.overfit_batch else s for s in range(start, self.cfg.steps)]
        return prefetch(StepWindows(self.clips, self.cfg, self.global_batch, positions), steps, self.cfg.workers)

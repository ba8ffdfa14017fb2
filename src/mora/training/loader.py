"""Clips decoded ahead of the step in DataLoader workers (`--workers N`, with `--no-cache`).

A step's windows are a pure function of (seed, step) (`mora.training.data`), so worker processes
can decode them ahead in any order and the run is the same with or without them. With the cache
(the default) each clip is decoded once, when first used, and the workers are not needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from mora.training.data import batch_indices, load_clip


def _as_is(item: Any) -> Any:
    return item  # the windows stay numpy (the default collate would make tensors of them)


class StepWindows(torch.utils.data.Dataset):
    """Item `step`: for each micro-batch, this process's `ClipFrames` of that step.

    Args:
        clips: the checked clips.
        cfg: the run's options (frames, size, seed, batch size).
        global_batch: samples per optimizer step over every process and micro-batch.
        positions: this process's sample positions per micro-batch.
    """

    def __init__(self, clips: list[Any], cfg: Any, global_batch: int, positions: list[list[int]]):
        self.clips, self.global_batch, self.positions = clips, global_batch, positions
        self.frames, self.size, self.seed = cfg.train_frames, tuple(cfg.train_size), cfg.seed

    def __len__(self) -> int:
        return 2**62  # indexed by step; the sampler says which

    def __getitem__(self, step: int) -> list[list[Any]]:
        picked = batch_indices(step, self.global_batch, len(self.clips), self.seed)
        return [[load_clip(self.clips[picked[k]], frames=self.frames, size=self.size, seed=self.seed, step=step)
                 for k in micro] for micro in self.positions]


def _workers_context() -> Any:
    """Where the workers come from: a fork server that imported this module and nothing else.

    Why not fork (DataLoader's default on Linux): a worker forked from a training process that runs
    threads (torch's, FFmpeg's) can inherit a lock another thread held, and then wait on it forever
    inside PyAV's decoder (seen: both workers idle in `_Decoder.frames`, the run hung). A fork server
    is single-threaded when it forks, and preloading this module keeps each worker's start cheap.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def prefetch(dataset: StepWindows, steps: list[int], workers: int) -> Iterator[list[list[Any]]]:
    """The windows of `steps`, in order, decoded by `workers` processes (two steps ahead each)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, sampler=steps, num_workers=workers,
                                         collate_fn=_as_is, prefetch_factor=2, persistent_workers=False,
                                         multiprocessing_context=_workers_context())
    return iter(loader)

"""Where a training step's time goes: data, encode, forward, backward, optimizer (issue 21, item 10).

Phases nest (the frozen encoders run inside the forward pass, a cache read inside the batch's
loading): time counts for the innermost open phase only, so the five sums never overlap and add up
to at most the step's wall time. On CUDA each boundary synchronises, so kernels launched in a phase
are charged to it (this adds a few syncs per step; the numbers are for profiling, not for speed).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

PHASES = ("data", "encode", "forward", "backward", "optimizer")
# The frozen encoders timed as `encode` when they run: the pipelines' text/image encoders and the VAE's encoder half.
ENCODER_PARTS = ("text_encoder", "text_encoder_2", "image_encoder")


class StepTimer:
    """Exclusive seconds per phase of one step (see the module docstring).

    Args:
        cuda: synchronise CUDA at each phase boundary (the device is a GPU).
        clock: what to measure instead of seconds: a callable returning a running total (the
            training benchmark's dry run passes `FlopCounterMode.get_total_flops` to split FLOPs).

    Example:
        >>> timer = StepTimer(cuda=False)
        >>> with timer.phase("data"):
        ...     with timer.phase("encode"):
        ...         pass
        >>> sorted(timer.seconds) == sorted(PHASES)
        True
    """

    def __init__(self, cuda: bool = False, clock: Any = None):
        self.cuda, self.clock = cuda, clock
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._open: list[str] = []
        self._since = 0.0

    def _now(self) -> float:
        if self.clock is not None:
            return self.clock()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def enter(self, name: str) -> None:
        now = self._now()
        if self._open:  # pause the enclosing phase
            self.seconds[self._open[-1]] += now - self._since
        self._open.append(name)
        self._since = now

    def leave(self) -> None:
        now = self._now()
        self.seconds[self._open.pop()] += now - self._since
        self._since = now

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.enter(name)
        try:
            yield
        finally:
            self.leave()

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.seconds.items()}


def time_encoders(pipes: list[Any], current: Any) -> list[Any]:
    """Charge the frozen encoders' forward passes to `encode` of the timer `current()` returns (None: off).

    Args:
        pipes: the agents' pipelines.
        current: a callable returning the step's `StepTimer`, or None outside a timed step.

    Returns:
        The hook handles (`.remove()` them to stop).

    Example:
        >>> handles = time_encoders([], lambda: None)
        >>> handles
        []
    """
    def pre(*_: Any) -> None:
        timer = current()
        if timer is not None:
            timer.enter("encode")

    def post(*_: Any) -> None:
        timer = current()
        if timer is not None:
            timer.leave()

    handles, seen = [], set()
    for pipe in pipes:
        vae = getattr(pipe, "vae", None)
        parts = [getattr(pipe, name, None) for name in ENCODER_PARTS] + [getattr(vae, "encoder", None)]
        for module in parts:
            if module is None or not hasattr(module, "register_forward_hook") or id(module) in seen:
                continue
            seen.add(id(module))  # a component shared by two pipelines is hooked once
            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles

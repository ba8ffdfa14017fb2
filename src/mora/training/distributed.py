"""Several processes (`accelerate launch`, `mora train --processes N`): which one this is, gradients averaged.

Data parallel training as DDP does it: every process holds the whole model, trains on its own
slice of each step's global batch, and the gradients of all trainable parameters (LoRA theta_i and
the modulation z_i, which are not module parameters, so torch's DDP wrapper would miss them) are
averaged across processes before every optimizer step; every process then makes the same update.
Random draws are per sample (`mora.training.objectives.Draws`), so a sample gets the same noise in
whichever process it lands. Only process 0 writes (log, metrics, checkpoints, adapter, train.json).

CPU runs use gloo, GPU runs NCCL (accelerate's `PartialState` picks them from the launcher's
environment). Single-process runs never import accelerate. The launcher and a process's place
(`launch`, `from_environment`) are `mora.processes`', shared with `mora <task> --gpus N`.
"""

from __future__ import annotations

import logging
from typing import Any

from mora.processes import Processes, end_processes, from_environment, launch, reports_interrupt

logger = logging.getLogger(__name__)

__all__ = ["Processes", "average_gradients", "end_processes", "from_environment", "launch", "main_process_first",
           "mean_over_processes", "reports_interrupt"]


def main_process_first(processes: Processes) -> Any:
    """A context in which process 0 runs first and the others after it (a no-op with one process).

    For building the tiny models: transformers' `save_pretrained` writes weights only in the main
    process of a distributed run, so a tiny model built by another process lacks its text
    encoders' weights (and could be the copy that lands in `$MORA_HOME`).
    """
    if processes.world == 1:
        import contextlib

        return contextlib.nullcontext()
    from accelerate import PartialState

    return PartialState().main_process_first()


def average_gradients(params: list[Any], processes: Processes) -> None:
    """Average the gradients of `params` over the processes (a parameter without one counts as zeros)."""
    if processes.world == 1:
        return
    import torch
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.flatten() for p in params])  # one collective, not one per tensor
    dist.all_reduce(flat)
    flat /= processes.world
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
        offset += p.numel()


def mean_over_processes(value: float, processes: Processes) -> float:
    """The mean of a number over the processes (the step's loss as the whole batch's)."""
    if processes.world == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / processes.world

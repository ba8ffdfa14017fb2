"""Several processes (`accelerate launch`, `mora train --processes N`): which one this is, gradients averaged.

Data parallel training as DDP does it: every process holds the whole model, trains on its own
slice of each step's global batch, and the gradients of all trainable parameters (LoRA theta_i and
the modulation z_i, which are not module parameters, so torch's DDP wrapper would miss them) are
averaged across processes before every optimizer step; every process then makes the same update.
Random draws are per sample (`mora.training.objectives.Draws`), so a sample gets the same noise in
whichever process it lands. Only process 0 writes (log, metrics, checkpoints, adapter, train.json).

CPU runs use gloo, GPU runs NCCL (accelerate's `PartialState` picks them from the launcher's
environment). Single-process runs never import accelerate.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# A training run may take days: this bounds only a launcher that hangs for good, never a long run.
LAUNCH_TIMEOUT_S = 30 * 24 * 3600


@dataclass(frozen=True)
class Processes:
    """This process's place among the run's processes.

    Args:
        rank: 0 .. world - 1 (0 writes).
        world: how many processes train together.
    """

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_environment(device: str) -> tuple[Processes, str]:
    """(this process's place, its device) when started by `accelerate launch` / torchrun; else (single, device)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes(), device
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if not cpu and device in ("auto", "cuda"):
        device = str(state.device)  # one GPU per process: cuda:LOCAL_RANK
    logger.info("process %d of %d on %s", state.process_index, state.num_processes, device)
    return Processes(rank=state.process_index, world=state.num_processes), device


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


def end_processes(processes: Processes) -> None:
    """After the last step: wait until every process (process 0's final writes included) is done, then
    close the process group.

    Without it, a process that ends first tears down its gloo (or NCCL) threads at interpreter exit
    ("terminate called without an active exception", SIGABRT), and the launcher then kills the
    others, process 0 in the middle of writing the adapter.
    """
    if processes.world == 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def mean_over_processes(value: float, processes: Processes) -> float:
    """The mean of a number over the processes (the step's loss as the whole batch's)."""
    if processes.world == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / processes.world


LAUNCHED_ENV = "MORA_TRAIN_LAUNCHED"  # set for the processes `launch` starts: the launcher reports Ctrl-C once
INTERRUPT_GRACE_S = 120.0  # after Ctrl-C, how long the processes get to record the interruption


def launch(argv: list[str], processes: int) -> int:
    """Run `mora train ARGV` in `processes` processes through `accelerate launch`; its exit code.

    Ctrl-C reaches the launcher and, through it, every process: process 0 records the interruption
    (the newest checkpoint stays complete). This waits for them (up to `INTERRUPT_GRACE_S`, then
    kills them) before raising KeyboardInterrupt, so nothing still writes to the run when `mora`
    exits and `--resume` may start at once. (`subprocess.run` would kill the launcher 0.25 s after
    Ctrl-C, leaving its processes to finish on their own.)

    Example:
        >>> launch(["--data", "clips", "--out", "runs/a"], 2)  # doctest: +SKIP
    """
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "mora.cli", "train", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), LAUNCHED_ENV: "1"}
    with subprocess.Popen(command, env=env) as proc:
        try:
            return proc.wait(timeout=LAUNCH_TIMEOUT_S)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)  # a terminal's Ctrl-C already sent it; `kill -INT` did not
            try:
                proc.wait(timeout=INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning("the training processes did not stop within %.0f s of Ctrl-C; killing them",
                               INTERRUPT_GRACE_S)
                proc.kill()
            raise


def reports_interrupt() -> bool:
    """Whether this process tells the user about Ctrl-C: not a process `launch` started (the launcher
    does), nor any but process 0 of a run started by `accelerate launch` itself."""
    return LAUNCHED_ENV not in os.environ and os.environ.get("RANK", "0") == "0"

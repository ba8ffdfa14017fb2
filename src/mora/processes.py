"""Several processes on one machine: `accelerate launch`, which one this is, and the end of the run.

Shared by `mora train --processes N` (data parallel training, `mora.training.distributed`) and
`mora <task> --gpus N` (one clip across N GPUs, `mora.tools.parallel`): both relaunch the `mora`
command in N processes through `accelerate launch` (`launch`), and each process finds its place
from the launcher's environment (`from_environment`). CPU runs use gloo, GPU runs NCCL
(accelerate's `PartialState` picks them). A single process never imports accelerate or torch here.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# A training run may take days: this bounds only a launcher that hangs for good, never a long run.
LAUNCH_TIMEOUT_S = 30 * 24 * 3600
LAUNCHED_ENV = "MORA_LAUNCHED"  # set for the processes `launch` starts: the launcher reports Ctrl-C once
INTERRUPT_GRACE_S = 120.0  # after Ctrl-C, how long the processes get to record the interruption


@dataclass(frozen=True)
class Processes:
    """This process's place among the run's processes.

    Args:
        rank: 0 .. world - 1 (0 writes).
        world: how many processes run together.
    """

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_size() -> int:
    """How many processes the launcher started (1 when none did)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def from_environment(device: str) -> tuple[Processes, str]:
    """(this process's place, its device) when started by `accelerate launch` / torchrun; else (single, device).

    The process group is initialised here (gloo on a CPU, NCCL on CUDA), and on CUDA each process gets
    its own GPU, `cuda:LOCAL_RANK`.
    """
    if world_size() <= 1:
        return Processes(), device
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if not cpu and device in ("auto", "cuda"):
        device = str(state.device)  # one GPU per process: cuda:LOCAL_RANK
    logger.info("process %d of %d on %s", state.process_index, state.num_processes, device)
    return Processes(rank=state.process_index, world=state.num_processes), device


def end_processes(processes: Processes) -> None:
    """After the last step: wait until every process (process 0's final writes included) is done, then
    close the process group.

    Without it, a process that ends first tears down its gloo (or NCCL) threads at interpreter exit
    ("terminate called without an active exception", SIGABRT), and the launcher then kills the
    others, process 0 in the middle of writing.
    """
    if processes.world == 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch_command(argv: list[str], processes: int, module: str = "mora.cli") -> tuple[list[str], dict[str, str]]:
    """The command and environment `launch` runs: `python -m accelerate.commands.launch ... -m MODULE ARGV`.

    One machine, `processes` processes (RANK 0 .. N-1, WORLD_SIZE N, MASTER_ADDR 127.0.0.1, set by the
    launcher in each), on a free port (`--main_process_port 0`), so two runs side by side do not meet.

    Example:
        >>> launch_command(["text-to-video", "a fox", "--gpus", "2"], 2)[0][-4:]
        ['text-to-video', 'a fox', '--gpus', '2']
    """
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", module, *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), LAUNCHED_ENV: "1"}
    return command, env


def launch(argv: list[str], processes: int, module: str = "mora.cli") -> int:
    """Run `mora ARGV` (`python -m MODULE ARGV`) in `processes` processes through `accelerate launch`; its exit code.

    Ctrl-C reaches the launcher and, through it, every process: process 0 records the interruption.
    This waits for them (up to `INTERRUPT_GRACE_S`, then kills them) before raising KeyboardInterrupt,
    so nothing still writes when `mora` exits and `--resume` may start at once. (`subprocess.run`
    would kill the launcher 0.25 s after Ctrl-C, leaving its processes to finish on their own.)

    Example:
        >>> launch(["train", "--data", "clips", "--out", "runs/a"], 2)  # doctest: +SKIP
    """
    command, env = launch_command(argv, processes, module)
    with subprocess.Popen(command, env=env) as proc:
        try:
            return proc.wait(timeout=LAUNCH_TIMEOUT_S)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)  # a terminal's Ctrl-C already sent it; `kill -INT` did not
            try:
                proc.wait(timeout=INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning("the processes did not stop within %.0f s of Ctrl-C; killing them", INTERRUPT_GRACE_S)
                proc.kill()
            raise


def reports_interrupt() -> bool:
    """Whether this process tells the user about Ctrl-C: not a process `launch` started (the launcher
    does), nor any but process 0 of a run started by `accelerate launch` itself."""
    return LAUNCHED_ENV not in os.environ and os.environ.get("RANK", "0") == "0"

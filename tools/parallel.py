"""`--gpus N`: one clip across N processes, one GPU each, through diffusers 0.42's context parallelism.

Every process runs the same route and the same pipeline calls; in each denoiser that declares a
context-parallel plan (`_cp_plan`: LTX-Video, Wan 2.1/2.2, Qwen-Image), the plan splits the token
sequence across the processes and each attention gathers what it needs (Ulysses: an all-to-all over
heads, `ContextParallelConfig(ulysses_degree=N)`). Ring attention is not used: it needs an attention
backend that returns the log-sum-exp, and diffusers' `native` (SDPA, the default here) does not
("Native attention does not support return_lse=True"). Text encoders and VAEs run whole in every
process. Process 0 writes the outputs; the others compute and exit (`mora.workflows.runner`).
The command relaunches itself in N processes (`mora.processes.launch`, as `mora train --processes`).

Refused in one line (exit 2), before anything loads (`check`):
- a route model whose denoiser has no plan (the UNets: SDXL, InstructPix2Pix, SVD; Wan VACE);
- a device that is not CUDA. diffusers 0.42's `ModelMixin._resolve_parallel_config` places rank r
  on `torch.device(accelerator, r % torch.accelerator.device_count())`, and with no accelerator
  (a CPU) that count is 0: `ZeroDivisionError: integer modulo by zero` inside `enable_parallelism`.
  (The collectives themselves run on gloo: with that count patched to 1, two CPU processes give
  the one-process output; tests/test_parallel.py checks it that way.) GPU runs are pending a GPU;
- more processes than visible GPUs, and what would make the processes' calls differ: an LLM
  (each process would ask it and could get other prompts) and `--review` (one person, N processes).
"""

from __future__ import annotations

import logging
from typing import Any

from mora.errors import InputError

logger = logging.getLogger(__name__)

# family -> its denoiser's diffusers class (the transformer families); whether a class has a context-parallel
# plan is read from diffusers itself (`takes_gpus`).
DENOISER_CLASSES = {"ltx": "LTXVideoTransformer3DModel", "wan": "WanTransformer3DModel",
                    "wan22": "WanTransformer3DModel", "wan-vace": "WanVACETransformer3DModel",
                    "qwen-image": "QwenImageTransformer2DModel", "qwen-image-edit": "QwenImageTransformer2DModel"}
_DENOISERS = ("transformer", "transformer_2")  # Wan 2.2 A14B has a second expert
NO_CPU = ("diffusers 0.42's enable_parallelism places process r on GPU r % torch.accelerator.device_count(), "
          "which is 0 without one (ZeroDivisionError)")


def takes_gpus(family: str) -> bool:
    """Whether `family`'s denoiser declares a context-parallel plan in diffusers (imports diffusers' class)."""
    name = DENOISER_CLASSES.get(family)
    if name is None:
        return False
    import diffusers

    return getattr(getattr(diffusers, name), "_cp_plan", None) is not None


def check_route(gpus: int, families: dict[str, str], preset: str) -> None:
    """Every model of the route (`families`: role -> family) can split its attention across `gpus` processes."""
    if gpus <= 1:
        return
    for role, family in families.items():
        if not takes_gpus(family):
            what = DENOISER_CLASSES.get(family, "a UNet")
            raise InputError(f"{gpus} splits each denoising step across processes (diffusers' context parallelism), "
                             f"and {family} (preset {preset}'s {role} model, {what}) has no context-parallel plan in "
                             "diffusers 0.42; use --gpus 1, or a route of LTX, Wan or Qwen-Image models", param="gpus")


def check_host(gpus: int, device: str, *, llm: bool, review: bool) -> None:
    """The machine and the job can run `gpus` processes: CUDA, enough GPUs, the same calls in every process.

    Args:
        device: the resolved device (`cuda`, `cuda:1`, `cpu`, ...).
        llm: an LLM config is in use. review: a person reviews the first frame.
    """
    if gpus <= 1:
        return
    if not device.startswith("cuda"):
        raise InputError(f"{gpus} needs CUDA GPUs (one per process, NCCL) and the device is {device}: {NO_CPU}; use "
                         "--gpus 1 on this machine", param="gpus")
    if device != "cuda":
        raise InputError(f"{gpus} gives each process its own GPU (cuda:0 .. cuda:{gpus - 1}), so --device {device} "
                         "cannot hold; pass --device cuda or auto", param="gpus")
    import torch

    visible = torch.cuda.device_count()
    if gpus > visible:
        raise InputError(f"{gpus} is more than the {visible} visible GPU{'s' if visible != 1 else ''}; use --gpus "
                         f"{visible} or fewer (CUDA_VISIBLE_DEVICES decides which)", param="gpus")
    if llm:
        raise InputError(f"{gpus} runs the agents in every process, and an LLM could answer each differently (other "
                         "prompts, other calls); drop --llm-config and unset OAI_CONFIG_LIST (the scripted agents "
                         "agree), or use --gpus 1", param="gpus")
    if review:
        raise InputError(f"{gpus} runs the job in {gpus} processes and --review asks one person; drop --review or use "
                         "--gpus 1", param="gpus")


def context_config(gpus: int) -> Any:
    """diffusers' config for `gpus` processes: Ulysses over all of them (see the module docstring for why not ring).

    `ulysses_anything`: a sequence or head count that `gpus` does not divide is split unevenly. Without it
    diffusers asserts divisibility, and Qwen-Image's text tokens (a prompt's length) are often odd.
    """
    from diffusers import ContextParallelConfig

    return ContextParallelConfig(ulysses_degree=gpus, ulysses_anything=True)


def enable(pipe: Any, family: str, gpus: int) -> int:
    """Split `pipe`'s denoiser(s) across the `gpus` processes of the running process group; how many it split.

    Needs `torch.distributed` initialised (`mora.processes.from_environment`). A family without a plan
    is refused before this (`check_route`), so here it is an error.

    Example:
        >>> enable(pipe, "wan22", 2)  # doctest: +SKIP
        1
    """
    if gpus <= 1:
        return 0
    if not takes_gpus(family):
        raise RuntimeError(f"{family} has no context-parallel plan (check_route should have refused --gpus {gpus})")
    denoisers = [d for d in (getattr(pipe, name, None) for name in _DENOISERS) if d is not None]
    for denoiser in denoisers:
        denoiser.enable_parallelism(config=context_config(gpus))  # one config each: diffusers records its mesh on it
    logger.info("%s: attention split across %d processes (Ulysses)", family, gpus)
    return len(denoisers)


def check_world(gpus: int) -> None:
    """This process is one of `gpus` started by a launcher (not `mora.run(..., gpus=2)` alone, a batch, a service)."""
    from mora.processes import world_size

    if world_size() != gpus:
        raise InputError(f"{gpus} needs {gpus} processes and this job runs in {world_size()}: run it with the command "
                         f"(`mora TASK ... --gpus {gpus}` launches them), or start this program under `accelerate "
                         f"launch --num_processes {gpus}`", param="gpus")


def join(gpus: int, device: str, seed: int) -> tuple[Any, str, int]:
    """In each of the `gpus` processes: (its place, its device `cuda:LOCAL_RANK`, process 0's seed).

    Raises:
        InputError: this process was not started as one of `gpus` (`check_world`).
    """
    from mora.processes import from_environment

    check_world(gpus)
    processes, device = from_environment(device)
    import torch.distributed as dist

    shared = [seed]
    dist.broadcast_object_list(shared, src=0)  # a seed drawn at random differs per process: process 0's counts
    return processes, device, int(shared[0])

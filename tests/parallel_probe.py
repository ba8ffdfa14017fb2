"""Started by tests/test_parallel.py through `mora.processes.launch` (`-m parallel_probe ARGV`), one per process.

`env FILE`: write this process's launcher environment to FILE.<RANK> (what `launch` gives each process).
Otherwise: run `mora ARGV` in a gloo world on the CPU, with the two things that keep `--gpus` off a CPU
for users set aside (mora.tools.parallel's docstring): diffusers 0.42 places process r on device
r % torch.accelerator.device_count(), 0 on a CPU (ZeroDivisionError), so it reads 1 here; and Mora's own
refusal of a non-CUDA device. Each `enable_parallelism` call is reported on stderr.
"""

from __future__ import annotations

import json
import os
import sys


def _dump_env(path: str) -> int:
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "MORA_LAUNCHED", "OMP_NUM_THREADS")
    with open(f"{path}.{os.environ['RANK']}", "w", encoding="utf-8") as f:
        json.dump({k: os.environ.get(k) for k in keys}, f)
    return 0


def _run_on_gloo(argv: list[str]) -> int:
    import torch
    from diffusers import ModelMixin

    from mora.cli import main
    from mora.tools import parallel

    torch.accelerator.device_count = lambda: 1
    parallel.check_host = lambda *args, **kwargs: None
    enable = ModelMixin.enable_parallelism

    def reported(self, *, config, **kwargs):
        cp = config.context_parallel_config if hasattr(config, "context_parallel_config") else config
        sys.stderr.write(f"probe: rank {os.environ['RANK']} {type(self).__name__} ulysses={cp.ulysses_degree} "
                         f"ring={cp.ring_degree}\n")
        return enable(self, config=config, **kwargs)

    ModelMixin.enable_parallelism = reported
    return main(argv)


if __name__ == "__main__":
    sys.exit(_dump_env(sys.argv[2]) if sys.argv[1] == "env" else _run_on_gloo(sys.argv[1:]))

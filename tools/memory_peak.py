"""The peak memory of one tool call: the manifest's `tool_calls[].peak_memory`, `{"bytes", "measure"}`.

`measure` names what was measured, one of `MEASURES`:
- `cuda max allocated`: on CUDA, `torch.cuda.max_memory_allocated(device)` after
  `torch.cuda.reset_peak_memory_stats(device)` at the step's start (tensors only: the caching
  allocator's reserve and the CUDA context are not counted).
- `process peak RSS (step)`: elsewhere (CPU, MPS), on Linux, the process's resident-set high-water
  mark (`VmHWM` in /proc/self/status), reset at the step's start by writing "5" to
  /proc/self/clear_refs.
- `process peak RSS (since start)`: where that reset is not allowed (not Linux, a kernel or sandbox
  that refuses it), `resource.getrusage(RUSAGE_SELF).ru_maxrss`: the peak since the process started,
  so an upper bound for the step.
Both resets are process-wide: jobs running at the same time in one process (a service's worker
threads) share them, and each sees the peak of all.

Example:
    >>> measure = start("cpu")
    >>> peak = read("cpu", measure)
    >>> peak["bytes"] > 0 and peak["measure"] in MEASURES
    True
"""

from __future__ import annotations

import logging
import resource
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

CUDA, STEP_RSS, SINCE_START_RSS = "cuda max allocated", "process peak RSS (step)", "process peak RSS (since start)"
MEASURES = (CUDA, STEP_RSS, SINCE_START_RSS)
_PROC = Path("/proc/self")


def start(device: str) -> str:
    """Reset the peak at a step's start on `device`; returns the measure `read` will take."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)
        return CUDA
    try:
        (_PROC / "clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := the current RSS
        return STEP_RSS
    except OSError as error:  # no /proc (macOS, Windows), or not allowed
        logger.debug("peak memory: cannot reset the process's peak RSS (%s); measuring since start", error)
        return SINCE_START_RSS


def read(device: str, measure: str) -> dict:
    """The peak since `start(device)` returned `measure`: `{"bytes": int, "measure": str}`."""
    if measure == CUDA:
        import torch

        return {"bytes": int(torch.cuda.max_memory_allocated(device)), "measure": CUDA}
    if measure == STEP_RSS:
        try:
            return {"bytes": _vm_hwm(), "measure": STEP_RSS}
        except (OSError, ValueError, StopIteration) as error:
            logger.debug("peak memory: no VmHWM (%s); measuring since start", error)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"bytes": int(maxrss if sys.platform == "darwin" else maxrss * 1024), "measure": SINCE_START_RSS}


def _vm_hwm() -> int:
    """The process's peak resident set size in bytes, from /proc/self/status (`VmHWM:  1234 kB`)."""
    line = next(line for line in (_PROC / "status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

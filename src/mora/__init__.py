"""Mora: multi-agent generalist video generation on AutoGen and diffusers.

Heavy libraries (torch, diffusers, transformers, autogen) load lazily, on first use of the
attribute that needs them, so `import mora` and `mora --help` stay fast.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mora._lazy import lazy_names

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# public name -> module that defines it; imported on first attribute access (PEP 562)
_LAZY = {
    "Toolset": "mora.tools.toolset",
    "Preset": "mora.config",
    "PRESETS": "mora.config",
    "get_preset": "mora.config",
    "MoraError": "mora.errors",
    "InputError": "mora.errors",
    "run": "mora.workflows.runner",
    "RunResult": "mora.workflows.runner",
    "chat": "mora.workflows.chat",
    "TASKS": "mora.workflows.tasks",
    "train": "mora.training.loop", "TrainResult": "mora.training.trainer",
    "batch": "mora.workflows.batch", "BatchResult": "mora.workflows.batch",
    "story": "mora.workflows.story",
}

__all__ = [
    "__version__", "Toolset", "Preset", "PRESETS", "get_preset", "MoraError", "InputError", "run", "RunResult",
    "chat", "TASKS",
    "train", "TrainResult",
    "batch", "BatchResult",
    "story",
]

if TYPE_CHECKING:  # pragma: no cover
    from mora.config import PRESETS, Preset, get_preset
    from mora.errors import InputError, MoraError
    from mora.tools.toolset import Toolset
    from mora.training.loop import train
    from mora.training.trainer import TrainResult
    from mora.workflows.chat import chat
    from mora.workflows.runner import RunResult, run
    from mora.workflows.story import story
    from mora.workflows.tasks import TASKS


__getattr__, __dir__ = lazy_names(__name__, _LAZY)

"""`mora.run`'s options as one typed dataclass (each field documented with its default)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mora.errors import InputError


@dataclass
class RunOptions:
    """How a job runs. Every field has the default `mora.run` uses.

    Example:
        >>> RunOptions(preset="tiny", seed=0).profile
        'balanced'
    """

    preset: Any = "mora"  # preset name or a `mora.config.Preset`: which model each role uses
    preset_file: str | Path | None = None  # a user preset file (TOML); alone it selects the file's preset
    seed: int | None = None  # the job's seed; random when None (recorded in the manifest)
    out: str | Path | None = None  # the video (.mp4); default outputs/<task>-<timestamp>.mp4
    num_frames: int | None = None  # frames per generated segment or clip (None: the preset's)
    width: int | None = None  # frame width (None: the preset's, or the input's aspect ratio)
    height: int | None = None
    steps: int | None = None  # denoising steps of every model (None: each model's preset value)
    fps: int | None = None  # frame rate of generated videos (extend and connect keep the input's)
    device: str = "auto"  # auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps
    dtype: str = "auto"  # auto (fp16/bf16 on a GPU, fp32 on a CPU), float16, bfloat16, float32
    profile: str = "balanced"  # fast, balanced, low-vram or auto (see mora.tools.profiles)
    llm_config: str | Path | list | None = None  # OAI_CONFIG_LIST path or entries; default: env, ./file, none
    review: Callable[[str, dict], Any] | None = None  # reviewer at review gates: (image, info) -> decision
    on_step: Callable[[str, str], None] | None = None  # called with (agent, what it does) as each step starts
    progress: bool = True  # diffusion step bars
    metrics: bool = True  # compute the score card into manifest.metrics
    best_of: int = 1  # text-to-video, simulate: N candidates, critic_agent keeps the best
    overwrite: bool = False  # replace an earlier job's artifacts at the same --out
    adapter: Any = None  # a trained adapter: `mora train`'s RUN_DIR/adapter folder (or a loaded Adapter)

    @classmethod
    def from_kwargs(cls, options: dict) -> RunOptions:
        """The options from `mora.run`'s keyword arguments; an unknown name is an InputError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"{unknown[0]}: not an option of mora.run; use one of {', '.join(sorted(known))}")
        return cls(**options)

    def numeric(self) -> dict:
        """The options the user may pin for the models (None = the preset's)."""
        return dict(num_frames=self.num_frames, width=self.width, height=self.height, steps=self.steps, fps=self.fps)

"""Training options: a typed, validated `TrainConfig` (the trainable agents: `mora.adapters.spec`).

This module imports no torch, so the command line can check every option (and the preset's
families) before any model loads. A bad value raises `InputError` naming the option, the value
and the fix; nothing is written before these checks pass.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mora.adapters.spec import AGENTS
from mora.config import Preset, get_preset
from mora.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_AGENTS = ("text_to_image_agent", "image_to_video_agent")
OPTIMIZERS = ("adamw", "adamw8bit")
LR_SCHEDULES = ("constant", "cosine")
MAX_MOD_TOKENS = 16
MAX_RANK = 256
MAX_FRAMES = 64
MAX_SIDE = 2048

# Options that change what a run computes: `resume` refuses a checkpoint made with other values.
# (device, progress and checkpoint cadence may change between the interrupted run and its resume.)
RUN_DEFINING = (
    "data", "preset", "agents", "steps", "batch_size", "lr", "mod_lr", "rank", "mod_tokens", "coupling",
    "lambda_image", "train_size", "train_frames", "seed", "optimizer", "weight_decay", "max_grad_norm",
    "lr_schedule", "warmup_steps", "cond_dropout", "coupling_noise", "motion_bucket_id", "overfit_batch",
)


@dataclass
class TrainConfig:
    """Options of one training run (`mora train`, `mora.train`). Defaults fit one 80 GB GPU at full size.

    Args:
        data: folder of videos plus `metadata.jsonl` (`{"file_name": ..., "text": ...}` per line).
        out: the run folder (RUN_DIR): adapter/, checkpoints/, metrics.jsonl, loss.png, train.json.
        preset: preset whose models are fine-tuned (a name or a `Preset`); default `mora`.
        agents: agents to train, from `AGENTS`; default A2 and A4 (text_to_image_agent, image_to_video_agent).
        steps: optimizer steps in total (a resumed run counts the steps already done).
        batch_size: clips per step.
        lr: learning rate of the LoRA parameters theta_i (AdamW).
        mod_lr: learning rate of the modulation embeddings z_i, 10x `lr`: z_i is a handful of vectors
            at the encoder's scale (norms in the tens), which `lr` would barely move.
        rank: LoRA rank on each denoiser's attention projections (lora_alpha = rank: scale 1).
        mod_tokens: K, tokens per modulation embedding (each of the agent's cross-attention width).
        coupling: True: the video agent is conditioned on the image agent's differentiable estimate of
            the first frame, so its loss also trains the image agent; False (`--no-coupling`): each
            agent on its own loss, the video agent conditioned on the real first frame.
        lambda_image: weight of the image agent's own loss, L = L_A4 + lambda * L_A2 (+ L_A3).
        train_size: (width, height) of training frames, multiples of 8; default 512x288 (16:9).
        train_frames: frames per training clip (consecutive frames of each video).
        checkpoint_every: write `checkpoints/step-N/` every N steps (and always at the last step).
        keep_checkpoints: how many newest checkpoints to keep (older ones are deleted).
        resume: continue from the newest checkpoint in `out` (same data order and lr schedule).
        seed: seeds the data order, the noise and every random draw of the run.
        device: `auto`, `cpu`, `cuda` or `cuda:N`.
        optimizer: `adamw` (torch), or `adamw8bit` (bitsandbytes, CUDA only; `pip install mora[train-cuda]`).
        weight_decay: AdamW weight decay of the LoRA parameters (z_i gets none: decay would shrink
            the modulation factor ||z_i|| for no reason of the data's).
        max_grad_norm: gradient clipping over all trainable parameters (0: off).
        lr_schedule: `constant` or `cosine` (to 10% of the lr at the last step), after the warmup.
        warmup_steps: linear warmup from 0.
        cond_dropout: probability that a sample's conditioning e_i is dropped to the unconditional
            one (zeros) while z_i stays: trains the classifier-free-guidance branch the way inference
            runs it (z_i in both branches). The public SVD and InstructPix2Pix scripts use 0.05-0.1.
        coupling_noise: the coupled pass noises the target's first frame at a timestep drawn from
            [0, coupling_noise * T): above about half the schedule a one-step estimate is mostly noise.
        motion_bucket_id: SVD's motion micro-conditioning for training clips (SVD's default 127, as
            the public SVD fine-tuning scripts use: the motion score SVD was trained with is not public).
        gradient_checkpointing: recompute activations in the backward pass (needed at full size).
        dtype: frozen weights' dtype: `auto` (bf16 on CUDA, fp32 on CPU), `bfloat16`, `float32`.
            Trainable parameters are always fp32.
        overfit_batch: a sanity check, not training: every step reuses step 1's batch *and* its random
            draws (noise, timesteps, dropout), like Lightning's `overfit_batches`. The loss must fall
            fast if gradients reach theta_i and z_i.

    Example:
        >>> cfg = TrainConfig(data="clips", out="runs/a", preset="tiny", steps=10, train_size=(64, 64))
        >>> cfg.validate().train_frames
        14
    """

    data: Path | str
    out: Path | str
    preset: str | Preset = "mora"
    agents: tuple[str, ...] = DEFAULT_AGENTS
    steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-4
    mod_lr: float = 1e-3
    rank: int = 16
    mod_tokens: int = 1
    coupling: bool = True
    lambda_image: float = 1.0
    train_size: tuple[int, int] = (512, 288)
    train_frames: int = 14
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    cond_dropout: float = 0.1
    coupling_noise: float = 0.5
    motion_bucket_id: int = 127
    gradient_checkpointing: bool = True
    dtype: str = "auto"
    overfit_batch: bool = False
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # reserved for later phases

    def validate(self) -> TrainConfig:
        """Check every option; return self with normalised values. Raises `InputError`."""
        self.data = Path(self.data).expanduser()
        self.out = Path(self.out).expanduser()
        self.agents = _check_agents(self.agents)
        for name, low, high in (("steps", 1, 10**8), ("batch_size", 1, 1024), ("rank", 1, MAX_RANK),
                                ("mod_tokens", 1, MAX_MOD_TOKENS), ("train_frames", 2, MAX_FRAMES),
                                ("checkpoint_every", 1, 10**8), ("keep_checkpoints", 1, 1000),
                                ("seed", 0, 2**32 - 1), ("warmup_steps", 0, 10**8),
                                ("motion_bucket_id", 0, 1023)):
            setattr(self, name, _int(getattr(self, name), name, low, high))
        for name, low, high in (("lr", 0.0, 1.0), ("mod_lr", 0.0, 10.0), ("lambda_image", 0.0, 1e4),
                                ("weight_decay", 0.0, 1.0), ("max_grad_norm", 0.0, 1e6),
                                ("cond_dropout", 0.0, 0.9), ("coupling_noise", 0.01, 1.0)):
            setattr(self, name, _float(getattr(self, name), name, low, high, positive=name in ("lr", "mod_lr")))
        self.train_size = parse_size(self.train_size)
        _choice(self.optimizer, "optimizer", OPTIMIZERS)
        _choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        _choice(str(self.dtype).lower(), "dtype", ("auto", "bfloat16", "bf16", "float32", "fp32"))
        self.coupling = bool(self.coupling)
        self.overfit_batch = bool(self.overfit_batch)
        check_families(self.preset_obj(), self.agents)
        if self.lambda_image == 0 and "text_to_image_agent" in self.agents and not self.coupled:
            logger.warning("--lambda-image 0 without coupling: text_to_image_agent gets no gradient")
        return self

    def preset_obj(self) -> Preset:
        """The preset (looked up by name; `InputError` for an unknown one)."""
        return get_preset(self.preset)

    @property
    def preset_name(self) -> str:
        return self.preset if isinstance(self.preset, str) else self.preset.name

    @property
    def coupled(self) -> bool:
        """Coupling applies only when both ends of the chain are trained (A2 feeds A4)."""
        return self.coupling and "text_to_image_agent" in self.agents and "image_to_video_agent" in self.agents

    def to_json(self) -> dict[str, Any]:
        """The options as JSON values (paths as strings, the preset by name)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(data=str(self.data), out=str(self.out), preset=self.preset_name, agents=list(self.agents),
                   train_size=list(self.train_size))
        return out


def parse_size(value: Any) -> tuple[int, int]:
    """`"512x288"` or `(512, 288)` -> (512, 288); both sides multiples of 8 (the VAEs' factor).

    Example:
        >>> parse_size("512x288")
        (512, 288)
    """
    try:
        if isinstance(value, str):
            w, h = (int(v) for v in value.lower().split("x"))
        else:
            w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"--train-size: {value!r} is not WxH; pass e.g. 512x288") from None
    if not (8 <= w <= MAX_SIDE and 8 <= h <= MAX_SIDE) or w % 8 or h % 8:
        near = f"{max(8, round(w / 8) * 8)}x{max(8, round(h / 8) * 8)}"
        raise InputError(f"--train-size: {w}x{h} must have sides that are multiples of 8, from 8 to "
                         f"{MAX_SIDE}; use e.g. {near}")
    return w, h


def check_families(preset: Preset, agents: tuple[str, ...]) -> None:
    """Each agent's model in `preset` must be of a family this trainer supports."""
    for agent in agents:
        info = AGENTS[agent]
        family = preset.spec(info.role).family
        if family != info.family:
            raise InputError(
                f"--agents: {agent} runs a {family!r} model in preset {preset.name!r}; training supports "
                f"{info.family!r} for this agent; use a preset whose {info.role} model is {info.family} "
                "(mora or tiny) or leave the agent out"
            )


def _check_agents(agents: Any) -> tuple[str, ...]:
    if isinstance(agents, str):
        agents = [a.strip() for a in agents.split(",") if a.strip()]
    agents = tuple(agents or ())
    known = ", ".join(AGENTS)
    if not agents:
        raise InputError(f"--agents: no agent given; pass a comma-separated list from {known}")
    for agent in agents:
        if agent not in AGENTS:
            raise InputError(f"--agents: {agent!r} is not a trainable agent; choose from {known}")
    if len(set(agents)) != len(agents):
        raise InputError(f"--agents: {','.join(agents)} names an agent twice; list each once")
    return tuple(a for a in AGENTS if a in agents)  # chain order: A2, A3, A4


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"{_option(name)}: {value!r} is not an integer; pass a whole number from {low} to {high}")
    if not low <= value <= high:
        raise InputError(f"{_option(name)}: {value} is out of range; pass a number from {low} to {high}")
    return int(value)


def _float(value: Any, name: str, low: float, high: float, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{_option(name)}: {value!r} is not a finite number; pass a number from {low} to {high}")
    value = float(value)
    if not low <= value <= high or (positive and value <= 0):
        bound = f"above {low} and at most {high}" if positive else f"from {low} to {high}"
        raise InputError(f"{_option(name)}: {value:g} is out of range; pass a number {bound}")
    return value


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{_option(name)}: {value!r} is not one of {', '.join(choices)}; pick one of them")

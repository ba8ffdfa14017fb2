"""Training options: `TrainConfig`, a pydantic v2 model (the trainable agents: `mora.adapters.spec`).

Every option is written once here: its type, default, bounds (field constraints) and one line of
help. The `mora train` flags are derived from these fields (`mora.cli_parsers.add_train_parser`),
and errors go through `mora.validation`'s one formatter as `--FLAG: VALUE problem; fix` (exit 2).
Extra fields are refused. This module imports no torch, so the command line checks every option
(and the preset's families) before any model loads; nothing is written before these checks pass.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mora import validation
from mora.adapters.spec import AGENTS
from mora.config import DEFAULT_PRESET, Preset, get_preset
from mora.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_AGENTS = ("text_to_image_agent", "image_to_video_agent")
MAX_MOD_TOKENS = 16
MAX_RANK = 256
MAX_FRAMES = 64
MAX_SIDE = 2048
MAX_FPS = 240
BIG = 10**8

# Options that change what a run computes: `resume` refuses a checkpoint made with other values.
# (device, progress and checkpoint cadence may change between the interrupted run and its resume.)
RUN_DEFINING = (
    "data", "preset", "agents", "steps", "batch_size", "grad_accum", "lr", "mod_lr", "rank", "mod_tokens", "coupling",
    "lambda_image", "train_size", "train_frames", "train_fps", "seed", "optimizer", "weight_decay", "max_grad_norm",
    "lr_schedule", "warmup_steps", "cond_dropout", "coupling_noise", "real_frame_p", "motion_bucket_id",
    "noise_aug", "overfit_batch", "ema", "ema_decay", "noise_offset", "snr_gamma",
)
# Fields the `mora train` command line takes from elsewhere (its own source flags, the job model, --resume).
NOT_FLAGS = ("data", "out", "preset", "preset_file", "device", "seed", "resume")


def option_flag(name: str) -> str:
    """How the command line names a field: `train_size` -> `--train-size`."""
    return "--" + name.replace("_", "-")


def _help(line: str, metavar: str | None = None, **extra: Any) -> dict:
    return {"description": line, "json_schema_extra": {"metavar": metavar, **extra}}


class TrainConfig(BaseModel):
    """Options of one training run (`mora train`, `mora.train`). Size, frames and SVD's conditioning
    default to what the preset runs at inference (`preset_defaults`); the rest fit one 80 GB GPU.

    Each field's description is its `--help` line. Worth knowing beyond it:
    mod_lr is 10x lr because z_i is a handful of vectors at the encoder's scale (norms in the tens);
    z_i gets no weight decay (it would shrink ||z_i|| for no reason of the data's); `coupling` applies
    only when both A2 and A4 are trained; `train_size`, `train_frames`, `train_fps`, `motion_bucket_id`
    and `noise_aug` default to what the preset runs (None until `validate()` fills them in).

    Raises:
        InputError: a bad value (`--FLAG: VALUE problem; fix`), from the constructor or `validate()`.

    Example:
        >>> cfg = TrainConfig(data="clips", out="runs/a", preset="tiny", steps=10, train_size=(64, 64))
        >>> cfg.validate().train_frames
        4
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_default=False)

    data: Path = Field(description="folder of videos plus metadata.jsonl")
    out: Path = Field(description="the run folder (RUN_DIR)")
    preset: str | Preset = Field(DEFAULT_PRESET, description="preset whose models are fine-tuned")
    preset_file: Path | None = Field(None, description="a preset TOML file (as every task takes)")
    agents: tuple[str, ...] = Field(DEFAULT_AGENTS, **_help(
        "agents to train, comma-separated (default text_to_image_agent,image_to_video_agent; "
        "image_to_image_agent too is possible)", "A,B", text=True))
    steps: int = Field(1000, ge=1, le=BIG, **_help("optimizer steps in total (per iteration with --prompts)", "N"))
    batch_size: int = Field(1, ge=1, le=1024, **_help("clips per step in each process (and micro-batch)", "B"))
    grad_accum: int = Field(1, ge=1, le=1024, **_help(
        "micro-batches per optimizer step: the step sees batch-size x grad-accum x processes clips", "N"))
    lr: float = Field(1e-4, gt=0, le=1.0, allow_inf_nan=False, **_help("LoRA learning rate", "X"))
    mod_lr: float = Field(1e-3, gt=0, le=10.0, allow_inf_nan=False, **_help("modulation embedding learning rate",
                                                                            "X"))
    rank: int = Field(16, ge=1, le=MAX_RANK, **_help("LoRA rank (lora_alpha = rank)", "R"))
    mod_tokens: int = Field(1, ge=1, le=MAX_MOD_TOKENS, **_help("modulation tokens per agent", "K"))
    coupling: bool = Field(True, **_help("condition the video agent on the image agent's differentiable first "
                                         "frame, so A4's loss trains A2 too (--no-coupling: each on its own loss)"))
    lambda_image: float = Field(1.0, ge=0, le=1e4, allow_inf_nan=False,
                                **_help("weight of the image agent's own loss: L = L_A4 + lambda L_A2 (+ L_A3)", "X"))
    train_size: tuple[int, int] | None = Field(None, **_help(
        "training frame size, multiples of 8 (default: the preset's video size, what inference makes and SDXL is "
        "conditioned on)", "WxH", text=True))
    train_frames: int | None = Field(None, ge=2, le=MAX_FRAMES, **_help(
        "frames per training clip (default: the frames of one of the preset's image-to-video calls)", "N"))
    train_fps: float | None = Field(None, gt=0, le=MAX_FPS, allow_inf_nan=False, **_help(
        "frame rate of the training windows: each clip is read every round(its fps / this) frames, and SVD is "
        "conditioned on it (default: the preset's image-to-video fps, what inference passes)", "FPS"))
    checkpoint_every: int = Field(500, ge=1, le=BIG, **_help("write checkpoints/step-N every N steps", "N"))
    keep_checkpoints: int = Field(2, ge=1, le=1000, **_help("how many newest checkpoints to keep", "N"))
    resume: bool = Field(False, description="continue from the newest checkpoint of RUN_DIR")
    overwrite: bool = Field(False, **_help("start a new run in a RUN_DIR that holds an earlier one (its files "
                                           "are replaced)"))
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds the data order, the noise and every draw")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    optimizer: Literal["adamw", "adamw8bit"] = Field("adamw", **_help("adamw8bit: bitsandbytes, CUDA only"))
    weight_decay: float = Field(1e-2, ge=0, le=1.0, allow_inf_nan=False,
                                **_help("AdamW weight decay of the LoRA parameters", "X"))
    max_grad_norm: float = Field(1.0, ge=0, le=1e6, allow_inf_nan=False,
                                 **_help("gradient clipping over all trainable parameters (0: off)", "X"))
    lr_schedule: Literal["constant", "cosine"] = Field("constant", **_help(
        "after the warmup: constant, or cosine to 10%% of the lr at the last step"))
    warmup_steps: int = Field(0, ge=0, le=BIG, **_help("linear learning-rate warmup from 0", "N"))
    cond_dropout: float = Field(0.1, ge=0, le=0.3, allow_inf_nan=False, **_help(
        "conditioning dropout p: trains the classifier-free-guidance branches (InstructPix2Pix: text only, "
        "both, image only with p each)", "P"))
    coupling_noise: float = Field(0.1, ge=0.01, le=1.0, allow_inf_nan=False, **_help(
        "the coupled first-frame estimate is taken at a timestep below this fraction of the schedule "
        "(low: the frame A4 sees is sharp, as at inference)", "X"))
    real_frame_p: float = Field(0.25, ge=0, le=1.0, allow_inf_nan=False, **_help(
        "probability that A4 is conditioned on the real first frame instead of A2's estimate", "P"))
    motion_bucket_id: int | None = Field(None, ge=0, le=1023, **_help(
        "SVD's motion conditioning (default: the preset's image-to-video setting)", "N"))
    noise_aug: float | None = Field(None, ge=0, le=10.0, allow_inf_nan=False, **_help(
        "SVD's conditioning-frame noise (default: the preset's noise_aug_strength)", "X"))
    noise_offset: float = Field(0.0, ge=0, le=1.0, allow_inf_nan=False, **_help(
        "the SDXL and InstructPix2Pix losses' noise offset (diffusers' --noise_offset): noise plus X x N(0, 1) per "
        "sample and channel (0: off; 0.05-0.1 as used with it)", "X"))
    snr_gamma: float | None = Field(None, gt=0, le=1000, allow_inf_nan=False, **_help(
        "min-SNR weighting of the SDXL and InstructPix2Pix losses (diffusers' --snr_gamma, compute_snr; 5.0 "
        "recommended there; default off)", "GAMMA"))
    validate_every: int = Field(0, ge=0, le=BIG, **_help(
        "every K steps, make a video per validation prompt with the current adapter into RUN_DIR/validation/"
        "step-K (scores in metrics.jsonl; 0: never)", "K"))
    validation_prompt: list[str] | None = Field(None, **_help(
        "a validation prompt (repeat the flag for more; default: the first two captions)", "TEXT", repeat=True))
    report_to: Literal["none", "tensorboard"] = Field("none", **_help(
        "also log the metrics to TensorBoard (RUN_DIR/tensorboard; pip install 'mora[tensorboard]')"))
    ema: bool = Field(False, **_help("keep an exponential moving average of the LoRA weights and z; the adapter "
                                     "written is the average"))
    ema_decay: float = Field(0.999, ge=0.5, le=0.99999, allow_inf_nan=False, **_help(
        "the average's decay (it warms up as (1 + step) / (10 + step) to this)", "X"))
    cache: bool = Field(True, **_help("keep what the frozen encoders make of each clip and caption under "
                                      "RUN_DIR/cache and reuse it (--no-cache: compute it every step)"))
    workers: int = Field(2, ge=0, le=64, **_help(
        "with --no-cache: DataLoader worker processes that decode the clips ahead of the step (0: none)", "N"))
    gradient_checkpointing: bool = Field(True, **_help("recompute activations in the backward pass (less memory)"))
    dtype: Literal["auto", "bfloat16", "bf16", "float32", "fp32"] = Field("auto", **_help(
        "frozen weights' dtype (auto: bf16 on CUDA, fp32 on CPU); trained parameters are fp32"))
    overfit_batch: bool = Field(False, **_help("a sanity check: every step reuses step 1's batch and draws"))

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise validation.input_error(e, model=type(self), spell=option_flag) from None

    @field_validator("agents", mode="before")
    @classmethod
    def _agents(cls, value: Any) -> tuple[str, ...]:
        return check_agents(value)

    @field_validator("train_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> tuple[int, int] | None:
        return None if value is None else _parse_size(value)

    @field_validator("data", "out", "preset_file", mode="after")
    @classmethod
    def _path(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser()

    def validate(self) -> TrainConfig:
        """The checks that need the preset; fill in what is not given from the preset. Returns self."""
        preset = self.preset_obj()
        check_families(preset, self.agents)
        for name, value in preset_defaults(preset, self.agents).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
            raise InputError("--report-to: tensorboard is not installed; pip install 'mora[tensorboard]' or drop "
                             "--report-to")
        if self.resume and self.overwrite:
            raise InputError("--overwrite: cannot be used with --resume; pick one (resume continues the run, "
                             "overwrite starts a new one)")
        if self.lambda_image == 0 and "text_to_image_agent" in self.agents and not self.coupled:
            logger.warning("--lambda-image 0 without coupling: text_to_image_agent gets no gradient")
        return self

    def preset_obj(self) -> Preset:
        """The preset (looked up by name, or read from `preset_file`; `InputError` for an unknown one)."""
        return get_preset(self.preset, self.preset_file)

    @property
    def preset_name(self) -> str:
        return self.preset if isinstance(self.preset, str) else self.preset.name

    @property
    def coupled(self) -> bool:
        """Coupling applies only when both ends of the chain are trained (A2 feeds A4)."""
        return self.coupling and "text_to_image_agent" in self.agents and "image_to_video_agent" in self.agents

    def to_json(self) -> dict[str, Any]:
        """The options as JSON values (paths as strings, the preset by name)."""
        out = self.model_dump(mode="json", exclude={"preset"})
        out["preset"] = self.preset_name
        return out


def preset_defaults(preset: Preset, agents: tuple[str, ...]) -> dict[str, Any]:
    """The options that default to what `preset` runs at inference, for training `agents`.

    Size: the video's (what SDXL's size ids say at inference too: 1024x576 for `mora`), or SDXL's
    when it is trained without the video agent. Frames: one image-to-video call's. SVD's fps,
    motion bucket and conditioning noise: the image-to-video settings (only when A4 is trained).

    Example:
        >>> preset_defaults(get_preset("tiny"), DEFAULT_AGENTS)["train_size"]
        (96, 64)
    """
    video = preset.spec("image_to_video").settings
    sdxl_only = "text_to_image_agent" in agents and "image_to_video_agent" not in agents
    sized = preset.spec("text_to_image").settings if sdxl_only else video
    try:
        size = _parse_size((sized.width, sized.height))
    except ValueError as e:
        raise InputError(f"--train-size: preset {preset.name!r}'s {sized.width}x{sized.height} {e}") from None
    out: dict[str, Any] = {"train_size": size, "train_frames": max(2, min(MAX_FRAMES, int(video.num_frames)))}
    if "image_to_video_agent" in agents:
        out.update(motion_bucket_id=int(video.motion_bucket_id), noise_aug=float(video.noise_aug_strength),
                   train_fps=float(video.fps))
    return out


def flag_fields() -> list[tuple[str, Any]]:
    """(name, field info) of every option `mora train` takes as a flag, in the model's order."""
    return [(name, info) for name, info in TrainConfig.model_fields.items() if name not in NOT_FLAGS]


def parse_size(value: Any) -> tuple[int, int]:
    """`"512x288"` or `(512, 288)` -> (512, 288); both sides multiples of 8 (the VAEs' factor).

    Example:
        >>> parse_size("512x288")
        (512, 288)
    """
    try:
        return _parse_size(value)
    except ValueError as e:
        raise InputError(f"--train-size: {value!r} {e}") from None


def _parse_size(value: Any) -> tuple[int, int]:
    try:
        if isinstance(value, str):
            w, h = (int(v) for v in value.lower().split("x"))
        else:
            w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError("is not WxH; pass e.g. 512x288") from None
    if not (8 <= w <= MAX_SIDE and 8 <= h <= MAX_SIDE) or w % 8 or h % 8:
        near = f"{max(8, round(w / 8) * 8)}x{max(8, round(h / 8) * 8)}"
        raise ValueError(f"must have sides that are multiples of 8, from 8 to {MAX_SIDE}; use e.g. {near}")
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


def check_agents(agents: Any) -> tuple[str, ...]:
    """A comma-separated string or a list of agent names -> the agents in chain order (A2, A3, A4)."""
    if isinstance(agents, str):
        agents = [a.strip() for a in agents.split(",") if a.strip()]
    agents = tuple(agents or ())
    known = ", ".join(AGENTS)
    if not agents:
        raise ValueError(f"names no agent; pass a comma-separated list from {known}")
    for agent in agents:
        if agent not in AGENTS:
            raise ValueError(f"names {agent!r}, which is not a trainable agent; choose from {known}")
    if len(set(agents)) != len(agents):
        raise ValueError("names an agent twice; list each once")
    return tuple(a for a in AGENTS if a in agents)  # chain order: A2, A3, A4


class LoopOptions(BaseModel):
    """The data-free loop's own options (`mora train --prompts`); the fine-tuning's are `TrainConfig`'s.

    Example:
        >>> LoopOptions(iterations=2, candidates=4).quality_floor
        0.0
    """

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(3, ge=1, le=1000, **_help("rounds of make, filter, fine-tune", "K"))
    candidates: int = Field(4, ge=2, le=64, **_help("videos made per prompt (a filter needs a choice: >= 2)", "N"))
    quality_floor: float = Field(0.0, ge=0, le=1.0, allow_inf_nan=False, **_help(
        "candidates under this score-card quality (0..1) are never shown to a judge or kept", "X"))

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise validation.input_error(e, model=type(self), spell=option_flag) from None

"""The training loop: `mora.train(...)` and the `Trainer` behind it.

One step: the batch of step s (a seeded permutation per epoch), every random draw from a
generator seeded by (seed, s), the coupled loss, backward, gradient clipping, AdamW (or 8-bit AdamW
on CUDA) with the learning rate of step s (a pure function of s). A resumed run therefore
continues exactly where the interrupted one stopped: same data order, same draws, same schedule.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from mora.adapters.adapter import Adapter, write_adapter, write_folder_atomically
from mora.adapters.lora import lora_state, set_lora_state
from mora.adapters.modulation import modulation_factor
from mora.errors import InputError
from mora.training import checkpoints as ckpt
from mora.training.config import TrainConfig
from mora.training.coupled import compute_losses
from mora.training.data import check_dataset
from mora.training.distributed import (
    Processes,
    average_gradients,
    end_processes,
    from_environment,
    main_process_first,
    mean_over_processes,
)
from mora.training.ema import EMA_FILE, Averaged
from mora.training.feed import StepFeed, open_cache
from mora.training.manifest import ADAPTER_DIR, FINAL_LOSS_STEPS, adapter_info, write_manifest
from mora.training.models import AgentModel, build_agent
from mora.training.report import (
    LOG_FILE,
    LOSS_PLOT,
    METRICS,
    MetricsLog,
    close_log,
    open_log,
    open_tracker,
    plot_losses,
    track,
)
from mora.training.timing import StepTimer, time_encoders
from mora.training.validation import validate

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What `mora.train` returns.

    Args:
        adapter_dir: `RUN_DIR/adapter`, for `--adapter` and `load_adapter`.
        metrics_path: `RUN_DIR/metrics.jsonl`.
        final_loss: mean total loss of the last (up to) 10 steps.
        run_dir: RUN_DIR.
        steps: optimizer steps done in total.
        modulation: modulation factor ||z_i|| per agent at the end.
        manifest: the content of `RUN_DIR/train.json`.
    """

    adapter_dir: Path
    metrics_path: Path
    final_loss: float
    run_dir: Path | None = None
    steps: int = 0
    modulation: dict[str, float] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)


def train(data: str | Path, out: str | Path, *, progress: bool = True,
          callback: Callable[[dict[str, Any]], None] | None = None, **options: Any) -> TrainResult:
    """Fine-tune the agents jointly (LoRA theta_i + modulation z_i) on a folder of captioned clips.

    (`mora.train` is `mora.training.loop.train`, which also takes `prompts=` for the data-free loop.)

    Args:
        data: folder of videos plus `metadata.jsonl` (`{"file_name": ..., "text": ...}` per line).
        out: the run folder; must be new (or hold this run, with `resume=True`).
        progress: show a progress bar (step, loss, ETA) on stderr.
        callback: called with each step's metrics (a dict, as written to metrics.jsonl).
        **options: any `TrainConfig` field: preset, agents, steps, batch_size, lr, mod_lr, rank,
            mod_tokens, coupling, lambda_image, train_size, train_frames, checkpoint_every, resume,
            seed, device, optimizer, ...

    Returns:
        `TrainResult(adapter_dir, metrics_path, final_loss, ...)`.

    Raises:
        InputError: a bad option, bad data (every bad line checked first) or RUN_DIR conflict; nothing
            but `train.log` is written under `out` then.
        KeyboardInterrupt: re-raised after Ctrl-C; the newest checkpoint is intact (`resume=True`).

    Example:
        >>> result = mora.train(data="clips", out="runs/fox", preset="tiny", steps=20,
        ...                     train_size=(64, 64), train_frames=4)  # doctest: +SKIP
        >>> result.adapter_dir
        PosixPath('runs/fox/adapter')
    """
    return Trainer(TrainConfig(data=data, out=out, **options), progress=progress, callback=callback).run()


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The learning-rate multiplier of step `step` (0-based): warmup, then constant or cosine to 10%."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.steps - cfg.warmup_steps - 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
    return 1.0


class Trainer:
    """Runs one training; `train()` is `Trainer(config).run()`.

    Kept as an object so tests, notebooks and benchmarks can reach the models: `prepare()` loads
    them, `eval_loss()` measures the objective without training, `adapter()` is the in-memory
    adapter, `pipelines()` the trained pipelines, `feed` (a `mora.training.feed.StepFeed`) what each
    step is fed.

    Args:
        config: the run's options (validated here).
        progress: show the progress bar.
        callback: called with each step's metrics.

    Example:
        >>> trainer = Trainer(TrainConfig(data="clips", out="runs/a", preset="tiny", steps=5))  # doctest: +SKIP
        >>> result = trainer.run()                                                               # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig, *, progress: bool = True,
                 callback: Callable[[dict[str, Any]], None] | None = None):
        self.cfg = config.validate()
        self.progress = progress
        self.callback = callback
        self.models: dict[str, AgentModel] = {}
        self.step = 0
        self.resumed_from: Path | None = None
        self._log: tuple | None = None
        self.processes = Processes()
        self.ema: Averaged | None = None
        self.validations: list[dict[str, Any]] = []
        self.tracker: Any = None
        self.started = time.time()
        self._timer: StepTimer | None = None  # the running step's phase timer (metrics' `phase_seconds`)

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out)

    # --- setup ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Check RUN_DIR and the data, load the models, build the optimizer, restore a checkpoint.

        Nothing is written before the options, RUN_DIR and every data line pass their checks (a
        refused run leaves no folder and no log); `--overwrite` clears an earlier run only then.
        """
        if self.models:
            return
        from mora.tools.runtime import resolve_device

        resume_from = ckpt.check_run_dir(self.cfg)
        self.processes, device = from_environment(self.cfg.device)
        self.device = resolve_device(device)
        self._check_optimizer()
        frames = cast(int, self.cfg.train_frames)  # validate() filled it in from the preset if not given
        self.clips = check_dataset(self.cfg.data, frames, self.cfg.train_fps)
        if self.processes.main:  # only process 0 writes
            if self.cfg.overwrite:
                ckpt.clear_run(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._log = open_log(self.run_dir / LOG_FILE)
        try:
            logger.info("training %s on preset %s (%s)", ", ".join(self.cfg.agents), self.cfg.preset_name,
                        json.dumps(self.cfg.to_json()))
            self.dtype = self._frozen_dtype()
            preset = self.cfg.preset_obj()
            with main_process_first(self.processes):  # process 0 builds the tiny models, if need be
                self.models = {agent: build_agent(preset, agent, self.device, self.dtype, rank=self.cfg.rank,
                                                  mod_tokens=self.cfg.mod_tokens,
                                                  gradient_checkpointing=self.cfg.gradient_checkpointing,
                                                  seed=self.cfg.seed)
                               for agent in self.cfg.agents}
            self.optimizer = self._make_optimizer()
            self.ema = Averaged([p for g in self.optimizer.param_groups for p in g["params"]],
                                self.cfg.ema_decay) if self.cfg.ema else None
            self.encodings = open_cache(self.cfg, self.models, self.dtype, self.run_dir, self.processes,
                                        self.clips)
            self.feed = StepFeed(self.cfg, self.clips, self.models, self.processes, self.device, self.encodings)
            time_encoders([m.pipe for m in self.models.values()], lambda: self._timer)
            if resume_from is not None:
                self._restore(resume_from)
        except BaseException:
            self.close()
            raise

    def _check_optimizer(self) -> None:
        if self.cfg.optimizer != "adamw8bit":
            return
        if not self.device.startswith("cuda"):
            raise InputError(f"--optimizer: adamw8bit needs a CUDA GPU (device is {self.device!r}); use adamw")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise InputError("--optimizer: adamw8bit needs bitsandbytes; pip install 'mora[train-cuda]' or use "
                             "adamw") from None

    def _frozen_dtype(self) -> torch.dtype:
        name = str(self.cfg.dtype).lower()
        if name == "auto":
            return torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        return torch.bfloat16 if name in ("bfloat16", "bf16") else torch.float32

    def _make_optimizer(self) -> torch.optim.Optimizer:
        # Two groups: theta_i with weight decay, z_i without (decay would shrink ||z_i|| for no reason).
        groups = [
            {"params": [p for m in self.models.values() for p in m.lora_params], "lr": self.cfg.lr,
             "weight_decay": self.cfg.weight_decay, "name": "lora"},
            {"params": [m.z for m in self.models.values()], "lr": self.cfg.mod_lr, "weight_decay": 0.0,
             "name": "modulation"},
        ]
        if self.cfg.optimizer == "adamw8bit":
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(groups)
        return torch.optim.AdamW(groups)

    def _restore(self, path: Path) -> None:
        step, lora, modulation, optimizer_state = ckpt.load_checkpoint(path, self.cfg)
        for agent, m in self.models.items():
            set_lora_state(m.pipe.unet, lora[agent])
            with torch.no_grad():
                m.z.copy_(modulation[agent].to(m.z.device))
        self.optimizer.load_state_dict(optimizer_state)
        if self.ema is not None and (path / EMA_FILE).is_file():
            self.ema.load_state_dict(torch.load(path / EMA_FILE, map_location="cpu", weights_only=True))
        self.step = step
        self.resumed_from = path
        logger.info("resuming from %s at step %d", path, step)

    # --- one step ---------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.startswith("cuda") and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def train_step(self, step: int, windows: list[list[Any]] | None = None) -> dict[str, Any]:
        """Run optimizer step `step` (0-based): `grad_accum` micro-batches, gradients averaged over processes.

        `windows`: per micro-batch, its clips' frames already decoded (`prefetched`). The record's
        `phase_seconds` splits the step's time into data, encode, forward, backward and optimizer.
        """
        start = time.perf_counter()
        self._timer = timer = StepTimer(cuda=self.device.startswith("cuda"))
        try:
            total, per_agent = self._accumulate(step, windows, timer)
            with timer.phase("optimizer"):
                factor, grad_norm = self._update(step)
        finally:
            self._timer = None
        self.step = step + 1
        loss = mean_over_processes(total, self.processes)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {step + 1}; lower --lr or --mod-lr")
        return {
            "step": step + 1, "loss": loss,
            "loss_per_agent": {a: mean_over_processes(v, self.processes) for a, v in per_agent.items()},
            **self.modulation_stats(),
            "lr": self.cfg.lr * factor, "mod_lr": self.cfg.mod_lr * factor, "grad_norm": grad_norm,
            "seconds": round(time.perf_counter() - start, 4), "phase_seconds": timer.rounded(),
        }

    def _accumulate(self, step: int, windows: list[list[Any]] | None,
                    timer: StepTimer) -> tuple[float, dict[str, float]]:
        """Forward and backward of the step's `grad_accum` micro-batches: (mean loss, mean loss per agent)."""
        source = 0 if self.cfg.overfit_batch else step  # the overfit check replays step 1's batch and draws
        total, per_agent = 0.0, dict[str, float]()
        accum = self.cfg.grad_accum
        for micro in range(accum):
            with self._autocast():
                with timer.phase("data"):
                    batch = self.feed.batch(source, micro, windows[micro] if windows else None, timer)
                with timer.phase("forward"):
                    losses = compute_losses(self.models, batch, self.feed.draws(source, micro), self.cfg)
            with timer.phase("backward"):
                (losses.total / accum).backward()
            total += float(losses.total.detach()) / accum
            for agent, value in losses.per_agent.items():
                per_agent[agent] = per_agent.get(agent, 0.0) + float(value.detach()) / accum
        return total, per_agent

    def _update(self, step: int) -> tuple[float, float]:
        """Average the gradients over processes, clip, step the optimizer at step `step`'s learning rate.

        Returns (the learning-rate factor, the gradient norm before clipping).
        """
        factor = lr_factor(step, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = (self.cfg.lr if group["name"] == "lora" else self.cfg.mod_lr) * factor
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        average_gradients(params, self.processes)
        grads = [p.grad for p in params if p.grad is not None]
        if self.cfg.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        else:
            # what clip_grad_norm_ measures, by hand: torch.nn.utils.get_total_norm needs torch >= 2.6
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])) \
                if grads else torch.zeros(())
        self.optimizer.step()
        if self.ema is not None:
            self.ema.step()
        self.optimizer.zero_grad(set_to_none=True)
        return factor, float(norm)

    @torch.no_grad()
    def modulation_stats(self) -> dict[str, dict[str, float]]:
        """Per agent: ||z|| (`modulation`), ||z - z0|| (`modulation_drift`) and cos(z, z0) (`modulation_cos`).

        z0 is the run's start (E_i("[Mod]"), or the loaded z of a data-free iteration). ||z|| alone
        barely moves while z does; drift and cosine show how far and in which direction it went.
        """
        out: dict[str, dict[str, float]] = {"modulation": {}, "modulation_drift": {}, "modulation_cos": {}}
        for agent, m in self.models.items():
            z, z0 = m.z.detach().float(), m.z_init.to(m.z.device).float()
            out["modulation"][agent] = modulation_factor(z)
            out["modulation_drift"][agent] = float((z - z0).norm())
            out["modulation_cos"][agent] = float(torch.nn.functional.cosine_similarity(z.flatten(), z0.flatten(),
                                                                                       dim=0))
        return out

    @torch.no_grad()
    def eval_loss(self, at_steps: Iterable[int] = (0,)) -> float:
        """Mean total objective over the batches and random draws of training steps `at_steps`, not training.

        No conditioning dropout, no update. With the same `at_steps`, two calls differ only by what
        training changed, which makes it the measure for "the loss went down".
        """
        self.prepare()
        values = []
        for step in at_steps:
            with self._autocast():
                losses = compute_losses(self.models, self.feed.batch(step), self.feed.draws(step), self.cfg, train=False)
            values.append(float(losses.total))
        return sum(values) / len(values)

    # --- the loop -----------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train to `steps`, writing metrics, checkpoints, the adapter, loss.png and train.json (process 0)."""
        self.prepare()
        if not self.processes.main:
            result = self._run_worker()
            end_processes(self.processes)
            return result
        bar = None
        try:
            metrics = MetricsLog(self.run_dir / METRICS)
            records = metrics.keep_until(self.step) if self.resumed_from else []
            self.validations = [r for r in records if "validation" in r]
            records = [r for r in records if "loss" in r]
            if not self.resumed_from:
                metrics.path.write_text("", encoding="utf-8")
            write_manifest(self, "running", records)
            self.tracker = open_tracker(self.cfg.report_to, self.run_dir, self.cfg.to_json())
            bar = self._progress_bar()
            ahead = self.feed.prefetched(self.step)
            for step in range(self.step, self.cfg.steps):
                record = self.train_step(step, next(ahead) if ahead is not None else None)
                metrics.append(record)
                records.append(record)
                track(self.tracker, record)
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
                    bar.update(1)
                if self.callback is not None:
                    self.callback(record)
                if self.cfg.validate_every and self.step % self.cfg.validate_every == 0:
                    self.validations.append(validate(self, self.step))
                    metrics.append(self.validations[-1])
                    track(self.tracker, self.validations[-1])
                if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.steps:
                    self.save_checkpoint()
                    plot_losses(records + self.validations, self.run_dir / LOSS_PLOT)
            result = self._finish(records)
            end_processes(self.processes)
            return result
        except Exception:  # noqa: BLE001 - recorded in train.json, then re-raised as it is
            with contextlib.suppress(OSError, TypeError, ValueError):  # the record is best effort (disk, JSON)
                write_manifest(self, "failed", MetricsLog(self.run_dir / METRICS).read())
            raise
        except KeyboardInterrupt:
            newest = ckpt.checkpoints(self.run_dir)
            where = f"newest checkpoint: {newest[-1][1]}" if newest else "no checkpoint yet"
            logger.warning("interrupted at step %d; %s; continue with --resume", self.step, where)
            with contextlib.suppress(OSError, TypeError, ValueError):  # the record of the interruption is best effort
                write_manifest(self, "interrupted", MetricsLog(self.run_dir / METRICS).read())
            raise
        finally:
            if bar is not None:
                bar.close()
            if self.tracker is not None:
                self.tracker.finish()
            self.close()

    def _run_worker(self) -> TrainResult:
        """Processes other than 0 train in step with it (the same updates) and write nothing."""
        ahead = self.feed.prefetched(self.step)
        for step in range(self.step, self.cfg.steps):
            self.train_step(step, next(ahead) if ahead is not None else None)
        return TrainResult(adapter_dir=self.run_dir / ADAPTER_DIR, metrics_path=self.run_dir / METRICS,
                           final_loss=math.nan, run_dir=self.run_dir, steps=self.step)

    def _progress_bar(self):
        if not self.progress:
            return None
        from mora.progress import bar

        return bar(self.cfg.steps, initial=self.step, desc="train", unit="step")

    def close(self) -> None:
        """Stop writing train.log (the models stay loaded)."""
        if self._log is not None:
            close_log(*self._log)
            self._log = None

    # --- outputs ------------------------------------------------------------------------------------

    def averaged(self) -> contextlib.AbstractContextManager:
        """With `--ema`: the moving average in the parameters for the block; otherwise nothing changes."""
        return self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()

    def _weights(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        lora = {a: lora_state(m.pipe.unet) for a, m in self.models.items()}
        modulation = {a: m.z.detach().float().cpu().clone() for a, m in self.models.items()}
        return lora, modulation

    def save_checkpoint(self) -> Path:
        lora, modulation = self._weights()  # the trained values (the average, with --ema, goes in ema.pt)
        return ckpt.save_checkpoint(self.run_dir, self.step, lora=lora, modulation=modulation,
                                    optimizer_state=self.optimizer.state_dict(), info=adapter_info(self), config=self.cfg,
                                    keep=self.cfg.keep_checkpoints,
                                    ema_state=self.ema.state_dict() if self.ema is not None else None)

    def adapter(self) -> Adapter:
        """The current theta_i and z_i (their average with `--ema`) as an in-memory `Adapter`."""
        with self.averaged():
            lora, modulation = self._weights()
            meta = {"format_version": 1, **adapter_info(self)}
        return Adapter(path=None, meta=meta, modulation_tensors=modulation, lora_states=lora)

    def pipelines(self) -> dict[str, Any]:
        """agent -> its training pipeline (LoRA layers in place; append z via `mora.adapters.inference`)."""
        return {agent: m.pipe for agent, m in self.models.items()}

    def save_adapter(self, target: Path | None = None) -> Path:
        """Write the adapter atomically to `target` (default `RUN_DIR/adapter/`); with `--ema`, the moving average."""
        with self.averaged():
            lora, modulation = self._weights()
            info = adapter_info(self)
        target = self.run_dir / ADAPTER_DIR if target is None else target
        write_folder_atomically(target, lambda tmp: write_adapter(tmp, lora=lora, modulation=modulation, info=info))
        return target

    def _finish(self, records: list[dict[str, Any]]) -> TrainResult:
        adapter_dir = self.save_adapter()
        plot_losses(records + self.validations, self.run_dir / LOSS_PLOT)
        tail = [r["loss"] for r in records[-FINAL_LOSS_STEPS:]]
        final = sum(tail) / len(tail) if tail else math.nan
        manifest = write_manifest(self, "complete", records, final_loss=final)
        logger.info("done: %d steps, final loss %.4f, adapter %s", self.step, final, adapter_dir)
        return TrainResult(adapter_dir=adapter_dir, metrics_path=self.run_dir / METRICS, final_loss=final,
                           run_dir=self.run_dir, steps=self.step, modulation=manifest["modulation"], manifest=manifest)

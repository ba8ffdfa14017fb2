"""The adapter folder: what training produces and what `--adapter` loads.

Layout (`RUN_DIR/adapter/`, and every `checkpoints/step-N/`, which adds the optimizer state):

    adapter.json              format, base preset and model ids per agent, agents, rank, mod tokens,
                              modulation factors ||z_i||, steps, seed, mora version, sha256 per file
    <agent>.safetensors       theta_i in diffusers' LoRA layout (`unet.<module>.lora_A/B.weight`)
    modulation.safetensors    z_i per agent: tensor `<agent>` of shape (K, D)

`load_adapter` verifies everything before a model loads: the format, every file's sha256, the
modulation tensors' shapes, and (given a preset) that the preset's models are the ones the adapter
was trained on. Every problem is an `InputError` (exit 2) naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mora.adapters.lora import (
    ADAPTER_NAME,
    TARGET_MODULES,
    load_lora,
    lora_config,
    save_lora_file,
    set_lora_state,
)
from mora.adapters.modulation import append_modulation, modulation_factor
from mora.adapters.spec import AGENTS
from mora.config import Preset, get_preset
from mora.errors import InputError

logger = logging.getLogger(__name__)

FORMAT = "mora-adapter"
FORMAT_VERSION = 1
ADAPTER_JSON = "adapter.json"
MODULATION_FILE = "modulation.safetensors"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_adapter(directory: Path, *, lora: dict[str, dict[str, torch.Tensor]], modulation: dict[str, torch.Tensor],
                  info: dict[str, Any]) -> dict[str, Any]:
    """Write the adapter files into an existing `directory`; return the adapter.json content.

    Args:
        directory: where to write (the caller makes it atomic: a temp folder, then a rename).
        lora: agent -> its LoRA weights in peft format (see `mora.adapters.lora.lora_state`).
        modulation: agent -> z_i, (K, D).
        info: the rest of adapter.json (base, agents, rank, mod_tokens, steps, seed, ...).
    """
    from safetensors.torch import save_file

    files = {}
    for agent, state in lora.items():
        path = save_lora_file(state, directory, f"{agent}.safetensors", info["rank"])
        files[path.name] = sha256_file(path)
    tensors = {agent: z.detach().float().cpu().contiguous() for agent, z in modulation.items()}
    save_file(tensors, str(directory / MODULATION_FILE), metadata={"format": "pt"})
    files[MODULATION_FILE] = sha256_file(directory / MODULATION_FILE)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **info,
            "modulation": {agent: modulation_factor(z) for agent, z in tensors.items()},
            "modulation_width": {agent: int(z.shape[-1]) for agent, z in tensors.items()},
            "target_modules": list(TARGET_MODULES), "files": files}
    (directory / ADAPTER_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def write_folder_atomically(target: Path, fill: Any) -> Any:
    """Fill a temp folder beside `target` with `fill(tmp)`, then rename it onto `target`.

    Readers see the old folder or the complete new one: an interrupted write leaves only a hidden
    temp folder (removed here on failure). Returns what `fill` returns.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        result = fill(tmp)
        if target.exists():  # a rename cannot replace a non-empty folder: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:  # Ctrl-C too: never leave a half-written folder at `target`
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


@dataclass
class Adapter:
    """A trained adapter: theta_i (LoRA) and z_i per agent, verified.

    Args:
        path: the adapter folder (None for one held in memory by a `Trainer`).
        meta: the content of adapter.json.
        modulation_tensors: agent -> z_i, (K, D) float32 on the CPU.
        sha256: sha256 of adapter.json (which lists every file's sha256): the adapter's identity.
        lora_states: agent -> LoRA weights, for an in-memory adapter only.

    Example:
        >>> adapter = load_adapter("runs/fox/adapter", "mora")  # doctest: +SKIP
        >>> adapter.apply(pipe, "text_to_image_agent")           # doctest: +SKIP
    """

    path: Path | None
    meta: dict[str, Any]
    modulation_tensors: dict[str, torch.Tensor]
    sha256: str | None = None
    lora_states: dict[str, dict[str, torch.Tensor]] | None = field(default=None, repr=False)

    @property
    def agents(self) -> list[str]:
        return list(self.meta["agents"])

    @property
    def factors(self) -> dict[str, float]:
        """Modulation factor ||z_i|| per agent."""
        return {agent: modulation_factor(z) for agent, z in self.modulation_tensors.items()}

    def has(self, agent: str) -> bool:
        return agent in self.modulation_tensors

    def modulation(self, agent: str) -> torch.Tensor:
        """z_i of `agent`, (K, D) float32."""
        if agent not in self.modulation_tensors:
            raise InputError(f"--adapter: it has no {agent}; it was trained for {', '.join(self.agents)}")
        return self.modulation_tensors[agent]

    def append(self, agent: str, embeds: torch.Tensor) -> torch.Tensor:
        """`embeds` (B, L, D) with z of `agent` appended on the token axis: (B, L + K, D).

        The tools call this (duck-typed: `mora.tools` never imports the training package).
        """
        return append_modulation(embeds, self.modulation(agent))

    def agent_for_role(self, role: str) -> str | None:
        """The adapter's agent that runs a preset role (`extend` is the video agent's), or None."""
        role = "image_to_video" if role == "extend" else role
        return next((a for a in self.agents if AGENTS[a].role == role), None)

    def apply(self, pipe: Any, agent: str) -> Any:
        """Load `agent`'s LoRA into `pipe`'s UNet (in place) and return `pipe`.

        A pipeline with an adapter applied is that adapter's: cache it under a key that includes
        `sha256`. z_i is appended per call (`mora.adapters.inference`).
        """
        family = self.meta["base"]["models"][agent]["family"]
        self.modulation(agent)  # the agent must be in the adapter
        if self.path is None:
            from peft import inject_adapter_in_model

            inject_adapter_in_model(lora_config(self.meta["rank"]), pipe.unet, adapter_name=ADAPTER_NAME)
            set_lora_state(pipe.unet, self.lora_states[agent])
        else:
            load_lora(pipe, family, self.path / f"{agent}.safetensors")
        logger.info("adapter %s: %s LoRA loaded (||z|| %.3f)", self.path or "in memory", agent, self.factors[agent])
        return pipe

    def manifest_entry(self) -> dict[str, Any]:
        """The manifest's `adapter` entry: {path, sha256, agents, modulation}."""
        return {"path": str(self.path) if self.path else None, "sha256": self.sha256, "agents": self.agents,
                "modulation": self.factors}


def load_adapter(path: str | os.PathLike, preset: str | Preset | None = None) -> Adapter:
    """Read and verify an adapter folder (files, sha256, shapes; base models when `preset` is given).

    Args:
        path: the adapter folder (`RUN_DIR/adapter`, or a checkpoint `RUN_DIR/checkpoints/step-N`).
        preset: the preset it will run with; its models must be the adapter's base models.

    Raises:
        InputError: not an adapter, a missing or corrupt file, or other base models.

    Example:
        >>> adapter = load_adapter("runs/fox/adapter", preset="mora")  # doctest: +SKIP
        >>> adapter.manifest_entry()["modulation"]                     # doctest: +SKIP
        {'text_to_image_agent': 21.7, 'image_to_video_agent': 9.3}
    """
    folder = Path(path).expanduser()
    shown = os.fspath(path)
    meta_path = folder / ADAPTER_JSON
    if not meta_path.is_file():
        raise InputError(f"--adapter: {shown!r} is not an adapter folder (no {ADAPTER_JSON}); pass RUN_DIR/adapter "
                         "as written by mora train")
    raw = meta_path.read_bytes()
    meta = _parse_meta(raw, meta_path)
    for name, digest in meta["files"].items():
        file = folder / name
        if not file.is_file():
            raise InputError(f"--adapter: {str(file)!r} is missing; copy the whole adapter folder again or retrain")
        if sha256_file(file) != digest:
            raise InputError(f"--adapter: {str(file)!r} is corrupt (its sha256 differs from {ADAPTER_JSON}'s); "
                             "copy the adapter folder again or retrain")
    adapter = Adapter(path=folder, meta=meta, modulation_tensors=_read_modulation(folder, meta),
                      sha256=hashlib.sha256(raw).hexdigest())
    if preset is not None:
        check_base(adapter, preset)
    return adapter


def _parse_meta(raw: bytes, meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"--adapter: {str(meta_path)!r} is not valid JSON ({err}); copy the adapter folder "
                         "again or retrain") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"--adapter: {str(meta_path)!r} is not a Mora adapter ({FORMAT!r} format expected); pass "
                         "the adapter folder mora train wrote")
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"--adapter: {str(meta_path)!r} has format version {meta.get('format_version')!r}; this "
                         f"Mora reads version {FORMAT_VERSION}: upgrade Mora or retrain the adapter")
    required = ("base", "agents", "rank", "mod_tokens", "files")
    missing = [k for k in required if k not in meta]
    unknown = [a for a in meta.get("agents", []) if a not in AGENTS]
    models = meta.get("base", {}).get("models", {}) if isinstance(meta.get("base"), dict) else {}
    missing += [f"base of {a}" for a in meta.get("agents", []) if not {"role", "family", "model"} <= set(models.get(a, {}))]
    if missing or unknown or not isinstance(meta.get("files"), dict):
        raise InputError(f"--adapter: {str(meta_path)!r} is incomplete or damaged (missing {missing or 'nothing'}, "
                         f"unknown agents {unknown or 'none'}); copy the adapter folder again or retrain")
    return meta


def _read_modulation(folder: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = folder / MODULATION_FILE
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise InputError(f"--adapter: {str(file)!r} cannot be read ({err}); copy the adapter folder again") from err
    for agent in meta["agents"]:
        z = tensors.get(agent)
        if z is None or z.ndim != 2 or z.shape[0] != meta["mod_tokens"]:
            raise InputError(f"--adapter: {str(file)!r} has no valid z for {agent} ({meta['mod_tokens']} tokens "
                             "expected); copy the adapter folder again or retrain")
    return {agent: tensors[agent].float() for agent in meta["agents"]}


def check_base(adapter: Adapter, preset: str | Preset) -> None:
    """The preset must run the adapter's base models for each of its agents (`InputError` naming both)."""
    preset = get_preset(preset)
    trained = adapter.meta["base"]
    for agent in adapter.agents:
        base = trained["models"][agent]
        spec = preset.spec(base["role"])
        if spec.model != base["model"] or spec.family != base["family"]:
            raise InputError(
                f"--adapter: {str(adapter.path)!r} was trained for {agent} on {base['model']!r} ({base['family']}, "
                f"preset {trained.get('preset')!r}), but preset {preset.name!r} runs {spec.model!r} ({spec.family}); "
                f"use --preset {trained.get('preset')} or an adapter trained on {spec.model!r}"
            )

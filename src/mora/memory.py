"""The memory policy: what each model's weights take, whether a step fits a card, and what to release or
offload before a family loads. Pure (no torch): `mora presets --memory` reads it, and the runtime
(`mora.tools.runtime`) measures what is resident and acts on `plan`'s decisions.

Sizes come from the full-size configs' parameter counts (`mora.data.fullsize_architectures`, each
verified by building the config on the meta device), at the family's GPU dtype: 2 bytes a parameter
(fp16 and bf16), 4 for the components Mora's loaders keep in float32. They are weights only:
activations, the CUDA context and the allocator's slack are what `WORKING_RESERVE` of a card is left
for. Measured peaks per preset and profile wait for a GPU (benchmarks/RESULTS.md).

The policy, before a pipeline loads (`plan`):
1. if its weights fit beside what is resident, nothing moves;
2. else the resident pipelines the rest of the route does not need are released, largest first;
3. then, if still short, those it needs later are offloaded to the CPU (moved back when used; on a CPU
   device there is nowhere to offload to, so they are released);
4. and if the pipeline alone is over the budget, it loads in `low-vram`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

GIB = 1024**3
CARDS_GB = (24, 48, 80)  # the cards `mora presets --memory` answers for
WORKING_RESERVE = 0.2  # of a card's memory, left to activations, the CUDA context and allocator slack
GPU_BYTES = 2  # fp16 and bf16: every family's GPU dtype
# low-vram on CUDA group-offloads every component but these (diffusers: group offloading with streams
# and VAE tiling do not mix), layer by layer (`mora.tools.profiles`)
RESIDENT_UNDER_OFFLOAD = ("vae",)
# what each profile keeps on the GPU during a step: every component (resident profiles), or in
# low-vram the components it does not offload (the offloaded layers in flight come on top: small)
TABLE_PROFILES = {"balanced": "resident", "fast": "resident", "low-vram": "not offloaded"}


@functools.cache
def _components() -> dict[str, dict[str, int]]:
    """Hub model id -> {config entry: bytes on the GPU}, from the full-size configs."""
    from mora.data import fullsize_entries

    out: dict[str, dict[str, int]] = {}
    for name, entry in fullsize_entries().items():
        size = int(entry["params"]) * (4 if entry.get("dtype") == "float32" else GPU_BYTES)
        for model in entry.get("models", ()):
            out.setdefault(model, {})[name] = size
    return out


@functools.cache
def _pipeline_attribute() -> dict[str, str]:
    """config entry -> the pipeline attribute it fills (`vae`, `transformer`, ...)."""
    from mora.data import fullsize_entries

    return {name: entry["component"] for name, entry in fullsize_entries().items()}


def known(model: str) -> bool:
    """Whether the full-size configs give `model`'s size."""
    return model in _components()


def component_bytes(models: Iterable[str]) -> dict[str, int] | None:
    """The weights of these models' components, each shared component once (Wan's UMT5 encoder; the
    SDXL refiner lists only its UNet: its loader takes the base's VAE and second text encoder); None
    when a model is not in the configs (a local directory)."""
    found: dict[str, int] = {}
    for model in models:
        if not known(model):
            return None
        found.update(_components()[model])
    return found


def weights_bytes(models: Iterable[str]) -> int | None:
    """Bytes of these models' weights together on the GPU (None: not in the configs)."""
    parts = component_bytes(models)
    return None if parts is None else sum(parts.values())


def step_peak(models: Iterable[str], profile: str) -> int | None:
    """Weights on the GPU at once while a step of these models runs in `profile` (`TABLE_PROFILES`)."""
    parts = component_bytes(models)
    if parts is None:
        return None
    if TABLE_PROFILES[profile] == "resident":
        return sum(parts.values())
    return sum(size for entry, size in parts.items() if _pipeline_attribute()[entry] in RESIDENT_UNDER_OFFLOAD)


def usable(card_bytes: int) -> int:
    """What weights may take of a card: the rest is the working reserve."""
    return int(card_bytes * (1 - WORKING_RESERVE))


def preset_rows(preset: Any) -> list[dict]:
    """One row per profile of `TABLE_PROFILES`: the preset's largest step, its weights and the cards it fits.

    With the policy, a step never needs another family resident beside it, so the preset's peak is
    its largest step. A preset naming a model outside the configs (a local directory, `tiny/`) gets
    None and no verdict.
    """
    rows = []
    for profile in TABLE_PROFILES:
        peaks = {role: step_peak(spec.model_ids(), profile) for role, spec in preset.roles.items()}
        sized = {role: peak for role, peak in peaks.items() if peak is not None}
        if len(sized) < len(peaks):
            rows.append({"preset": preset.name, "profile": profile, "step": None, "weights_gb": None, "fits": None})
            continue
        role = max(sized, key=lambda r: sized[r])
        rows.append({"preset": preset.name, "profile": profile, "step": role,
                     "weights_gb": round(sized[role] / GIB, 1),
                     "fits": {str(gb): sized[role] <= usable(gb * GIB) for gb in CARDS_GB}})  # JSON keys
    return rows


@dataclass(frozen=True)
class Resident:
    """A cached pipeline: its cache key, the models it holds and the bytes it keeps on the device."""

    key: tuple
    models: frozenset[str]
    bytes: int
    offloadable: bool = True  # resident by `.to(device)`, so it can move to the CPU and back
    pinned: bool = False  # shares a model with the running step's pipelines: counted, never moved


@dataclass
class Decision:
    """What to do before a pipeline loads; `reason` says why, for logs and manifests."""

    release: list[tuple] = field(default_factory=list)
    offload: list[tuple] = field(default_factory=list)
    low_vram: bool = False
    reason: str = "fits"

    def record(self) -> dict:
        """The manifest's form: cache keys as `family model` strings."""
        return {"released": [_name(k) for k in self.release], "offloaded": [_name(k) for k in self.offload],
                "low_vram": self.low_vram, "reason": self.reason}


def _name(key: tuple) -> str:
    return f"{key[0]} {key[1]}"


def plan(resident: list[Resident], incoming: int | None, budget: int | None, *,
         needed_later: set[str] | None, can_offload: bool) -> Decision:
    """Decide what to release or offload so `incoming` bytes of weights fit within `budget`.

    Args:
        resident: the pipelines on the device now, in load order (the pinned ones are never moved).
        incoming: the weights of the pipeline about to load (None: unknown, nothing is decided).
        budget: what weights may take on the device (`usable`; None: no limit, e.g. a CPU device).
        needed_later: the models the rest of the route uses (None: unknown, so every resident one may be).
        can_offload: whether moving a pipeline to the CPU frees device memory (not on a CPU device).

    Example:
        >>> a = Resident(("qwen-image", "Q"), frozenset({"Q"}), 58)
        >>> plan([a], 58, 64, needed_later=set(), can_offload=True).release
        [('qwen-image', 'Q')]
    """
    if budget is None or incoming is None:
        return Decision(reason="no budget" if budget is None else "size unknown")
    used = sum(r.bytes for r in resident)
    if used + incoming <= budget:
        return Decision()
    decision = Decision(reason=f"{_gb(used)} resident + {_gb(incoming)} incoming > {_gb(budget)} budget")
    movable = [r for r in resident if not r.pinned]
    unneeded = [r for r in movable if needed_later is not None and not (r.models & needed_later)]
    needed = [r for r in movable if r not in unneeded]
    for group, action in ((unneeded, decision.release), (needed, None)):
        for r in sorted(group, key=lambda r: -r.bytes):
            if used + incoming <= budget:
                break
            target = action if action is not None else (decision.offload if can_offload and r.offloadable
                                                         else decision.release)
            target.append(r.key)
            used -= r.bytes
    if incoming > budget:
        decision.low_vram = True
        decision.reason += "; the pipeline alone is over the budget: low-vram"
    return decision


def _gb(size: int) -> str:
    return f"{size / GIB:.1f} GiB" if size >= GIB / 10 else f"{size / 2**20:.1f} MiB"


def table_lines(rows: list[dict]) -> list[str]:
    """`preset_rows` as the text table `mora presets --memory` prints, with its reading line last."""
    cards = "".join(f"{gb:>4} GB" for gb in CARDS_GB)
    width = max([14, *(len(row["preset"]) for row in rows)])  # the longest name keeps its columns aligned
    lines = [f"{'preset':{width}} {'profile':9} {'largest step':15} {'weights':>8}{cards}"]
    for row in rows:
        fits = row["fits"] or {}
        verdicts = "".join(f"{('yes' if fits[str(gb)] else 'no') if fits else '-':>7}" for gb in CARDS_GB)
        weights = f"{row['weights_gb']:.1f} GB" if row["weights_gb"] is not None else "unknown"
        lines.append(f"{row['preset']:{width}} {row['profile']:9} {row['step'] or '-':15} {weights:>8}{verdicts}")
    lines.append(f"Weights at the GPU dtype from the full-size configs; a card fits when they take at most "
                 f"{1 - WORKING_RESERVE:.0%} of it (the rest: activations, not estimated). low-vram: what it does "
                 f"not offload ({', '.join(RESIDENT_UNDER_OFFLOAD)}); the other weights stream in layer by layer "
                 "from CPU RAM. Measured peaks: benchmarks/RESULTS.md (GPU pending).")
    return lines

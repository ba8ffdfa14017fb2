"""Cached encodings (`--cache`, the default): what the frozen encoders make of each clip, computed once.

Per clip, at the training size: the cover-cropped frames (uint8), the VAE latent distribution
(mean, std) of every frame for each trained agent's VAE (SDXL, InstructPix2Pix, SVD), and SVD's
CLIP image embedding of every frame (A4's conditioning when it sees the real first frame: without
coupling, or in `--real-frame-p` of the steps); per caption, its text embeddings as inference
encodes them. A step then slices its window out of these instead of decoding the video and running
the VAEs and encoders again; the latents are still sampled per step (mean + std x the sample's
noise), so a cached run computes what `--no-cache` does, up to float rounding. What depends on
trained parameters or on the step's noise (A2's coupled estimate, and through CLIP and the VAE what
A4 makes of it; the VAE latent of the noise-augmented conditioning frame) is never cached.

Entries live in memory (the newest `MEMORY_ENTRIES`) and under `RUN_DIR/cache/` as safetensors
files, so a resumed run or a second run into the folder reuses them. A clip's key is its path,
size and modification time: a changed clip gets a new entry, and a run starts by removing the
entries its data no longer has (clips changed or removed, captions no clip has; `prune`), so the
folder holds one run's data, not every version of it. `index.json` holds what every entry depends
on (base models, dtype, training size, format); when that differs the folder is cleared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

CACHE_DIR = "cache"
INDEX = "index.json"
FORMAT = 3  # 2: SVD's CLIP image embedding of every frame; 3: keys name their kind ("clip-...", "sdxl-...")
CLIP_KIND = "clip"
MEMORY_ENTRIES = 32


def clip_key(path: Path) -> str:
    """A clip's cache key: its path, size and modification time (a changed file gets a new key)."""
    stat = Path(path).stat()
    digest = hashlib.sha1(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    return f"{CLIP_KIND}-{digest}"


class EncodingCache:
    """Encodings by key: memory, then `folder`, then `compute()` (stored in both).

    Args:
        folder: `RUN_DIR/cache` (None: memory only, e.g. processes other than 0, which never write).
        fingerprint: what every entry depends on; an index that differs clears the folder.

    Example:
        >>> cache = EncodingCache.open(Path("runs/a"), {"models": {...}}, write=True)  # doctest: +SKIP
        >>> cache.get("abc", lambda: {"x": torch.zeros(2)})                             # doctest: +SKIP
    """

    def __init__(self, folder: Path | None, fingerprint: dict, write: bool = True):
        self.folder, self.fingerprint, self.write = folder, fingerprint, write
        self.memory: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self.computed = 0  # entries made (not read) by this process: for the tests and the log

    @staticmethod
    def text_key(kind: str, text: str) -> str:
        """A caption's key: which encoder (its prefix) and the text."""
        return f"{kind}-" + hashlib.sha1(f"{kind}|{text}".encode()).hexdigest()

    @classmethod
    def open(cls, run_dir: Path, fingerprint: dict, *, write: bool) -> EncodingCache:
        folder = Path(run_dir) / CACHE_DIR
        index = {"format": FORMAT, **fingerprint}
        if write:
            try:
                current = json.loads((folder / INDEX).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                current = None
            if current != json.loads(json.dumps(index)):
                if folder.exists():
                    logger.info("cache: base models or settings changed; clearing %s", folder)
                    shutil.rmtree(folder)
                folder.mkdir(parents=True)
                (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        return cls(folder if folder.is_dir() else None, index, write)

    def prune(self, clips: list[Path], texts: list[str]) -> int:
        """Remove the entries the data `clips` (with captions `texts`) no longer has; returns how many.

        Kept: each clip's current key and, for every caption encoder with an entry, the captions and
        the empty one (the unconditional branch). Gone: clips changed or removed, captions no clip
        has, and temp files a crash left. Only the writing process prunes.
        """
        if self.folder is None or not self.write:
            return 0
        live = {clip_key(path) for path in clips}
        live_texts: dict[str, set[str]] = {}
        removed = 0
        for path in self.folder.iterdir():
            key, kind = path.name.split(".")[0], path.name.partition("-")[0]
            if path.name == INDEX or (path.suffix == ".safetensors" and key in live):
                continue
            if path.suffix == ".safetensors" and kind != CLIP_KIND:
                keys = live_texts.setdefault(kind, {self.text_key(kind, t) for t in [*texts, ""]})
                if key in keys:
                    continue
            path.unlink(missing_ok=True)
            removed += 1
        if removed:
            logger.info("cache: removed %d entries the data no longer has", removed)
        return removed

    def get(self, key: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if key in self.memory:
            self.memory.move_to_end(key)
            return self.memory[key]
        entry = self._read(key)
        if entry is None:
            entry = {k: v.detach().cpu().contiguous() for k, v in compute().items()}
            self.computed += 1
            self._store(key, entry)
        self.memory[key] = entry
        while len(self.memory) > MEMORY_ENTRIES:
            self.memory.popitem(last=False)
        return entry

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}.safetensors"

    def _read(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (OSError, SafetensorError):  # a file cut by a crash: computed again
            return None

    def _store(self, key: str, entry: dict[str, torch.Tensor]) -> None:
        path = self._path(key)
        if path is None or not self.write:
            return
        from safetensors.torch import save_file

        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file(entry, str(tmp))
        os.replace(tmp, path)  # readers see the whole file or none


class NoCache(EncodingCache):
    """`--no-cache`: everything computed each time (nothing kept)."""

    def __init__(self) -> None:
        super().__init__(None, {}, write=False)

    def get(self, key: str, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        self.computed += 1
        return compute()


@torch.no_grad()
def encode_frames(models: dict[str, Any], frames: torch.Tensor, chunk: int = 8) -> dict[str, torch.Tensor]:
    """What the frozen encoders make of every frame (N, 3, H, W in [-1, 1]), per trained agent.

    Returns `{family}_mean`, `{family}_std` (N, C, h, w): the latent distribution through the agent's
    VAE; and for a pipeline with a CLIP image encoder (SVD) `{family}_image_embeds` (N, 1, D), each
    frame's embedding as A4 is conditioned on it. All float32 on the CPU.
    """
    from mora.adapters.modulation import clip_image_tokens

    out: dict[str, torch.Tensor] = {}
    for m in models.values():
        vae = m.pipe.vae
        parts: dict[str, list[torch.Tensor]] = {"mean": [], "std": []}
        encoder = getattr(m.pipe, "image_encoder", None)
        if encoder is not None:
            parts["image_embeds"] = []
        for i in range(0, frames.shape[0], chunk):
            dist = vae.encode(frames[i:i + chunk].to(vae.device, m.dtype)).latent_dist
            parts["mean"].append(dist.mean.float().cpu())
            parts["std"].append(dist.std.float().cpu())
            if encoder is not None:
                parts["image_embeds"].append(clip_image_tokens(m.pipe, frames[i:i + chunk].to(encoder.device), 1)
                                             .float().cpu())
        out.update({f"{m.family}_{name}": torch.cat(values) for name, values in parts.items()})
    return out


def cached_batch(entries: list[dict[str, torch.Tensor]], starts: list[int], strides: list[int], frames: int,
                 texts: list[str], fps: list[float], device: str, captions: EncodingCache) -> Any:
    """The step's `Batch` sliced out of the clips' cached entries: `frames` frames of each from `start`,
    every `stride`-th (as `mora.training.data.load_clip` reads them)."""
    from mora.training.coupled import Batch

    picks = [torch.arange(frames) * stride + start for start, stride in zip(starts, strides, strict=True)]
    windows = [e["frames"][idx] for e, idx in zip(entries, picks, strict=True)]
    pixels = [w[[0, -1]].permute(0, 3, 1, 2).float().div(127.5).sub(1.0) for w in windows]
    dists: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    which = {"sdxl_first": ("sdxl", slice(0, 1)), "pix2pix_first": ("pix2pix", slice(0, 1)),
             "pix2pix_last": ("pix2pix", slice(frames - 1, frames)), "svd_clip": ("svd", slice(0, frames))}
    for kind, (family, part_of) in which.items():
        if f"{family}_mean" in entries[0]:
            dists[kind] = tuple(torch.cat([e[f"{family}_{part}"][idx[part_of]] for e, idx in zip(entries, picks,
                                                                                                strict=True)])
                                for part in ("mean", "std"))
    embeds = [e["svd_image_embeds"][idx[0]] for e, idx in zip(entries, picks, strict=True)] \
        if "svd_image_embeds" in entries[0] else None
    return Batch(first=torch.stack([p[0] for p in pixels]).to(device), last=torch.stack([p[1] for p in pixels]).to(device),
                 texts=list(texts), fps=[float(f) for f in fps], dists=dists,
                 first_image_embeds=None if embeds is None else torch.stack(embeds).to(device),
                 source_sizes=[tuple(int(v) for v in e["source_size"]) for e in entries],
                 crops=[tuple(int(v) for v in e["crop"]) for e in entries], captions=captions)

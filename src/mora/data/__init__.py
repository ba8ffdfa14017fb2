"""Data files that ship with the package, read through importlib.resources (no torch import).

`fullsize_architectures.json`: the public config.json values of every full-size component that a
built-in preset's models load, one entry per (architecture, config): `class` (the diffusers or
transformers class), `params` (its parameter count built on the meta device), `verified` (that count
was built with the installed diffusers/transformers), `config` (the constructor's keyword arguments),
`source` (where the values come from), `models` (the Hub ids whose pipeline loads it), `component`
(the pipeline attribute it fills) and, where Mora's family loader keeps it in another dtype than the
family's GPU dtype, `dtype`. Keys starting with `_` are notes, not entries.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

FULLSIZE_FILE = "fullsize_architectures.json"
ENTRY_FIELDS = ("class", "params", "verified", "config", "source", "models", "component")


@cache
def _read() -> str:
    return resources.files(__name__).joinpath(FULLSIZE_FILE).read_text(encoding="utf-8")


def fullsize_architectures() -> dict[str, Any]:
    """The full-size architectures: entry key -> entry (a fresh copy; `_`-prefixed keys are notes).

    Example:
        >>> entry = fullsize_architectures()["wan22_ti2v_5b_transformer"]
        >>> entry["component"], entry["models"]
        ('transformer', ['Wan-AI/Wan2.2-TI2V-5B-Diffusers'])
    """
    data: dict[str, Any] = json.loads(_read())
    return data


def fullsize_entries() -> dict[str, dict[str, Any]]:
    """The entries of `fullsize_architectures` without its notes.

    Example:
        >>> all(set(ENTRY_FIELDS) <= set(e) for e in fullsize_entries().values())
        True
    """
    return {key: value for key, value in fullsize_architectures().items() if not key.startswith("_")}

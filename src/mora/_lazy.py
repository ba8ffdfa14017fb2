"""Lazy public names for a package face (PEP 562), written once for `mora`, `mora.training`,
`mora.evaluation` and `mora.adapters`.

A package face lists its public names and the module defining each; the module is imported on the
first access of one of its names, so `import mora` (and `mora --help`) loads no torch.

Example:
    >>> __getattr__, __dir__ = lazy_names(__name__, {"Preset": "mora.config"})  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_names(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of a package whose public names load on first use.

    Args:
        package: the package's `__name__`; resolved values are cached in its globals.
        names: public name -> the module that defines it (under the same name).

    Returns:
        `(__getattr__, __dir__)`, to assign at the package's module level.

    Example:
        >>> getattr_, dir_ = lazy_names("mora", {"Preset": "mora.config"})
        >>> getattr_("Preset").__name__
        'Preset'
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        vars(sys.modules[package])[name] = value  # later accesses skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__

"""What the package tells tools: PEP 561's py.typed in what gets built, and one Python version for every checker."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _oldest_python() -> tuple[int, int]:
    """The oldest Python `requires-python` allows (">=3.11" -> (3, 11))."""
    spec = PYPROJECT["project"]["requires-python"]
    found = re.fullmatch(r"\s*>=\s*(\d+)\.(\d+)\s*", spec)
    assert found, f"requires-python {spec!r}: this test reads a plain '>=X.Y'"
    return int(found[1]), int(found[2])


def test_checkers_target_the_oldest_supported_python():
    major, minor = _oldest_python()
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py{major}{minor}"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == f"{major}.{minor}"


@pytest.mark.slow
def test_the_build_ships_py_typed(tmp_path):
    """setuptools' build_py writes what the wheel's purelib holds: mora/py.typed must be in it (PEP 561)."""
    src = tmp_path / "src"  # a copy, so the build's egg-info and build/ stay out of the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in ("src", "agents", "tools", "workflows"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    lib = tmp_path / "lib"
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
                    "--build-lib", str(lib)], cwd=src, check=True, capture_output=True, timeout=120)
    assert (lib / "mora/__init__.py").is_file() and (lib / "mora/agents").is_dir()  # the build ran, mapped
    assert (lib / "mora/py.typed").is_file()
    assert (lib / "mora/data/fullsize_architectures.json").is_file()  # mora.data's full-size configs

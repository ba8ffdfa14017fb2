"""The codebase's shape: the brief's top-level folders, one-way imports, short functions, one task table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> package name (pyproject's package-dir mapping)
PACKAGES = {"src/mora": "mora", "agents": "mora.agents", "tools": "mora.tools", "workflows": "mora.workflows"}
# Imports flow one way, whole packages only (no package split across two layers):
# cli/ui/service -> training -> workflows -> agents -> tools -> adapters/evaluation -> media/config/... -> errors.
LAYERS = [
    ("mora.cli", "mora.ui", "mora.service", "mora.mcp", "mora"),  # the entry points and the lazy public API
    ("mora.training",),  # an application above workflows: it calls mora.run for candidates
    ("mora.workflows",),
    ("mora.agents",),
    ("mora.tools",),
    # the adapter format (what `mora train` writes and every task can load) sits below the tools
    ("mora.adapters", "mora.evaluation"),
    ("mora.media", "mora.config", "mora.limits", "mora.validation", "mora.tooltable", "mora.memory"),
    ("mora.errors", "mora.paths", "mora._lazy", "mora.progress", "mora.data", "mora.processes"),
]
PACKAGE_FACES = ("mora", "mora.training", "mora.evaluation", "mora.adapters")  # lazy names (mora._lazy)
MAX_FUNCTION_LINES = 65  # "no function much over 60 lines", docstring included


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if package == "mora" and parts and parts[0] in ("agents", "tools", "workflows"):
                continue  # never happens after the move; guards against a stale copy
            found[name] = path
    return found


def _layer(module: str) -> int:
    best, depth = None, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > depth:
                best, depth = index, len(name)
    assert best is not None, f"{module} is in no layer of this test"
    return best


def _imports(path: Path, module: str) -> set[str]:
    """Every mora module `path` imports, at any depth (function-local imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mora")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mora"):
            for alias in node.names:  # `from mora import media` imports the module mora.media
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
    return {m for m in out if m != module}


MODULES = _modules()
GRAPH = {m: _imports(p, m) for m, p in MODULES.items()}


def test_the_brief_layout_is_at_the_top_level():
    for folder in ("agents", "tools", "workflows", "tests", "notebooks"):
        assert (ROOT / folder).is_dir(), folder
    for name in ("pyproject.toml", "README.md", "OAI_CONFIG_LIST.example"):
        assert (ROOT / name).is_file(), name
    assert not (ROOT / "src/mora/agents").exists() and not (ROOT / "src/mora/tools").exists()
    first = (ROOT / "agents/roles.py").read_text(encoding="utf-8")
    for agent in ("prompt_agent", "text_to_image_agent", "image_to_image_agent", "image_to_video_agent",
                  "video_connection_agent"):
        assert f"You are {agent}" in first  # the five system messages, where a reader looks first


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_import(module):
    mine = _layer(module)
    for target in GRAPH[module]:
        if target == "mora" and mine > 0:
            pytest.fail(f"{module} imports the top-level mora package (the public API layer); import the module")
        assert _layer(target) >= mine, f"{module} (layer {mine}) imports {target} (layer {_layer(target)}): upward"


def test_layers_hold_whole_packages():
    """A layer names packages and top-level modules, never a module inside a package (no split package)."""
    for names in LAYERS:
        for name in names:
            assert name == "mora" or name.count(".") == 1, f"{name}: a layer lists whole packages only"
            assert name in MODULES, f"{name}: no such module or package"


@pytest.mark.parametrize("face", PACKAGE_FACES)
def test_every_public_name_resolves(face):
    import importlib

    package = importlib.import_module(face)
    assert package.__all__, face
    for name in package.__all__:
        assert getattr(package, name) is not None, f"{face}.{name}"
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        package.not_a_name  # noqa: B018


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in GRAPH.get(node, ()):
            if nxt not in GRAPH:
                continue
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in GRAPH:
        if module not in state:
            visit(module, [module])


def test_no_long_functions_outside_tests():
    long = []
    for folder in (*PACKAGES, "benchmarks", "notebooks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions over the limit:\n" + "\n".join(long)


def test_one_task_table_drives_the_command_the_page_and_the_director():
    from mora.cli import build_parser
    from mora.workflows.chat import start_task_function
    from mora.workflows.tasks import INPUT_NAMES, TASK_TABLE, TASKS, director_task_list

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(TASK_TABLE) <= set(sub.choices)  # story included: a task of the table like the six
    import argparse

    for name, task in TASK_TABLE.items():
        actions = {a.dest: a for a in sub.choices[name]._actions}
        assert set(task.required + task.optional) <= set(actions), name
        assert ("best_of" in actions) == task.critic, name
        if task.film is not None:  # a film has no image to review and is not the director's to start
            assert "review" not in actions and f"{name} (" not in director_task_list(), name
            continue
        # every task takes --review; those without a gate refuse it with the reason (its help is hidden)
        assert (actions["review"].help != argparse.SUPPRESS) == task.review, name
        assert f"{name} ({task.signature()})" in director_task_list()
    import inspect

    from mora.workflows.chat import director_options

    params = inspect.signature(start_task_function()).parameters
    assert list(params) == ["task", *INPUT_NAMES, *(o.name for o in director_options())]
    every_input = {i.name for t in TASKS for i in TASK_TABLE[t].inputs}
    assert every_input == set(INPUT_NAMES)

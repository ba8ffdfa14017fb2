"""Each shared constant is written once: a second copy drifts (it already had: three PROFILES lists that
disagreed, the runtime accepting a profile no door offered, two MAX_SHOTS, two 2000-character limits).

The source tree is scanned (tests excluded) for second definitions, by name and by value.
"""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import pytest

from mora.config import ATTENTION_BACKENDS, CACHES, DEFAULT_PRESET, PROFILES
from mora.limits import MAX_PROMPT_CHARS
from mora.workflows.storyboard import MAX_SHOTS, TRANSITIONS
from mora.workflows.tasks import FILE_KINDS, MEDIA_KINDS

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("src/mora", "agents", "tools", "workflows", "benchmarks", "examples", "notebooks")
# constant -> the one file that defines it
HOMES = {
    "DEFAULT_PRESET": "src/mora/config/files.py",
    "PROFILES": "src/mora/config/settings.py",
    "CACHES": "src/mora/config/settings.py",
    "ATTENTION_BACKENDS": "src/mora/config/settings.py",
    "MAX_SHOTS": "workflows/storyboard.py",
    "MAX_PROMPT_CHARS": "src/mora/limits.py",
    "TRANSITIONS": "workflows/storyboard.py",
    "FILE_KINDS": "workflows/tasks.py",
    "MEDIA_KINDS": "workflows/tasks.py",
}
# lists of names whose copies (a tuple or Literal with the same names, under any name) are refused
VALUES = {"PROFILES": PROFILES, "CACHES": CACHES, "ATTENTION_BACKENDS": ATTENTION_BACKENDS, "TRANSITIONS": TRANSITIONS, "FILE_KINDS": FILE_KINDS, "MEDIA_KINDS": MEDIA_KINDS}


def _sources() -> dict[str, ast.AST]:
    files = [p for folder in SCANNED for p in (ROOT / folder).rglob("*.py")]
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text(encoding="utf-8")) for p in files}


SOURCES = _sources()


def _assigned(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return [node.target.id]
    return []


def _strings(node: ast.AST) -> tuple[str, ...] | None:
    """The strings of a tuple or list literal made only of strings (None otherwise)."""
    if isinstance(node, (ast.Tuple, ast.List)) and node.elts and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return tuple(e.value for e in node.elts)
    return None


@pytest.mark.parametrize("name", sorted(HOMES))
def test_each_constant_is_assigned_in_one_file(name):
    where = [f"{path}:{node.lineno}" for path, tree in SOURCES.items() for node in ast.walk(tree)
             if name in _assigned(node)]
    assert len(where) == 1 and where[0].startswith(HOMES[name] + ":"), \
        f"{name} is assigned at {where}; define it once in {HOMES[name]} and import it"


def test_no_copy_of_a_list_of_names_under_another_name():
    """`kind in ("image", "video")` or `Literal["connect", "cut"]` restate MEDIA_KINDS or TRANSITIONS."""
    copies = []
    for path, tree in SOURCES.items():
        for node in ast.walk(tree):
            names = _strings(node)
            if names is None or len(names) < 2:
                continue
            for constant, value in VALUES.items():
                at_home = path == HOMES[constant]
                if set(names) == set(value) and not at_home:
                    copies.append(f"{path}:{node.lineno} {names} restates {constant}")
    assert not copies, "\n".join(copies)


def test_the_text_limit_is_written_once():
    """A second `X = 2000` or `max_length=2000` is a text limit that can drift from MAX_PROMPT_CHARS."""
    found = []
    for path, tree in SOURCES.items():
        for node in ast.walk(tree):
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign, ast.keyword)) else None
            if isinstance(value, ast.Constant) and value.value == MAX_PROMPT_CHARS and path != HOMES["MAX_PROMPT_CHARS"]:
                found.append(f"{path}:{value.lineno}")
    assert not found, f"a literal {MAX_PROMPT_CHARS} text limit at {found}; import MAX_PROMPT_CHARS"


# limits' maxima of the numbers a job or a tool takes: read in `BOUNDS` only (the job model's bounds),
# never restated as a check's `high=` elsewhere (the tools, `check_options` and `llm_bounds` derive theirs)
RANGE_MAXIMA = ("MAX_SEED", "MAX_SIDE", "MAX_STEPS", "MAX_FPS", "MAX_SEGMENTS")


def test_each_numbers_range_is_read_from_bounds_only():
    found = []
    for path, tree in SOURCES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "mora.limits":
                found += [f"{path}:{node.lineno} imports {a.name}" for a in node.names if a.name in RANGE_MAXIMA]
        if path != "src/mora/limits.py":
            continue
        home = next(n for n in tree.body if "BOUNDS" in _assigned(n))
        inside = {id(n) for n in ast.walk(home)}
        found += [f"{path}:{n.lineno} reads {n.id} outside BOUNDS" for n in ast.walk(tree)
                  if isinstance(n, ast.Name) and n.id in RANGE_MAXIMA and isinstance(n.ctx, ast.Load)
                  and id(n) not in inside]
    assert not found, "\n".join(found) + "\n: read the range from mora.limits.BOUNDS (span, check_bounded)"


def _is_default_preset(node: ast.AST, parent: ast.AST | None) -> bool:
    if not (isinstance(node, ast.Constant) and node.value == DEFAULT_PRESET):
        return False
    if isinstance(parent, ast.BoolOp):  # `x or "mora"`
        return True
    if isinstance(parent, ast.arguments):  # `def f(preset="mora")`
        return True
    if isinstance(parent, ast.Call) and node in parent.args:  # `Field("mora")`, `Option("preset", str, "mora")`
        fn = parent.func.id if isinstance(parent.func, ast.Name) else getattr(parent.func, "attr", "")
        return fn in ("Field", "Option")
    return False


def test_the_default_preset_is_named_once():
    """The default preset's name as a default (a parameter's, a field's, an `or`'s) outside its definition."""
    found = []
    for path, tree in SOURCES.items():
        if path == HOMES["DEFAULT_PRESET"]:
            continue
        for parent in ast.walk(tree):
            for child in ast.iter_child_nodes(parent):
                if _is_default_preset(child, parent):
                    found.append(f"{path}:{child.lineno}")
    assert not found, f"{DEFAULT_PRESET!r} as a default at {found}; use mora.config.DEFAULT_PRESET"


def test_every_profile_the_runtime_runs_is_offered_and_documented():
    """No hidden profile: the runtime, the job model (every door's --profile) and the benchmark take the same."""
    from mora.tools import runtime
    from mora.workflows.jobspec import OPTIONS, parse_job

    option = OPTIONS["profile"]
    assert typing.get_args(option.type) == PROFILES
    for profile in PROFILES:
        assert runtime.check_profile(profile) == profile
        assert re.search(rf"\b{profile}( \(default\))?:", option.help), f"--profile's help lacks {profile}"
        assert parse_job({"task": "text-to-video", "prompt": "a fox", "profile": profile}).profile == profile
    assert "paper" in PROFILES  # the benchmarks' baseline, now a profile any door can run
    with pytest.raises(Exception, match="paper"):
        runtime.check_profile("nope")  # the error lists every profile, the benchmark's baseline included
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for profile in PROFILES:
        assert f"- `{profile}`" in readme, f"README's profile list lacks {profile}"


def test_transitions_and_shots_are_the_storyboards():
    from mora.agents.roles import STORYBOARD_AGENT
    from mora.workflows.jobspec import OPTIONS

    assert set(typing.get_args(OPTIONS["transition"].kind)) == set(TRANSITIONS)
    assert OPTIONS["shots"].bounds["le"] == MAX_SHOTS
    for transition in TRANSITIONS:  # the storyboard agent is told every transition the schema takes
        assert f'"{transition}"' in STORYBOARD_AGENT


def test_a_batch_lines_storyboard_path_is_absolute_like_its_media(tmp_path, monkeypatch):
    """jobs_file had its own ("image", "video"): a story line's relative storyboard stayed relative,
    so a Ray worker with another working directory could not find it."""
    from mora.workflows.jobs_file import load_jobs

    (tmp_path / "board.json").write_text('{"shots": [{"prompt": "a fox", "seconds": 1}]}', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    job, = load_jobs([{"task": "story", "storyboard": "board.json", "preset": "tiny"}], out_dir="out")
    assert job.inputs["storyboard"] == str(tmp_path / "board.json")
    board = {"shots": [{"prompt": "a fox", "seconds": 1}]}  # a storyboard given as the object stays one
    job, = load_jobs([{"task": "story", "storyboard": board, "preset": "tiny"}], out_dir="out")
    assert job.inputs["storyboard"] == board


def _names_a_film(node: ast.AST) -> bool:
    """`"story"`, `STORY` or `jobspec.STORY`, or a tuple, list or set holding one."""
    from mora.workflows.tasks import FILMS

    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_a_film(e) for e in node.elts)
    if isinstance(node, ast.Constant):
        return node.value in FILMS
    return (node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)) == "STORY"


def test_no_code_asks_whether_a_task_is_story():
    """`story` is a task of the table: its route (a Film) says how it runs, so no door compares task names
    with it (worker, guards, runner, prepare, jobspec and the MCP tools each had `task == "story"`)."""
    found = [f"{path}:{node.lineno}" for path, tree in SOURCES.items() if path != "workflows/tasks.py"
             for node in ast.walk(tree) if isinstance(node, ast.Compare)
             and any(_names_a_film(side) for side in (node.left, *node.comparators))]
    assert not found, f"a comparison with the story task at {found}; ask the task table (Task.film)"


def test_a_films_tools_are_not_listed_again():
    """prepare listed story's tools (STORY_TOOLS) and again its roles' tools: the table's Film derives them."""
    from mora.workflows.tasks import TASK_TABLE

    films = [t.film for t in TASK_TABLE.values() if t.film is not None]
    lists = [set(f.tools(keyframe)) for f in films for keyframe in (True, False)]
    found = [f"{path}:{node.lineno}" for path, tree in SOURCES.items() for node in ast.walk(tree)
             if (names := _strings(node)) is not None and set(names) in lists]
    assert films and not found, f"a film's tools listed at {found}; use Film.tools()"


def test_one_launcher_starts_every_multi_process_run():
    """`mora train --processes` and `mora <task> --gpus` relaunch the command through one launcher
    (`mora.processes.launch`): a second copy of the accelerate command would drift (ports, environment)."""
    found = sorted({path for path, tree in SOURCES.items() for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and re.search(r"accelerate\.commands\.launch|torch\.distributed\.run|torchrun", node.value)})
    assert found == ["src/mora/processes.py"], found

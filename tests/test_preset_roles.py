"""A preset that gives a role a family that cannot play it (issue 29, item 11) is refused when it loads:
exit 2, one line naming the file, the role, the family and the families that can play the role. The
families per role are one declared table (`mora.config.ROLE_FAMILIES`) that agrees with the family
modules in `mora.tools` and is what `mora.Toolset` dispatches on.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import MappingProxyType

import pytest

from mora.cli import main
from mora.config import FAMILIES, PRESETS, ROLE_FAMILIES, Preset, get_preset, load_presets, preset_rows
from mora.errors import InputError

# role -> the function a family's module in mora.tools defines to play it
ROLE_FUNCTIONS = {"text_to_image": "text_to_image", "image_to_image": "edit_image", "image_to_video": "generate",
                  "extend": "continue_video", "connect": "transition", "edit_video": "edit_video"}
# one family per role that cannot play it
MISCAST = {"text_to_image": "svd", "image_to_image": "sdxl", "image_to_video": "pix2pix", "extend": "wan",
           "connect": "svd", "edit_video": "ltx"}


def _miscast_file(folder: Path, role: str, family: str) -> Path:
    path = folder / f"miscast-{role}.toml"
    path.write_text(f'extends = "tiny"\n[roles.{role}]\nfamily = "{family}"\nmodel = "tiny/{family}"\n')
    return path


def _assert_the_line(line: str, path: Path, role: str, family: str) -> None:
    assert line.count("\n") <= 1 and "Traceback" not in line, line
    assert str(path) in line and f"roles.{role}.family" in line and repr(family) in line, line
    assert f"cannot play {role}" in line and f"use one of {', '.join(ROLE_FAMILIES[role])}" in line, line


def test_text_to_image_family_svd_is_refused_by_the_command_line_at_load(tmp_path, capsys):
    path = _miscast_file(tmp_path, "text_to_image", "svd")
    out = tmp_path / "x.mp4"
    code = main(["text-to-video", "a fox", "--preset-file", str(path), "--out", str(out), "--device", "cpu",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err  # before: the run started and failed at text_to_image with exit 1 (a KeyError)
    assert err.startswith("mora: error: --preset-file: ") and err.count("\n") == 1, err
    _assert_the_line(err, path, "text_to_image", "svd")
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_mora_presets_refuses_the_file_too(tmp_path, capsys):
    path = _miscast_file(tmp_path, "text_to_image", "svd")
    assert main(["presets", "--preset-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mora: error: --preset-file: ") and err.count("\n") == 1, err
    _assert_the_line(err, path, "text_to_image", "svd")


@pytest.mark.parametrize("role", sorted(MISCAST))
def test_the_python_api_refuses_a_family_that_cannot_play_its_role(tmp_path, role):
    path = _miscast_file(tmp_path, role, MISCAST[role])
    for load in (lambda: get_preset(None, path), lambda: load_presets(path), lambda: preset_rows(path)):
        with pytest.raises(InputError) as info:
            load()
        _assert_the_line(str(info.value), path, role, MISCAST[role])


def test_a_preset_built_in_code_is_checked_too():
    roles = {**PRESETS["tiny"].roles, "text_to_image": PRESETS["tiny"].roles["image_to_video"]}
    with pytest.raises(InputError, match=r"roles\.text_to_image\.family: 'svd' cannot play text_to_image; "
                                         r"use one of sdxl, qwen-image"):
        Preset("in-code", "svd paints the first frame", MappingProxyType(roles))


def test_every_builtin_preset_casts_each_role_to_a_family_that_plays_it():
    assert PRESETS  # they loaded (the check runs when they are read)
    for preset in PRESETS.values():
        for role, spec in preset.roles.items():
            assert spec.family in ROLE_FAMILIES[role], (preset.name, role, spec.family)


def test_the_declared_table_is_what_the_family_modules_can_do():
    """A family plays a role exactly when its module in mora.tools has the role's function."""
    modules = {family: importlib.import_module(f"mora.tools.{family.replace('-', '_')}") for family in FAMILIES}
    for role, function in ROLE_FUNCTIONS.items():
        can = tuple(f for f in FAMILIES if callable(getattr(modules[f], function, None)))
        assert set(ROLE_FAMILIES[role]) == set(can), role


def test_the_toolset_dispatches_on_the_declared_table():
    from mora.tools import toolset

    tables = {"text_to_image": toolset._IMAGE_FAMILIES, "image_to_image": toolset._EDIT_FAMILIES,
              "image_to_video": toolset._VIDEO_FAMILIES, "extend": toolset._VIDEO_FAMILIES,
              "connect": toolset._TRANSITION_FAMILIES, "edit_video": toolset._VIDEO_EDIT_FAMILIES}
    assert set(tables) == set(ROLE_FAMILIES)
    for role, table in tables.items():
        assert tuple(table) == ROLE_FAMILIES[role], role

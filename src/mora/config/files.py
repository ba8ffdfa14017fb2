"""Preset files: the built-in TOML presets (package data) and users' (`$MORA_HOME/presets`, `--preset-file`),
read as pydantic models, resolved (`extends`) into `Preset`s; `get_preset` looks one up.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from mora.config.settings import (
    CAPABILITIES,
    FAMILIES,
    FAMILY_SETTINGS,
    OPTIONAL_ROLES,
    ROLE_FAMILIES,
    ROLES,
    LoraAdapter,
    ModelSpec,
    Preset,
    dmd_sigmas_problem,
    mora_home,
)
from mora.errors import InputError
from mora.validation import input_error

# --- presets in TOML: the built-in ones ship as package data (mora/presets/*.toml), users add their own ----

BUILTIN_PRESET_DIR = Path(__file__).parents[1] / "presets"
DEFAULT_PRESET = "mora"
_PRESET_KEYS = ("name", "description", "extends", "capabilities", "roles")
_ROLE_KEYS = ("family", "model", "refiner", "settings", "adapters")
# diffusers' LoRA loaders: every family but SVD (StableVideoDiffusionPipeline has no LoRA loader)
LORA_FAMILIES = tuple(f for f in FAMILIES if f != "svd")


def user_preset_dir() -> Path:
    """Users' preset files: `$MORA_HOME/presets/*.toml`."""
    return mora_home() / "presets"


@dataclass(frozen=True)
class _Source:
    path: Path
    argument: str  # what the error names: the job field preset_file, or the folder the file was found in

    def error(self, text: str, *, named: bool = False) -> InputError:
        """`text` about this file (after its path, unless the text `named` it): an error of the field
        `preset_file` (each front door spells it), or of a file in a presets folder (named in the text)."""
        text = text if named else f"{self.path}: {text}"
        if self.argument == PRESET_FILE:
            return InputError(text, param=PRESET_FILE)
        return InputError(f"{self.argument}: {text}")

    def fail(self, field: str, problem: str, fix: str) -> InputError:
        return self.error(f"{field}: {problem}; {fix}")

    def invalid(self, error: ValidationError, prefix: str, fixes: dict[str, str]) -> InputError:
        """A model's errors as one line naming this file and the field (`mora.validation`'s formatter)."""
        return self.error(str(input_error(error, name=lambda loc: _dotted(prefix, loc), fixes=fixes)))


def _dotted(prefix: str, loc: tuple) -> str:
    """`roles.text_to_image.adapters[0].path`: a TOML key path."""
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --- the preset file as pydantic models (types, unknown keys); what needs the base preset is checked below --

_STRICT = ConfigDict(extra="forbid", strict=True)  # TOML has types: "5" is not 5, 1.0 is not an int


class _AdapterTable(BaseModel):
    model_config = _STRICT
    path: str | None = None  # a local file or folder
    repo: str | None = None  # or a Hub repo (or tiny/<name>) ...
    file: str | None = None  # ... and the weight file in it
    weight: float = 1.0


class _RoleTable(BaseModel):
    model_config = _STRICT
    family: str | None = None  # None: the extended preset's family
    model: str | None = None
    refiner: str | bool | None = None  # false: no refiner
    settings: dict[str, Any] = {}
    adapters: list[_AdapterTable] = []

    @field_validator("family")
    @classmethod
    def _family(cls, value: str) -> str:
        if value not in FAMILIES:
            raise ValueError(f"is not a pipeline family; use one of {', '.join(FAMILIES)}")
        return value


_RolesTable = create_model("_RolesTable", __config__=_STRICT,
                           **{role: (_RoleTable | None, None) for role in ROLES + OPTIONAL_ROLES})


class _PresetFile(BaseModel):
    model_config = _STRICT
    name: str | None = None
    description: str | None = None
    extends: str | None = None
    capabilities: list[str] | None = None
    roles: _RolesTable | None = None

    @field_validator("name")
    @classmethod
    def _one_word(cls, value: str) -> str:
        if not value.strip() or any(c.isspace() for c in value):
            raise ValueError("is not a preset name; use one word like my-preset")
        return value

    @field_validator("description")
    @classmethod
    def _text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError('is empty; write description = "what it is for"')
        return value

    @field_validator("capabilities")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for capability in value:
            if capability not in CAPABILITIES:
                raise ValueError(f"{capability!r} is not a capability; use {', '.join(CAPABILITIES)}")
        return value


_FILE_FIXES = {
    "*": f"use only {', '.join(_PRESET_KEYS)}", "roles.*": f"use one of {', '.join(ROLES + OPTIONAL_ROLES)}",
    **{f"{role}.*": f"use only {', '.join(_ROLE_KEYS)}" for role in ROLES + OPTIONAL_ROLES},
    "adapters.*": "give path (or repo and file) and optionally weight",
    "adapters": 'write adapters = [{path = "lora.safetensors"}] or [{repo = "org/name", file = "x.safetensors"}]',
    "weight": "write e.g. 0.8", "path": "give the path of a .safetensors file", "file": "give the file's name in repo",
    "repo": "give a Hub id (org/name)", "name": "use one word like my-preset",
    "model": "give a Hub id (org/name), a local directory or tiny/<name>", "refiner": "give a model, or false",
    "settings": "write [roles.<role>.settings] with key = value lines", "description": 'write description = "..."',
    "capabilities": f"write e.g. {list(CAPABILITIES)}", "extends": 'write extends = "mora"',
    **{role: "write [roles.<role>] with family, model and settings" for role in ROLES + OPTIONAL_ROLES},
}
_POSITIVE = ("steps", "num_frames", "segments")  # settings that must be at least 1


@functools.cache
def _settings_model(family: str) -> type[BaseModel]:
    """The family's settings dataclass as a strict pydantic model (unknown keys refused, counts >= 1)."""
    cls = FAMILY_SETTINGS[family]
    hints = typing.get_type_hints(cls)
    fields = {f.name: (hints[f.name], Field(f.default, ge=1) if f.name in _POSITIVE else f.default)
              for f in dataclasses.fields(cls)}
    return create_model(f"{family}_settings", __config__=_STRICT, **fields)


def _unsettable(hint: Any) -> bool:
    """An optional setting that is not a bool: TOML has no null, so `false` unsets it."""
    args = typing.get_args(hint)
    return type(None) in args and bool not in args


PRESET_FILE = "preset_file"  # the job model's field that names a preset file


def read_preset_file(path: str | Path, argument: str = PRESET_FILE) -> tuple[dict, _Source]:
    """A preset file's table and where it came from (InputError when unreadable or not TOML)."""
    import tomllib

    path = Path(path).expanduser()
    source = _Source(path, argument)
    if not path.is_file():
        raise source.error(f"{str(path)!r} is not a file; pass the path of a .toml preset file", named=True)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise source.error(f"not valid TOML ({error}); fix the file's syntax") from None
    try:
        checked = _PresetFile.model_validate({"name": path.stem, **table})
    except ValidationError as error:
        raise source.invalid(error, "", _FILE_FIXES) from None
    table = checked.model_dump(exclude_unset=True)  # nested too: a role table keeps only the keys it gives
    return {**table, "name": checked.name}, source


def _file_settings(source: _Source, where: str, family: str, values: dict, given: dict) -> Any:
    """The family's settings: `values` (the extended preset's, or {}) with the file's `given` over them."""
    cls = FAMILY_SETTINGS[family]
    hints = typing.get_type_hints(cls)
    given = {k: None if v is False and _unsettable(hints.get(k)) else v for k, v in given.items()}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}  # TOML arrays: frozen settings
    try:
        checked = _settings_model(family).model_validate({**values, **given})
    except ValidationError as error:
        fields = ", ".join(sorted(hints))
        raise source.invalid(error, f"{where}.settings", {"*": f"use one of the {family} settings: {fields}"}) from None
    return cls(**checked.model_dump())


def _check_sizes(source: _Source, where: str, family: str, settings: Any) -> None:
    m = getattr(settings, "size_multiple", None)
    for side in ("width", "height"):
        value = getattr(settings, side, None)
        if m and value is not None and value % m:
            raise source.fail(f"{where}.settings.{side}", f"{value} is not a multiple of {m}, as {family} needs",
                              f"use {max(m, value // m * m)} or {value // m * m + m}")
    fm, n = getattr(settings, "frame_multiple", None), getattr(settings, "num_frames", None)
    if fm and n is not None and n % fm != 1:
        raise source.fail(f"{where}.settings.num_frames", f"{n} is not {fm}k+1, as {family} needs",
                          f"use {max(1, (n - 1) // fm * fm + 1)} or {(n - 1) // fm * fm + fm + 1}")


def _check_sampling(source: _Source, where: str, settings: Any) -> None:
    """Fixed DMD noise levels: valid ones, and one step each (`steps` is their count)."""
    sigmas = getattr(settings, "dmd_sigmas", None)
    if sigmas is None:
        return
    problem = dmd_sigmas_problem(sigmas)
    if problem:
        raise source.fail(f"{where}.settings.dmd_sigmas", f"{list(sigmas)} {problem}",
                          "give the publisher's noise levels, e.g. [1.0, 0.757, 0.522]")
    if settings.steps != len(sigmas):
        raise source.fail(f"{where}.settings.steps", f"{settings.steps} is not one step per dmd_sigmas level",
                          f"set steps = {len(sigmas)}")


def _local(source: _Source, field: str, value: Any) -> str:
    """A model reference: a Hub id or `tiny/...` as is; a path (/, ., ~) must exist, relative to the file."""
    if not isinstance(value, str) or not value.strip():
        raise source.fail(field, f"{value!r} is not a model", "give a Hub id (org/name) or a local directory")
    if not value.startswith(("/", ".", "~")):
        return value
    path = Path(value).expanduser()
    path = path if path.is_absolute() else (source.path.parent / path).resolve()
    if not path.exists():
        raise source.fail(field, f"local path {str(path)!r} does not exist",
                          "download the model there, fix the path, or give a Hub id")
    return str(path)


def _adapters(source: _Source, where: str, family: str, value: list[dict]) -> tuple[LoraAdapter, ...]:
    """The role's LoRA adapters (types checked by `_AdapterTable`): a family that can load them, files that exist."""
    if value and family not in LORA_FAMILIES:
        raise source.fail(f"{where}.adapters", f"{family} pipelines cannot load LoRA adapters",
                          f"remove them, or use a family of {', '.join(LORA_FAMILIES)}")
    out = []
    for i, item in enumerate(value):
        weight, field = float(item.get("weight", 1.0)), f"{where}.adapters[{i}]"
        if ("path" in item) == ("repo" in item):
            raise source.fail(field, "needs either path or repo", 'write path = "lora.safetensors", or repo = '
                              '"org/name" with file = "x.safetensors"')
        if "repo" in item:
            if not item.get("file"):
                raise source.fail(f"{field}.file", "missing", "name the weight file in the repo, e.g. "
                                  'file = "x.safetensors"')
            repo = _local(source, f"{field}.repo", item["repo"])  # a Hub id, tiny/<name> or a local folder
            out.append(LoraAdapter(repo=repo, file=item["file"], weight=weight))
            continue
        if "file" in item:
            raise source.fail(f"{field}.file", "only goes with repo", "remove it, or give repo instead of path")
        path = _local(source, f"{field}.path", item["path"] if str(item["path"]).startswith(("/", ".", "~"))
                      else f"./{item['path']}")
        out.append(LoraAdapter(path, weight))
    return tuple(out)


def _role(source: _Source, role: str, table: Any, base: ModelSpec | None) -> ModelSpec:
    """One role of a preset file, over the extended preset's spec for that role (if any)."""
    where = f"roles.{role}"  # the table's keys and types were checked by `_RoleTable`
    family = table.get("family", base.family if base else None)
    if family is None:
        raise source.fail(f"{where}.family", "missing", f"use one of {', '.join(ROLE_FAMILIES[role])}")
    if family not in ROLE_FAMILIES[role]:  # refused here, not as a KeyError when the role's tool first runs
        raise source.fail(f"{where}.family", f"{family!r} cannot play {role}",
                          f"use one of {', '.join(ROLE_FAMILIES[role])}")
    same = base is not None and base.family == family  # a new family starts from its own defaults
    if "model" not in table and not same:
        raise source.fail(f"{where}.model", "missing", "give a Hub id, a local directory or tiny/<name>")
    model = _local(source, f"{where}.model", table["model"]) if "model" in table else base.model
    refiner = table.get("refiner", base.refiner if same else None)
    if refiner is not None and refiner is not False and family != "sdxl":
        raise source.fail(f"{where}.refiner", f"{family} has no refiner", "remove it (only sdxl has one)")
    refiner = _local(source, f"{where}.refiner", refiner) if refiner else None
    values = dataclasses.asdict(base.settings) if same else {}
    spec_settings = _file_settings(source, where, family, values, table.get("settings", {}))
    _check_sizes(source, where, family, spec_settings)
    _check_sampling(source, where, spec_settings)
    adapters = _adapters(source, where, family, table["adapters"]) if "adapters" in table else (
        base.adapters if same else ())
    return ModelSpec(family, model, spec_settings, refiner=refiner, adapters=adapters)


def _capabilities(source: _Source, table: dict, roles: dict, base: Preset | None) -> frozenset:
    value = table.get("capabilities", sorted(base.capabilities) if base else [])  # names checked by _PresetFile
    for capability in value:
        role, families = CAPABILITIES[capability]
        if role not in roles or roles[role].family not in families:
            have = roles[role].family if role in roles else "no model"
            raise source.fail("capabilities", f"{capability!r} needs role {role} in {' or '.join(families)}, "
                              f"it has {have}", f"set roles.{role}.family or drop {capability!r}")
    return frozenset(value)


def build_preset(table: dict, source: _Source, base: Preset | None = None) -> Preset:
    """A `Preset` from a preset file's table, over `base` (the preset it extends)."""
    roles = dict(base.roles) if base else {}
    for role, role_table in table.get("roles", {}).items():  # role names and types checked by _PresetFile
        roles[role] = _role(source, role, role_table, roles.get(role))
    missing = [r for r in ROLES if r not in roles]
    if missing:
        raise source.fail(f"roles.{missing[0]}", "missing", 'define it, or extend a preset (extends = "mora")')
    description = table.get("description", f"Preset {base.name} with changes." if base else None)
    if description is None:
        raise source.fail("description", "missing", 'write description = "what it is for"')
    return Preset(name=table["name"], description=" ".join(description.split()), roles=MappingProxyType(roles),
                  capabilities=_capabilities(source, table, roles, base), source=str(source.path))


def _resolve(tables: dict, known: dict[str, Preset]) -> dict[str, Preset]:
    """Presets from their tables, each after the one it extends (in `known` or among `tables`)."""
    done = dict(known)

    def resolve(name: str, chain: tuple[str, ...]) -> Preset:
        if name in done:
            return done[name]
        table, source = tables[name]
        base = None
        if "extends" in table:
            parent = table["extends"]
            if parent in chain:
                raise source.fail("extends", f"{parent!r} extends {name!r} in turn", "break the cycle")
            if parent not in done and parent not in tables:
                raise source.fail("extends", f"{parent!r} is not a preset",
                                  f"use one of {', '.join(sorted({*done, *tables} - {name}))}")
            base = resolve(parent, (*chain, name))
        done[name] = build_preset(table, source, base)
        return done[name]

    return {name: resolve(name, (name,)) for name in tables}


def _read_folder(folder: Path, argument: str, taken: dict) -> dict:
    tables: dict = {}
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else ():
        table, source = read_preset_file(path, argument)
        if table["name"] in taken or table["name"] in tables:
            raise source.fail("name", f"{table['name']!r} is already a preset", "choose another name")
        tables[table["name"]] = (table, source)
    return tables


def _builtin_presets() -> MappingProxyType:
    tables = _read_folder(BUILTIN_PRESET_DIR, "built-in preset", {})
    order = ("mora", "ltx", "mora-wan", "modern", "modern-fast", "tiny", "tiny-ltx", "tiny-wan", "tiny-modern",
             "tiny-modern-fast")
    presets = _resolve(tables, {})
    return MappingProxyType({name: presets[name] for name in sorted(presets, key=lambda n: (
        order.index(n) if n in order else len(order), n))})


PRESETS: MappingProxyType = _builtin_presets()


def load_presets(preset_file: str | Path | None = None) -> dict[str, Preset]:
    """Every preset: the built-in ones, the files in `$MORA_HOME/presets/`, then `preset_file`'s.

    Raises:
        InputError: a file is unreadable or invalid (the message names the file, the field and the fix).
    """
    folder = user_preset_dir()
    user = _read_folder(folder, f"$MORA_HOME/presets ({folder})", dict(PRESETS))
    if preset_file is not None:
        table, source = read_preset_file(preset_file)
        if table["name"] in PRESETS:
            raise source.fail("name", f"{table['name']!r} is a built-in preset", "choose another name")
        user[table["name"]] = (table, source)  # the file named on the command line wins over the folder's
    return {**PRESETS, **_resolve(user, dict(PRESETS))}


def preset_rows(preset_file: str | Path | None = None) -> list[dict]:
    """Every preset as a plain row (`mora presets --json`, MCP's list_presets): name, description, source,
    capabilities and, per role, the family, model, refiner and LoRA adapters (each one's source: path or repo/file).

    Example:
        >>> next(r for r in preset_rows() if r["name"] == "tiny")["source"]
        'built-in'
    """
    return [dict(name=p.name, description=p.description, source="built-in" if p.name in PRESETS else p.source,
                 capabilities=sorted(p.capabilities),
                 roles={role: dict(family=s.family, model=s.model, **({"refiner": s.refiner} if s.refiner else {}),
                                   **({"adapters": [a.source for a in s.adapters]} if s.adapters else {}))
                        for role, s in p.roles.items()})
            for p in load_presets(preset_file).values()]


def get_preset(preset: str | Preset | None, preset_file: str | Path | None = None) -> Preset:
    """Look up a preset by name (a `Preset` passes through).

    Built-in names resolve without reading any user file. `preset_file` alone (preset None or the
    default) selects the file's own preset.

    Raises:
        InputError: the name is not a known preset, or a preset file is invalid.

    Example:
        >>> get_preset("tiny").name
        'tiny'
    """
    if isinstance(preset, Preset):
        return preset
    if preset_file is not None and preset in (None, DEFAULT_PRESET):
        preset = read_preset_file(preset_file)[0]["name"]
    if isinstance(preset, str) and preset in PRESETS and preset_file is None:
        return PRESETS[preset]
    presets = load_presets(preset_file) if isinstance(preset, str) else PRESETS
    try:
        return presets[preset]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown preset {preset!r}; choose one of {', '.join(presets)} (or add a file to "
            f"{user_preset_dir()} or pass --preset-file)", param="preset"
        ) from None


def with_settings(spec: ModelSpec, **changes: Any) -> ModelSpec:
    """A copy of `spec` with some call settings replaced (None values are ignored).

    Example:
        >>> with_settings(get_preset("mora").spec("image_to_video"), fps=12).settings.fps
        12
    """
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, **changes))

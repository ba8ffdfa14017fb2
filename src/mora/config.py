"""Presets: which model each agent role uses, and how it is called. Data, never a code path.

A preset maps each role (`text_to_image`, `image_to_image`, `image_to_video`, `extend`,
`connect`) to a `ModelSpec`: a pipeline family (one file each in `mora/tools/`), a model id or
local directory, and the call settings. Two presets that name the same family run the same code.

Model ids that start with `tiny/` are built in code at toy size with random weights (see
`mora.tools.tiny`), saved under `$MORA_HOME` and loaded back with `from_pretrained`.

This module imports no torch, so the CLI can validate options before any model loads.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mora.errors import InputError

ROLES = ("text_to_image", "image_to_image", "image_to_video", "extend", "connect")
FAMILIES = ("sdxl", "pix2pix", "svd", "ltx", "wan", "qwen-image", "qwen-image-edit", "wan22", "wan-vace")
OPTIONAL_ROLES = ("edit_video",)  # video-to-video editing: only presets with the `video-edit` capability
# capability -> (the role whose family provides it, the families that can). A preset declares the ones it
# wants; the task table picks routes from them (mora.workflows.tasks).
CAPABILITIES = {
    "text-motion": ("image_to_video", ("ltx", "wan22")),  # the video model follows the prompt
    "video-edit": ("edit_video", ("wan-vace",)),  # edits a whole clip keeping the source's motion
}
PROFILES = ("fast", "balanced", "low-vram")


def mora_home() -> Path:
    """The cache root: `$MORA_HOME`, default `~/.cache/mora`."""
    return Path(os.environ.get("MORA_HOME") or Path.home() / ".cache" / "mora").expanduser()


# --- typed call settings, one dataclass per pipeline family (the presets below fill them) ----------


@dataclass(frozen=True)
class SDXLSettings:
    """Stable Diffusion XL text-to-image (base, then the refiner on its latents)."""

    width: int = 1024  # first-frame width; the paper uses 1024x576, SVD's native size
    height: int = 576
    steps: int = 40  # denoising steps, shared by base and refiner
    guidance_scale: float = 5.0  # classifier-free guidance
    high_noise_frac: float = 0.8  # the base denoises this fraction, the refiner the rest (paper: 0.8)
    size_multiple: int = 8  # the VAE downsamples by 8
    fp16_variant: str | None = "fp16"  # weights variant fetched when running in fp16 (half the download)


@dataclass(frozen=True)
class Pix2PixSettings:
    """InstructPix2Pix image editing."""

    steps: int = 20
    guidance_scale: float = 7.5  # text guidance
    image_guidance_scale: float = 1.5  # how closely the edit keeps the input image
    max_area: int = 512 * 512  # working area in pixels: the image is resized to it, aspect kept
    size_multiple: int = 8
    fp16_variant: str | None = None  # the repo publishes no fp16 variant


@dataclass(frozen=True)
class SVDSettings:
    """Stable Video Diffusion image-to-video (no text), chained segments."""

    width: int = 1024
    height: int = 576
    num_frames: int = 25  # frames per segment (SVD-XT is trained on 25)
    segments: int = 3  # segments chained from each previous last frame (the paper: 3)
    steps: int = 25
    fps: int = 7  # the fps micro-conditioning and the output frame rate
    motion_bucket_id: int = 180  # amount of motion (the paper's 180; SVD's own default is 127)
    noise_aug_strength: float = 0.1  # noise added to the conditioning frame (the paper: 0.1)
    min_guidance_scale: float = 1.0  # guidance ramps linearly over the frames from min to max
    max_guidance_scale: float = 3.0
    decode_chunk_size: int = 8  # frames per VAE decode call; part of the output (temporal decoder)
    size_multiple: int = 8
    frame_multiple: int | None = None  # any frame count works
    max_frames: int = 64
    fp16_variant: str | None = "fp16"


@dataclass(frozen=True)
class LTXSettings:
    """LTX-Video 0.9.5 (LTXConditionPipeline): text + image/video conditions, first-last-frame."""

    width: int = 768
    height: int = 512
    num_frames: int = 49  # frames are 8k+1 (temporal compression 8)
    segments: int = 1
    steps: int = 40
    fps: int = 24
    guidance_scale: float = 3.0
    decode_timestep: float = 0.05  # the 0.9.5 VAE decodes at a small timestep
    image_cond_noise_scale: float = 0.025  # noise on the conditioning frames
    size_multiple: int = 32
    frame_multiple: int = 8
    tail_frames: int = 9  # extend: frames of the input's tail the continuation is conditioned on (8k+1)
    max_frames: int = 257
    fp16_variant: str | None = None


@dataclass(frozen=True)
class WanSettings:
    """Wan 2.1 first-last-frame-to-video (720p)."""

    width: int = 1280
    height: int = 720
    num_frames: int = 81  # frames are 4k+1
    segments: int = 1
    steps: int = 50
    fps: int = 16
    guidance_scale: float = 5.5
    size_multiple: int = 16  # VAE 8 x patch 2
    frame_multiple: int = 4
    max_frames: int = 129
    fp16_variant: str | None = None


@dataclass(frozen=True)
class QwenImageSettings:
    """Qwen-Image text-to-image (QwenImagePipeline, Qwen2.5-VL-7B text encoder, 20B MMDiT)."""

    width: int = 1664  # the model's 16:9 size (its card lists 1328x1328, 1664x928, 928x1664, 1472x1104, ...)
    height: int = 928
    steps: int = 50  # the card's example
    true_cfg_scale: float = 4.0  # real classifier-free guidance (the model is not guidance-distilled)
    empty_negative: str = " "  # the card: with no negative prompt, pass a single space so CFG stays on
    max_sequence_length: int = 1024  # the pipeline's maximum; embeddings are only as long as the prompt
    size_multiple: int = 16  # VAE 8 x 2x2 latent packing
    fp16_variant: str | None = None  # bf16 weights only


@dataclass(frozen=True)
class QwenImageEditSettings:
    """Qwen-Image-Edit (2509/2511: QwenImageEditPlusPipeline) instruction editing.

    The pipeline reads the input image twice: resized to about 384x384 for the Qwen2.5-VL vision tower
    and to about 1024x1024 for the VAE (fixed inside diffusers).
    """

    steps: int = 40  # the 2509/2511 cards' example (the first Qwen-Image-Edit used 50)
    true_cfg_scale: float = 4.0
    negative_prompt: str = " "  # a space: CFG on, nothing in particular steered away from
    max_area: int = 1024 * 1024  # output area in pixels, the input's aspect ratio kept
    size_multiple: int = 16
    max_sequence_length: int = 1024  # includes the image's vision tokens and the template's tail
    pipeline_class: str = "QwenImageEditPlusPipeline"  # "QwenImageEditPipeline" for Qwen/Qwen-Image-Edit
    fp16_variant: str | None = None


@dataclass(frozen=True)
class Wan22Settings:
    """Wan 2.2 TI2V-5B image-to-video with text (WanImageToVideoPipeline, `expand_timesteps`)."""

    width: int = 1280  # 720p class: the card's 1280x704 (or 704x1280)
    height: int = 704
    num_frames: int = 121  # 5 s at 24 fps; frames are 4k+1
    segments: int = 1  # clips chained on last frames
    steps: int = 50
    fps: int = 24  # output frame rate (Wan takes no fps conditioning)
    guidance_scale: float = 5.0
    flow_shift: float | None = None  # None: the repo's scheduler config; set to override UniPC's shift
    size_multiple: int = 32  # VAE 16 x patch 2
    frame_multiple: int = 4  # temporal compression 4
    max_frames: int = 121  # the length it was trained for
    fp16_variant: str | None = None


@dataclass(frozen=True)
class WanVACESettings:
    """Wan VACE (WanVACEPipeline): video-to-video keeping the source's motion, and first/last-frame transitions.

    edit_video feeds the source as a control video (the `control` annotator), keeps frame 0 as the edited
    first frame (mask black there), and also passes that frame as a reference image.
    """

    width: int = 1280  # 14B: 720p or 480p (832x480); the 1.3B model is 480p only
    height: int = 720
    num_frames: int = 81  # transition length, 4k+1
    steps: int = 50
    fps: int = 16
    guidance_scale: float = 5.0
    flow_shift: float | None = 5.0  # the diffusers example: 5.0 for 720p, 3.0 for 480p
    conditioning_scale: float = 1.0  # weight of the control branch in every VACE layer
    control: str = "gray"  # VACE's "gray" annotator (luminance): structure and motion, colours free
    pin_first_frame: bool = True  # frame 0 is the edited first frame itself (VACE's first-frame task)
    use_reference: bool = True  # also pass the edited first frame as a VACE reference image
    size_multiple: int = 16  # VAE 8 x patch 2
    frame_multiple: int = 4
    max_frames: int = 81  # frames per call; longer sources are edited in windows chained on last frames
    fp16_variant: str | None = None


FAMILY_SETTINGS: dict[str, type] = {
    "sdxl": SDXLSettings, "pix2pix": Pix2PixSettings, "svd": SVDSettings, "ltx": LTXSettings, "wan": WanSettings,
    "qwen-image": QwenImageSettings, "qwen-image-edit": QwenImageEditSettings, "wan22": Wan22Settings,
    "wan-vace": WanVACESettings,
}


def family_settings(family: str, values: dict | Any = None) -> Any:
    """The family's settings dataclass from a dict (unknown keys are an error, never ignored).

    Example:
        >>> family_settings("svd", {"segments": 1}).motion_bucket_id
        180
    """
    cls = FAMILY_SETTINGS[family]
    if isinstance(values, cls):
        return values
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {family} setting(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter a preset loads into one role's pipeline (diffusers `load_lora_weights`).

    Args:
        path: a `.safetensors` file or a folder holding one (checked to exist when the preset is read).
        weight: the adapter's scale (1.0: as trained).
    """

    path: str
    weight: float = 1.0


@dataclass(frozen=True)
class ModelSpec:
    """One role's model: the pipeline family, where its weights are, and how to call it.

    Args:
        family: pipeline family, one of `FAMILIES`; picks the file in `tools/` that runs it.
        model: a Hugging Face Hub id, a local directory, or `tiny/<name>` (built in code).
        settings: the family's settings dataclass (a dict is converted; unknown keys raise).
        refiner: SDXL only: the refiner's id or path (None: base only).
        adapters: LoRA adapters loaded into the pipeline (a preset file's `adapters`).
    """

    family: str
    model: str
    settings: Any = None
    refiner: str | None = None
    adapters: tuple[LoraAdapter, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown pipeline family {self.family!r}; expected one of {FAMILIES}")
        object.__setattr__(self, "settings", family_settings(self.family, self.settings))
        object.__setattr__(self, "adapters", tuple(self.adapters))

    def model_ids(self) -> list[str]:
        return [self.model] + ([self.refiner] if self.refiner else [])


@dataclass(frozen=True)
class Preset:
    """A named table of role -> `ModelSpec`, and the optional capabilities its families give the routes.

    Args:
        name: what `--preset` takes.
        description: one line for `mora presets`.
        roles: every role of `ROLES`, plus optional roles (`edit_video`).
        capabilities: names from `CAPABILITIES` (`text-motion`, `video-edit`): the task table picks
            routes from them; each needs its role's family to have it.
        source: the TOML file the preset was read from (None: built in code).

    Example:
        >>> get_preset("tiny").roles["image_to_video"].family
        'svd'
    """

    name: str
    description: str
    roles: MappingProxyType
    capabilities: frozenset = frozenset()
    source: str | None = None

    def __post_init__(self) -> None:
        missing = [r for r in ROLES if r not in self.roles]
        if missing:
            raise ValueError(f"preset {self.name!r} lacks roles {missing}")
        unknown = [r for r in self.roles if r not in ROLES + OPTIONAL_ROLES]
        if unknown:
            raise ValueError(f"preset {self.name!r} has unknown roles {unknown}; roles are {ROLES + OPTIONAL_ROLES}")
        if not isinstance(self.roles, MappingProxyType):
            object.__setattr__(self, "roles", MappingProxyType(dict(self.roles)))
        object.__setattr__(self, "capabilities", frozenset(self.capabilities))
        for capability in self.capabilities:
            role, families = CAPABILITIES[capability]
            if role not in self.roles or self.roles[role].family not in families:
                raise ValueError(f"preset {self.name!r}: capability {capability!r} needs role {role} in one of "
                                 f"{families}")

    def spec(self, role: str) -> ModelSpec:
        if role not in self.roles:
            raise InputError(f"--preset: {self.name!r} has no {role} model; use a preset with the capability that "
                             f"needs it (e.g. modern or tiny-modern)")
        return self.roles[role]

    def models(self) -> dict[str, str]:
        """role -> model id (the refiner listed as `text_to_image_refiner`), for manifests."""
        out = {role: spec.model for role, spec in self.roles.items()}
        if self.roles["text_to_image"].refiner:
            out["text_to_image_refiner"] = self.roles["text_to_image"].refiner
        return out

    @property
    def is_tiny(self) -> bool:
        return all(m.startswith("tiny/") for s in self.roles.values() for m in s.model_ids())


# --- presets in TOML: the built-in ones ship as package data (mora/presets/*.toml), users add their own ----

BUILTIN_PRESET_DIR = Path(__file__).parent / "presets"
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
    argument: str  # what the error names: --preset-file, or the folder the file was found in

    def fail(self, field: str, problem: str, fix: str) -> InputError:
        return InputError(f"{self.argument}: {self.path}: {field}: {problem}; {fix}")


def read_preset_file(path: str | Path, argument: str = "--preset-file") -> tuple[dict, _Source]:
    """A preset file's table and where it came from (InputError when unreadable or not TOML)."""
    import tomllib

    path = Path(path).expanduser()
    source = _Source(path, argument)
    if not path.is_file():
        raise InputError(f"{argument}: {str(path)!r} is not a file; pass the path of a .toml preset file")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{argument}: {path}: not valid TOML ({error}); fix the file's syntax") from None
    unknown = sorted(set(table) - set(_PRESET_KEYS))
    if unknown:
        raise source.fail(unknown[0], "is not a preset field", f"use only {', '.join(_PRESET_KEYS)}")
    name = table.get("name", path.stem)
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
        raise source.fail("name", f"{name!r} is not a preset name", "use one word like my-preset")
    return {**table, "name": name}, source


def _setting(source: _Source, where: str, family: str, key: str, value: Any) -> Any:
    """One TOML setting, checked against the family's dataclass field (TOML has no null: false unsets)."""
    fields = {f.name: f for f in dataclasses.fields(FAMILY_SETTINGS[family])}
    if key not in fields:
        raise source.fail(f"{where}.{key}", f"is not a {family} setting", f"use one of {', '.join(sorted(fields))}")
    kinds = [k.strip() for k in str(fields[key].type).split("|")]
    if value is False and "None" in kinds and "bool" not in kinds:
        return None
    kind = kinds[0]
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if {"int": int, "str": str, "bool": bool}.get(kind) is type(value):
        return value
    raise source.fail(f"{where}.{key}", f"{value!r} is not {'an' if kind == 'int' else 'a'} {kind}",
                      f"write a {kind}" + (" (or false to unset it)" if "None" in kinds else ""))


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
    for key in ("steps", "num_frames", "segments"):
        if getattr(settings, key, 1) < 1:
            raise source.fail(f"{where}.settings.{key}", f"{getattr(settings, key)} is below 1", "use 1 or more")


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


def _adapters(source: _Source, where: str, family: str, value: Any) -> tuple[LoraAdapter, ...]:
    if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
        raise source.fail(f"{where}.adapters", "is not a list of tables", 'write adapters = [{path = "lora.safetensors"}]')
    if value and family not in LORA_FAMILIES:
        raise source.fail(f"{where}.adapters", f"{family} pipelines cannot load LoRA adapters",
                          f"remove them, or use a family of {', '.join(LORA_FAMILIES)}")
    out = []
    for i, item in enumerate(value):
        if set(item) - {"path", "weight"} or "path" not in item:
            raise source.fail(f"{where}.adapters[{i}]", f"has keys {sorted(item)}", "give path and optionally weight")
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise source.fail(f"{where}.adapters[{i}].weight", f"{weight!r} is not a number", "write e.g. 0.8")
        path = _local(source, f"{where}.adapters[{i}].path", item["path"] if str(item["path"]).startswith(("/", ".", "~"))
                      else f"./{item['path']}")
        out.append(LoraAdapter(path, float(weight)))
    return tuple(out)


def _role(source: _Source, role: str, table: Any, base: ModelSpec | None) -> ModelSpec:
    """One role of a preset file, over the extended preset's spec for that role (if any)."""
    where = f"roles.{role}"
    if not isinstance(table, dict):
        raise source.fail(where, "is not a table", f"write [{where}] with family, model and settings")
    unknown = sorted(set(table) - set(_ROLE_KEYS))
    if unknown:
        raise source.fail(f"{where}.{unknown[0]}", "is not a role field", f"use only {', '.join(_ROLE_KEYS)}")
    family = table.get("family", base.family if base else None)
    if family not in FAMILIES:
        raise source.fail(f"{where}.family", f"{family!r} is not a pipeline family", f"use one of {', '.join(FAMILIES)}")
    same = base is not None and base.family == family  # a new family starts from its own defaults
    if "model" not in table and not same:
        raise source.fail(f"{where}.model", "missing", "give a Hub id, a local directory or tiny/<name>")
    model = _local(source, f"{where}.model", table["model"]) if "model" in table else base.model
    refiner = table.get("refiner", base.refiner if same else None)
    if refiner is not None and refiner is not False and family != "sdxl":
        raise source.fail(f"{where}.refiner", f"{family} has no refiner", "remove it (only sdxl has one)")
    refiner = _local(source, f"{where}.refiner", refiner) if refiner else None
    values = dataclasses.asdict(base.settings) if same else {}
    settings = table.get("settings", {})
    if not isinstance(settings, dict):
        raise source.fail(f"{where}.settings", "is not a table", f"write [{where}.settings] with key = value lines")
    values.update({k: _setting(source, f"{where}.settings", family, k, v) for k, v in settings.items()})
    spec_settings = family_settings(family, values)
    _check_sizes(source, where, family, spec_settings)
    adapters = _adapters(source, where, family, table["adapters"]) if "adapters" in table else (
        base.adapters if same else ())
    return ModelSpec(family, model, spec_settings, refiner=refiner, adapters=adapters)


def _capabilities(source: _Source, table: dict, roles: dict, base: Preset | None) -> frozenset:
    value = table.get("capabilities", sorted(base.capabilities) if base else [])
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise source.fail("capabilities", f"{value!r} is not a list of names", f"write e.g. {list(CAPABILITIES)}")
    for capability in value:
        if capability not in CAPABILITIES:
            raise source.fail("capabilities", f"{capability!r} is not a capability", f"use {', '.join(CAPABILITIES)}")
        role, families = CAPABILITIES[capability]
        if role not in roles or roles[role].family not in families:
            have = roles[role].family if role in roles else "no model"
            raise source.fail("capabilities", f"{capability!r} needs role {role} in {' or '.join(families)}, "
                              f"it has {have}", f"set roles.{role}.family or drop {capability!r}")
    return frozenset(value)


def build_preset(table: dict, source: _Source, base: Preset | None = None) -> Preset:
    """A `Preset` from a preset file's table, over `base` (the preset it extends)."""
    roles = dict(base.roles) if base else {}
    given = table.get("roles", {})
    if not isinstance(given, dict):
        raise source.fail("roles", "is not a table", "write [roles.<role>] tables")
    for role, role_table in given.items():
        if role not in ROLES + OPTIONAL_ROLES:
            raise source.fail(f"roles.{role}", "is not a role", f"use one of {', '.join(ROLES + OPTIONAL_ROLES)}")
        roles[role] = _role(source, role, role_table, roles.get(role))
    missing = [r for r in ROLES if r not in roles]
    if missing:
        raise source.fail(f"roles.{missing[0]}", "missing", 'define it, or extend a preset (extends = "mora")')
    description = table.get("description", f"Preset {base.name} with changes." if base else None)
    if not isinstance(description, str) or not description.strip():
        raise source.fail("description", f"{description!r} is not text", 'write description = "what it is for"')
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
    order = ("mora", "ltx", "mora-wan", "modern", "tiny", "tiny-ltx", "tiny-wan", "tiny-modern")
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
    capabilities and, per role, the family, model and refiner.

    Example:
        >>> next(r for r in preset_rows() if r["name"] == "tiny")["source"]
        'built-in'
    """
    return [dict(name=p.name, description=p.description, source="built-in" if p.name in PRESETS else p.source,
                 capabilities=sorted(p.capabilities),
                 roles={role: dict(family=s.family, model=s.model, **({"refiner": s.refiner} if s.refiner else {}))
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
            f"--preset: unknown preset {preset!r}; choose one of {', '.join(presets)} (or add a file to "
            f"{user_preset_dir()} or pass --preset-file)"
        ) from None


def with_settings(spec: ModelSpec, **changes: Any) -> ModelSpec:
    """A copy of `spec` with some call settings replaced (None values are ignored).

    Example:
        >>> with_settings(get_preset("mora").spec("image_to_video"), fps=12).settings.fps
        12
    """
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, **changes))

"""Presets: which model each agent role uses, and how it is called. Data, never a code path.

A preset maps each role (`text_to_image`, `image_to_image`, `image_to_video`, `extend`,
`connect`) to a `ModelSpec`: a pipeline family (one file each in `mora/tools/`), a model id or
local directory, and the call settings. Two presets that name the same family run the same code.

Model ids that start with `tiny/` are built in code at toy size with random weights (see
`mora.tools.tiny`), saved under `$MORA_HOME` and loaded back with `from_pretrained`.

This module imports no torch, so the CLI can validate options before any model loads.
"""

from __future__ import annotations

from mora.config.files import (  # noqa: F401 - the public names of mora.config
    _FILE_FIXES,
    _POSITIVE,
    _PRESET_KEYS,
    _ROLE_KEYS,
    _STRICT,
    BUILTIN_PRESET_DIR,
    DEFAULT_PRESET,
    LORA_FAMILIES,
    PRESETS,
    _adapters,
    _AdapterTable,
    _builtin_presets,
    _capabilities,
    _check_sizes,
    _dotted,
    _file_settings,
    _local,
    _PresetFile,
    _read_folder,
    _resolve,
    _role,
    _RolesTable,
    _RoleTable,
    _settings_model,
    _Source,
    _unsettable,
    build_preset,
    get_preset,
    load_presets,
    preset_rows,
    read_preset_file,
    user_preset_dir,
    with_settings,
)
from mora.config.settings import (  # noqa: F401
    ATTENTION_BACKENDS,
    CACHES,
    CAPABILITIES,
    FAMILIES,
    FAMILY_SETTINGS,
    OPTIONAL_ROLES,
    PROFILES,
    ROLE_FAMILIES,
    ROLES,
    LoraAdapter,
    LTXSettings,
    ModelSpec,
    Pix2PixSettings,
    Preset,
    QwenImageEditSettings,
    QwenImageSettings,
    SDXLSettings,
    SVDSettings,
    Wan22Settings,
    WanSettings,
    WanVACESettings,
    family_settings,
    mora_home,
)

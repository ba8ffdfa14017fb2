"""Finding and validating the LLM configuration (an OAI_CONFIG_LIST file or a list of dicts).

Order: the `llm_config` argument (a path or a list), else `$OAI_CONFIG_LIST` (a path or a JSON
string, as AutoGen accepts), else `./OAI_CONFIG_LIST` if present, else no LLM. Any
OpenAI-compatible endpoint works through `base_url` (OpenAI, Azure OpenAI, Ollama, vLLM).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

from mora.errors import InputError

logger = logging.getLogger(__name__)

# Bounded so a dead endpoint costs seconds, not minutes; entries may override both.
DEFAULT_TIMEOUT_S = 60
DEFAULT_MAX_RETRIES = 1
_SECRET_KEYS = ("api_key", "azure_ad_token", "default_headers", "extra_headers")


@functools.cache
def llm_errors() -> tuple[type[BaseException], ...]:
    """What a failing endpoint raises through AutoGen's OpenAI client: HTTP, timeout, API errors.

    Imported on first use: openai takes a second to import and `mora --help` must stay fast.
    """
    import httpx
    import openai

    return (openai.OpenAIError, httpx.HTTPError, TimeoutError, ConnectionError)


def _parse(text: str, where: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"--llm-config: {where} is not valid JSON ({e.msg} at line {e.lineno}); "
            "see OAI_CONFIG_LIST.example for the format"
        ) from None
    return _check(data, where)


def _check(data: Any, where: str) -> list[dict]:
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise InputError(f"--llm-config: {where} must be a non-empty JSON list of model entries; see OAI_CONFIG_LIST.example")
    entries = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str) or not entry["model"].strip():
            raise InputError(
                f"--llm-config: entry {i} of {where} has no \"model\" name; each entry needs at least "
                "{\"model\": ...} (plus api_key / base_url); see OAI_CONFIG_LIST.example"
            )
        entry = dict(entry)
        entry.setdefault("timeout", DEFAULT_TIMEOUT_S)
        entry.setdefault("max_retries", DEFAULT_MAX_RETRIES)
        entries.append(entry)
    return entries


def load_llm_config(llm_config: str | os.PathLike | list | None = None) -> list[dict] | None:
    """The config list to use, or None when no LLM is configured.

    Raises:
        InputError: a named file is missing, or the config is malformed.

    Example:
        >>> load_llm_config([{"model": "llama3.1", "base_url": "http://localhost:11434/v1", "api_key": "ollama"}])[0]["model"]
        'llama3.1'
    """
    if isinstance(llm_config, (list, dict)):
        return _check(llm_config, "the llm_config list")
    if llm_config is not None:
        path = Path(llm_config).expanduser()
        if not path.is_file():
            raise InputError(
                f"--llm-config: {str(llm_config)!r} is not a file; pass the path of an OAI_CONFIG_LIST JSON file "
                "(see OAI_CONFIG_LIST.example)"
            )
        return _parse(path.read_text(encoding="utf-8"), repr(str(llm_config)))
    env = os.environ.get("OAI_CONFIG_LIST")
    if env:
        path = Path(env).expanduser()
        if path.is_file():
            return _parse(path.read_text(encoding="utf-8"), f"$OAI_CONFIG_LIST ({env!r})")
        if env.lstrip().startswith(("[", "{")):
            return _parse(env, "$OAI_CONFIG_LIST")
        raise InputError(
            f"OAI_CONFIG_LIST: {env!r} is neither a file nor a JSON list; point it at an OAI_CONFIG_LIST file "
            "or unset it to run without an LLM"
        )
    local = Path("OAI_CONFIG_LIST")
    if local.is_file():
        return _parse(local.read_text(encoding="utf-8"), "./OAI_CONFIG_LIST")
    return None


def autogen_llm_config(config_list: list[dict] | None) -> dict | bool:
    """AutoGen's llm_config for a config list (False: no LLM). No disk cache: answers differ per job.

    Entries without a `price` get `[0, 0]`: AutoGen warns on stdout, through its own handler, for
    every answer of a model missing from its price table (any local model), which would corrupt
    `mora ... --json`; Mora does not report costs.

    Example:
        >>> autogen_llm_config([{"model": "llama3.1"}])["cache_seed"] is None
        True
    """
    if not config_list:
        return False
    return {"config_list": [{"price": [0.0, 0.0], **entry} for entry in config_list], "cache_seed": None}


def describe(config_list: list[dict] | None) -> dict:
    """What a manifest may show of the config: the model names, never a key or a header."""
    if not config_list:
        return {"used": False, "model": None}
    return {"used": True, "model": config_list[0]["model"]}


def _secrets(config_list: list[dict] | None) -> set[str]:
    found = set()
    for entry in config_list or []:
        for key in _SECRET_KEYS:
            value = entry.get(key)
            values = value.values() if isinstance(value, dict) else [value]
            found.update(v for v in values if isinstance(v, str) and len(v) >= 4)
    return found


def scrub(text: str, config_list: list[dict] | None) -> str:
    """`text` with every key and header value of the config replaced by `***`.

    Error messages from an endpoint can echo the key (some OpenAI-compatible servers answer a
    401 with "invalid key sk-..."); they go into logs and the manifest only through this.

    Example:
        >>> scrub("bad key sk-abc123", [{"model": "m", "api_key": "sk-abc123"}])
        'bad key ***'
    """
    for secret in sorted(_secrets(config_list), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text

"""Finding and validating the LLM configuration (an OAI_CONFIG_LIST file or a list of dicts).

Order: the `llm_config` argument (a path or a list), else `$OAI_CONFIG_LIST` (a path or a JSON
string, as AutoGen accepts), else `./OAI_CONFIG_LIST` if present, else no LLM. Any
OpenAI-compatible endpoint works through `base_url` (OpenAI, Azure OpenAI, Ollama, vLLM).

Each entry is checked by `LLMEntry` (a pydantic model; its errors in Mora's one-line shape through
`mora.validation`, never showing a key); an entry still holding one of OAI_CONFIG_LIST.example's
placeholders (`PLACEHOLDERS`) is refused: every request would fail and fall back. Retries have one layer, Mora's: at most `LLM_ATTEMPTS`
requests per agent step, each bounded by the entry's `timeout`; the openai client retries nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mora import validation
from mora.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60  # seconds per request, unless an entry says otherwise
# One retry layer: Mora's. The openai client's own retries (which autogen configures from an entry's
# `max_retries`) would multiply Mora's tries, so they are off and an entry may not turn them on.
CLIENT_MAX_RETRIES: Literal[0] = 0
LLM_ATTEMPTS = 3  # requests per agent step, in all; then the scripted fallback
_SECRET_KEYS = ("api_key", "azure_ad_token", "default_headers", "extra_headers")
# What OAI_CONFIG_LIST.example asks a user to replace (its key and its Azure endpoint). The example is
# not in the package, so this is the one definition; tests/test_llm_config.py checks the example against it.
PLACEHOLDERS = ("REPLACE-ME", "YOUR-RESOURCE")
_FORMAT_FIX = "see OAI_CONFIG_LIST.example for the format"
_MODEL_FIX = 'each entry needs {"model": NAME} (plus api_key / base_url); ' + _FORMAT_FIX


_Text = Annotated[str, Field(strict=True)]
_Headers = dict[str, _Text]


class LLMEntry(BaseModel):
    """One OAI_CONFIG_LIST entry: the keys Mora and autogen's OpenAI client read, typed.

    Other keys autogen's clients know (Azure, Gemini, Bedrock, Ollama... entries carry their own) are
    kept and passed through; any key none of them knows is refused (`known_keys`).
    """

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(strict=True, json_schema_extra={"fix": _MODEL_FIX})]
    api_key: _Text | None = None
    base_url: _Text | None = None
    api_type: _Text | None = None
    api_version: _Text | None = None
    azure_ad_token: _Text | None = None
    organization: _Text | None = None
    project: _Text | None = None
    timeout: Annotated[float, Field(strict=True, gt=0, json_schema_extra={"fix": "give seconds per request, > 0"})] = (
        DEFAULT_TIMEOUT_S)
    max_retries: Annotated[Literal[0], Field(json_schema_extra={
        "fix": f"remove it: Mora retries each step itself ({LLM_ATTEMPTS} requests at most)"})] = CLIENT_MAX_RETRIES
    tags: list[_Text] | None = None  # "vision" marks the entries that accept images
    price: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    default_headers: _Headers | None = None
    extra_headers: _Headers | None = None
    temperature: Annotated[float, Field(ge=0)] | None = None
    max_tokens: Annotated[int, Field(gt=0, strict=True)] | None = None

    @field_validator("model")
    @classmethod
    def _named(cls, model: str) -> str:
        if not model.strip():
            raise ValueError(f"is blank; {_MODEL_FIX}")
        return model


def step_attempts(config_list: list[dict] | None) -> int:
    """How many times an agent step asks the LLM before its scripted fallback.

    Within one try autogen walks the config list, moving to the next entry when one fails, so a
    try costs up to one request per entry: the tries are shared out so a step makes at most
    `LLM_ATTEMPTS` requests (one try at least, even with more entries than that).

    Example:
        >>> step_attempts([{"model": "m"}]), step_attempts([{"model": "a"}, {"model": "b"}])
        (3, 1)
    """
    return max(1, LLM_ATTEMPTS // max(1, len(config_list or [])))


@functools.cache
def llm_errors() -> tuple[type[BaseException], ...]:
    """What a failing endpoint raises through AutoGen's OpenAI client: HTTP, timeout, API errors.

    Imported on first use: openai takes a second to import and `mora --help` must stay fast.
    """
    import httpx
    import openai

    return (openai.OpenAIError, httpx.HTTPError, TimeoutError, ConnectionError)


def _parse(text: str, where: str, without: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"--llm-config: {where} is not valid JSON ({e.msg} at line {e.lineno}); {_FORMAT_FIX}"
        ) from None
    return _check(data, where, without)


def _check(data: Any, where: str, without: str) -> list[dict]:
    """Validate every entry (`LLMEntry`); the entries as autogen takes them, with timeout and retries set.

    `without` says how to run without an LLM from this source (the other fix of a placeholder entry).
    """
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise InputError(f"--llm-config: {where} must be a non-empty JSON list of model entries; {_FORMAT_FIX}")
    entries = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise InputError(f"--llm-config: entry {i} of {where} is a {type(entry).__name__}, not an object; "
                             f"each entry needs at least {{\"model\": ...}}; {_FORMAT_FIX}")
        unknown = sorted(set(entry) - known_keys())
        if unknown:  # a typo (`base_ur`) would otherwise reach the endpoint as nothing at all
            raise InputError(f"--llm-config: entry {i} of {where}: {unknown[0]}: is not a known field of an "
                             "OAI_CONFIG_LIST entry; check its spelling (autogen's entries take model, api_key, "
                             "base_url, api_type, timeout, tags, price, ...)")
        try:
            checked = LLMEntry.model_validate(entry)
        except ValidationError as e:
            raise validation.input_error(_without_secrets(e), where=f"--llm-config: entry {i} of {where}",
                                         model=LLMEntry) from None
        field = _placeholder(entry)
        if field is not None:  # a copied example: each request would fail, every step fall back
            shown = "" if field in _SECRET_KEYS else f" ({entry[field]!r})"
            raise InputError(f"--llm-config: entry {i} of {where}: {field}{shown} is still OAI_CONFIG_LIST.example's "
                             f"placeholder; put your real {field} there and keep only the entries you use, "
                             f"or {without} to run without an LLM")
        # The entry as given (extra keys included, for autogen and the openai client), plus Mora's settings.
        entries.append({**entry, **checked.model_dump(exclude_unset=True, exclude_none=True),
                        "timeout": checked.timeout, "max_retries": CLIENT_MAX_RETRIES})
    return entries


def _placeholder(entry: dict) -> str | None:
    """The first field of `entry` (api_key first) whose text still holds one of the example's `PLACEHOLDERS`."""
    for field in sorted(entry, key=lambda name: name != "api_key"):
        value = entry[field]
        if isinstance(value, str) and any(marker in value.upper() for marker in PLACEHOLDERS):
            return field
    return None


@functools.cache
def known_keys() -> frozenset[str]:
    """The keys an entry may carry: Mora's own and those of every autogen client's entry model.

    Derived from autogen's `LLMConfigEntry` subclasses (OpenAI, Azure, Gemini, Ollama, Bedrock, ...) and
    the keywords of the openai clients autogen passes an entry's other keys to (`azure_endpoint`, ...),
    so a key they know is accepted and passed on, and any other is refused (extra fields forbidden).
    """
    import inspect

    import autogen.oai.client  # noqa: F401 - imports every client module, which defines its entry model
    import openai
    from autogen.llm_config.entry import LLMConfigEntry

    def walk(cls: type) -> list[type]:
        return [cls, *(c for sub in cls.__subclasses__() for c in walk(sub))]

    clients = {name for cls in (openai.OpenAI, openai.AzureOpenAI) for name in inspect.signature(cls).parameters}
    return frozenset(LLMEntry.model_fields) | clients | {key for cls in walk(LLMConfigEntry) for key in cls.model_fields}


def _without_secrets(error: ValidationError) -> ValidationError:
    """`error` with the value of every secret field replaced by `***`: messages never show a key."""
    details = [{**e, "input": "***"} if e["loc"] and e["loc"][0] in _SECRET_KEYS else e
               for e in error.errors(include_url=False)]
    return ValidationError.from_exception_data(error.title, details)


def load_llm_config(llm_config: str | os.PathLike | list | None = None) -> list[dict] | None:
    """The config list to use, or None when no LLM is configured.

    Raises:
        InputError: a named file is missing, or the config is malformed.

    Example:
        >>> load_llm_config([{"model": "llama3.1", "base_url": "http://localhost:11434/v1", "api_key": "ollama"}])[0]["model"]
        'llama3.1'
    """
    if isinstance(llm_config, (list, dict)):
        return _check(llm_config, "the llm_config list", "pass llm_config=None")
    if llm_config is not None:
        path = Path(llm_config).expanduser()
        if not path.is_file():
            raise InputError(
                f"--llm-config: {str(llm_config)!r} is not a file; pass the path of an OAI_CONFIG_LIST JSON file "
                "(see OAI_CONFIG_LIST.example)"
            )
        return _parse(path.read_text(encoding="utf-8"), repr(str(llm_config)), "drop --llm-config")
    env = os.environ.get("OAI_CONFIG_LIST")
    if env:
        path = Path(env).expanduser()
        if path.is_file():
            return _parse(path.read_text(encoding="utf-8"), f"$OAI_CONFIG_LIST ({env!r})", "unset OAI_CONFIG_LIST")
        if env.lstrip().startswith(("[", "{")):
            return _parse(env, "$OAI_CONFIG_LIST", "unset OAI_CONFIG_LIST")
        raise InputError(
            f"OAI_CONFIG_LIST: {env!r} is neither a file nor a JSON list; point it at an OAI_CONFIG_LIST file "
            "or unset it to run without an LLM"
        )
    local = Path("OAI_CONFIG_LIST")
    if local.is_file():
        return _parse(local.read_text(encoding="utf-8"), "./OAI_CONFIG_LIST", "remove ./OAI_CONFIG_LIST")
    return None


def autogen_llm_config(config_list: list[dict] | None) -> dict | Literal[False]:
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
    logs_off_stdout()  # before the caller builds its clients: their constructors warn
    return {"config_list": [{"price": [0.0, 0.0], **entry} for entry in config_list], "cache_seed": None}


def logs_off_stdout() -> None:
    """Take the stdout handlers off autogen's loggers: its records then go where the application's logging sends them.

    autogen's client modules attach a `StreamHandler(sys.stdout)` at import, so a library warning
    ("The API key specified is not a valid OpenAI format", once per client) lands on stdout, which
    carries the CLI's result (the video path, `--json`) and MCP's stdio protocol. Without it the
    records propagate to the root logger (the CLI's handler: stderr; Python's last resort: stderr).
    """
    import autogen.oai.client  # noqa: F401 - the import that attaches them

    for name, log in list(logging.Logger.manager.loggerDict.items()):
        if not name.startswith("autogen") or not isinstance(log, logging.Logger):
            continue
        for handler in list(log.handlers):
            if type(handler) is logging.StreamHandler and handler.stream not in (sys.stderr, sys.__stderr__):
                log.removeHandler(handler)


def describe(config_list: list[dict] | None) -> dict:
    """What a manifest may show of the config: whether one is set and its first model, never a key or a header."""
    return {"configured": bool(config_list), "model": config_list[0]["model"] if config_list else None}


def _secrets(config_list: list[dict] | None) -> set[str]:
    found: set[str] = set()
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

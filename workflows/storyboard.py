"""The storyboard of `mora story`: its schema, its validation and the deterministic splitter (data, no autogen).

A storyboard is JSON (`<out stem>_storyboard.json`, editable and re-run with `--storyboard`):

    {"title": str, "style": str, "characters": [{"name": str, "description": str}, ...],
     "shots": [{"prompt": str, "seconds": number, "camera": str, "transition": "connect" | "cut"}, ...]}

`transition` is how a shot leads into the next one (the last shot's is ignored). An LLM's storyboard
and a user's edited file are both untrusted: `validate_storyboard` checks them with the pydantic
model `Storyboard` (extra fields refused), names the field and the shot of every problem through
`mora.validation`'s formatter and never fixes anything silently.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from mora.errors import InputError
from mora.limits import MAX_PROMPT_CHARS
from mora.validation import problems

Transition = Literal["connect", "cut"]  # how a shot leads into the next (`mora story --transition` too)
TRANSITIONS: tuple[str, ...] = get_args(Transition)
MAX_SHOTS = 64  # shots in a storyboard (`mora story --shots` too)
_STOP = set("""a an the and or but of to in on at by for with from into onto over under as is are was were be been
it its this that these those then than so very he she they we you i his her their our your him them there here
while when where who whom which what after before again once out up down off not no yes all each every some""".split())
_STYLE_WORDS = ("cinematic", "watercolor", "watercolour", "anime", "cartoon", "noir", "pixel", "painted", "oil",
                "photorealistic", "sketch", "claymation", "3d", "vintage", "pastel", "neon", "film")
_CAMERAS = ("wide establishing shot", "medium shot", "close-up", "tracking shot", "low-angle shot", "over-the-shoulder")


_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PROMPT_CHARS)]
_OptionalText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_PROMPT_CHARS)]
# the fix of each field, wherever it sits (`mora.validation.problems(fixes=...)`)
_FIXES = {"title": "write a short text", "style": "write a short text", "name": "write a short text",
          "description": "write a short text", "prompt": "write a short text", "camera": "write a short text",
          "characters": 'write [{"name": ..., "description": ...}]', "transition": f"use {' or '.join(TRANSITIONS)}",
          "shots": f"write 1 to {MAX_SHOTS} shots", "seconds": "write the shot's length in seconds, e.g. 2"}


class Character(BaseModel):
    """A character of the storyboard: its name and the fixed look every shot repeats."""

    model_config = ConfigDict(extra="forbid")
    name: _Text
    description: _Text


class Shot(BaseModel):
    """One shot: its text-to-image prompt, length, camera and how it leads into the next shot."""

    model_config = ConfigDict(extra="forbid")
    prompt: _Text
    seconds: float
    camera: _OptionalText = ""
    transition: Transition = "connect"

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds(cls, value: Any, info: ValidationInfo) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"is not a number; {_FIXES['seconds']}")
        low, high = (info.context or {}).get("seconds_range") or (-math.inf, math.inf)
        if not low <= value <= high:
            raise ValueError(f"is outside this preset's range; use {low:g} to {high:g}")
        return value

    @field_validator("camera", mode="before")
    @classmethod
    def _no_camera(cls, value: Any) -> Any:
        return "" if value is None else value


class Storyboard(BaseModel):
    """A storyboard file (the module's docstring shows its JSON); extra fields are refused."""

    model_config = ConfigDict(extra="forbid")
    title: _Text = "Untitled"
    style: _OptionalText = ""
    characters: list[Character] = []
    shots: Annotated[list[Shot], Field(min_length=1, max_length=MAX_SHOTS)]


def _where(loc: tuple) -> str:
    """`shots[0] (shot 1).seconds`: how a storyboard's problem names its place (shots counted from 1 too)."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]" + (f" (shot {part + 1})" if loc[i - 1] == "shots" else "")
        else:
            out += f".{part}" if out else str(part)
    return out or "storyboard"


def validate_storyboard(data: Any, *, seconds_range: tuple[float, float] | None = None,
                        source: str = "storyboard") -> dict:
    """Check an (untrusted) storyboard (`Storyboard`); returns a clean copy or raises one InputError listing every problem.

    Args:
        data: the parsed JSON.
        seconds_range: (low, high) seconds a shot may last on the preset; None skips the check.
        source: how errors name the storyboard (the file's path).

    Example:
        >>> validate_storyboard({"title": "t", "style": "s", "characters": [],
        ...                      "shots": [{"prompt": "a fox", "seconds": 1}]})["shots"][0]["transition"]
        'connect'
    """
    if not isinstance(data, dict):
        raise InputError(f"{source}: {type(data).__name__} is not a storyboard object; write "
                         '{"title": ..., "style": ..., "characters": [...], "shots": [...]}')
    try:
        board = Storyboard.model_validate(data, context={"seconds_range": seconds_range})
    except ValidationError as e:
        raise InputError(f"{source}: " + "; ".join(problems(e, name=_where, fixes=_FIXES))) from None
    return board.model_dump()


def sentences(story: str) -> list[str]:
    """The story's sentences (split at . ! ? ; and line breaks), empty ones dropped."""
    parts = re.split(r"(?<=[.!?;])\s+|\n+", story.strip())
    return [p.strip(" .;") for p in parts if p.strip(" .;")]


def _group(items: list[str], n: int) -> list[str]:
    """n consecutive groups of the items (items repeat when there are fewer than n)."""
    if len(items) >= n:
        bounds = [round(k * len(items) / n) for k in range(n + 1)]
        return [". ".join(items[bounds[k]:bounds[k + 1]]) for k in range(n)]
    return [items[k * len(items) // n] for k in range(n)]


# Suffixes of verbs and adverbs ("wakes" is not caught: -s is also the plural of nouns).
_NOT_NOUN_SUFFIXES = ("ing", "ed", "ly")


def _words(sentence: str) -> list[str]:
    """A sentence's content words, lower case: stopwords, short words and verbs/adverbs by suffix dropped."""
    return [w for w in re.findall(r"[A-Za-z][A-Za-z'-]+", sentence.lower())
            if w not in _STOP and len(w) > 2 and not w.endswith(_NOT_NOUN_SUFFIXES)]


def recurring_nouns(parts: list[str], limit: int = 4) -> list[str]:
    """The story's characters without an LLM: content words that appear in two or more sentences.

    A deliberately simple heuristic, written by hand because a part-of-speech tagger (spaCy, NLTK)
    would be a heavy dependency for a fallback. Its limits: a verb that recurs in the same form
    ("runs" twice) counts as a character; a character named differently in each sentence ("the
    fox", "it", "the animal") is missed; plurals and singulars are different words. An LLM's
    storyboard (storyboard_agent) names characters properly; this is what runs without one.

    Example:
        >>> recurring_nouns(["The fox sleeps under a pine", "The fox wakes", "A crow watches the fox"])
        ['fox']
    """
    seen: dict[str, int] = {}  # word -> number of sentences it appears in
    for sentence in parts:
        for w in dict.fromkeys(_words(sentence)):
            seen[w] = seen.get(w, 0) + 1
    return [w for w, n in seen.items() if n >= 2][:limit]


def split_story(story: str, shots: int, seconds: float) -> dict:
    """The deterministic storyboard: sentences -> shots; each prompt is its own text, the style and its characters.

    Characters are the story's recurring nouns (`recurring_nouns`); a shot's prompt names only the
    characters that appear in its own text, so no sentence's words leak into another shot.

    Example:
        >>> board = split_story("A fox wakes. The fox runs through snow.", 2, 1.0)
        >>> [s["prompt"].split(",")[0] for s in board["shots"]]
        ['A fox wakes', 'The fox runs through snow']
    """
    parts = sentences(story) or [story.strip()]
    lower = story.lower()
    style = ", ".join(w for w in _STYLE_WORDS if re.search(rf"\b{w}\b", lower)) or "cinematic, consistent lighting"
    nouns = recurring_nouns(parts)
    characters = [{"name": n, "description": f"the {n} of the story, same look in every shot"} for n in nouns]
    board_shots = []
    for k, text in enumerate(_group(parts, shots)):
        camera = _CAMERAS[k % len(_CAMERAS)] if k else _CAMERAS[0]
        mine = [n for n in nouns if n in _words(text)]
        prompt = f"{text}, {camera}, {style}" + (f", featuring {', '.join(mine)}" if mine else "")
        board_shots.append({"prompt": prompt, "seconds": seconds, "camera": camera,
                            "transition": "connect"})
    title = parts[0][:60]
    return {"title": title, "style": style, "characters": characters, "shots": board_shots}


def shot_prompt(board: dict, k: int, continuity: str) -> str:
    """The text-to-image prompt of shot k: with `prompt` continuity, the style sheet and characters too."""
    prompt = board["shots"][k]["prompt"]
    if continuity != "prompt":
        return prompt
    chars = "; ".join(f"{c['name']}: {c['description']}" for c in board["characters"])
    extra = ", ".join(x for x in (board["style"], chars) if x)
    return f"{prompt}. {extra}" if extra else prompt


def edit_instruction(board: dict, k: int) -> str:
    """The instruction that turns shot k-1's last frame into shot k's first frame (keyframe continuity)."""
    chars = ", ".join(c["name"] for c in board["characters"])
    keep = f"; keep {chars} and the {board['style'] or 'same'} style" if chars else \
        f"; keep the {board['style'] or 'same'} style"
    return f"make it: {board['shots'][k]['prompt']}{keep}"

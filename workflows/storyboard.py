"""The storyboard of `mora story`: its schema, its validation and the deterministic splitter (data, no autogen).

A storyboard is JSON (`<out stem>_storyboard.json`, editable and re-run with `--storyboard`):

    {"title": str, "style": str, "characters": [{"name": str, "description": str}, ...],
     "shots": [{"prompt": str, "seconds": number, "camera": str, "transition": "connect" | "cut"}, ...]}

`transition` is how a shot leads into the next one (the last shot's is ignored). An LLM's storyboard
and a user's edited file are both untrusted: `validate_storyboard` names the field and the shot of
every problem and never fixes anything silently.
"""

from __future__ import annotations

import math
import re
from typing import Any

from mora.errors import InputError

TRANSITIONS = ("connect", "cut")
CONTINUITY = ("keyframe", "prompt")
MAX_SHOTS = 64
MAX_TEXT = 2000  # characters of any storyboard text
_STOP = set("""a an the and or but of to in on at by for with from into onto over under as is are was were be been
it its this that these those then than so very he she they we you i his her their our your him them there here
while when where who whom which what after before again once out up down off not no yes all each every some""".split())
_STYLE_WORDS = ("cinematic", "watercolor", "watercolour", "anime", "cartoon", "noir", "pixel", "painted", "oil",
                "photorealistic", "sketch", "claymation", "3d", "vintage", "pastel", "neon", "film")
_CAMERAS = ("wide establishing shot", "medium shot", "close-up", "tracking shot", "low-angle shot", "over-the-shoulder")


def _text(value: Any, where: str, problems: list[str], required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        problems.append(f"{where}: missing; write a short text" if value is None else
                        f"{where}: {value!r:.60} is not a non-empty string; write a short text")
        return ""
    if len(value) > MAX_TEXT:
        problems.append(f"{where}: {len(value)} characters; shorten it to at most {MAX_TEXT}")
    return value.strip()


def _shot(i: int, shot: Any, seconds_range: tuple[float, float] | None, problems: list[str]) -> dict:
    where = f"shots[{i}] (shot {i + 1})"
    if not isinstance(shot, dict):
        problems.append(f"{where}: {shot!r} is not an object; write {{\"prompt\": ..., \"seconds\": ...}}")
        return {}
    prompt = _text(shot.get("prompt"), f"{where}.prompt", problems)
    seconds = shot.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        problems.append(f"{where}.seconds: {seconds!r} is not a number; write the shot's length in seconds, e.g. 2")
        seconds = None
    elif seconds_range and not seconds_range[0] <= seconds <= seconds_range[1]:
        problems.append(f"{where}.seconds: {seconds!r} is outside this preset's range; use "
                        f"{seconds_range[0]:g} to {seconds_range[1]:g}")
    transition = shot.get("transition", "connect")
    if transition not in TRANSITIONS:
        problems.append(f"{where}.transition: {transition!r} is not a transition; use connect or cut")
    camera = _text(shot.get("camera"), f"{where}.camera", problems, required=False)
    return {"prompt": prompt, "seconds": seconds, "camera": camera, "transition": transition}


def validate_storyboard(data: Any, *, seconds_range: tuple[float, float] | None = None,
                        source: str = "storyboard") -> dict:
    """Check an (untrusted) storyboard; returns a clean copy or raises one InputError listing every problem.

    Args:
        data: the parsed JSON.
        seconds_range: (low, high) seconds a shot may last on the preset; None skips the check.
        source: how errors name the storyboard (the file's path).

    Example:
        >>> validate_storyboard({"title": "t", "style": "s", "characters": [],
        ...                      "shots": [{"prompt": "a fox", "seconds": 1}]})["shots"][0]["transition"]
        'connect'
    """
    problems: list[str] = []
    if not isinstance(data, dict):
        raise InputError(f"{source}: {type(data).__name__} is not a storyboard object; write "
                         '{"title": ..., "style": ..., "characters": [...], "shots": [...]}')
    title = _text(data.get("title", "Untitled"), "title", problems)
    style = _text(data.get("style", ""), "style", problems, required=False)
    characters = data.get("characters", [])
    if not isinstance(characters, list):
        problems.append(f"characters: {characters!r} is not a list; write [{{\"name\": ..., \"description\": ...}}]")
        characters = []
    chars = []
    for i, c in enumerate(characters):
        if not isinstance(c, dict):
            problems.append(f"characters[{i}]: {c!r} is not an object; write {{\"name\": ..., \"description\": ...}}")
            continue
        chars.append({"name": _text(c.get("name"), f"characters[{i}].name", problems),
                      "description": _text(c.get("description"), f"characters[{i}].description", problems)})
    shots = data.get("shots")
    if not isinstance(shots, list) or not 1 <= len(shots) <= MAX_SHOTS:
        problems.append(f"shots: {shots!r:.80} is not a list of 1 to {MAX_SHOTS} shots; write at least one shot")
        shots = []
    clean = [_shot(i, s, seconds_range, problems) for i, s in enumerate(shots)]
    if problems:
        raise InputError(f"{source}: " + "; ".join(problems))
    return {"title": title, "style": style, "characters": chars, "shots": clean}


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

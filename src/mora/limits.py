"""Limits and checks of every number and text a job takes: sizes, steps, frames, fps, segments, seeds.

The range of each number is written once, in `BOUNDS`: the job model's options take these very
constraints as their bounds (`mora.workflows.jobspec.OPTIONS`), so every front door derived from
the job model (command line, service, MCP, web page, batch lines) checks them, and every check
below derives its low and high from them, narrowed by the preset's models (`span`):
the tools check their arguments with `check_bounded` / `check_text`; `mora.run` checks a job's
options once against its preset (`check_options`: size multiples, frame rules); and an LLM's
tool arguments are bounded by the preset (`llm_bounds`: at most twice the preset's steps, frames,
segments and size), so one tool call cannot multiply the cost of a job. The command line keeps
only argparse types. No torch here: the CLI validates before any heavy import.
"""

from __future__ import annotations

import logging
import numbers
import secrets
from typing import Any

from mora.errors import InputError
from mora.tooltable import TOOL_ROLES, TOOL_TABLE  # TOOL_ROLES: also re-exported for older callers
from mora.validation import quote

logger = logging.getLogger(__name__)

MAX_SEED = 2**32 - 1
MAX_SIDE = 4096  # pixels a side: past this every family runs out of memory or position embeddings
MAX_STEPS = 500
MAX_FPS = 120
MAX_SEGMENTS = 16
MAX_PROMPT_CHARS = 2000  # characters of any text a job takes: prompts, stories, storyboard fields
MAX_BEST_OF = 8
# Input files are checked against these from their headers, before anything is decoded: a request's
# 13000x13000 PNG decoded to 0.5 GB (1.26 GB in all) and a 200,000-frame video to 7.9 GB.
MAX_INPUT_PIXELS = 40_000_000  # an image or a video frame: 40 MP, past any camera's default; Pillow's own bomb
# limit (179 MP) is far above it. The models work at about 1 MP, so nothing of a larger input is used anyway.
MAX_INPUT_FRAMES = 2048  # an input video: 8x the longest clip a family makes in one call (LTX's 257 frames);
# extend and edit decode their input whole: 2048 frames of 1024x576 are 3.6 GB
MAX_INPUT_SECONDS = 600.0  # an input video's declared duration: longer than a story of many shots
LLM_FACTOR = 2  # an LLM may ask for at most this multiple of the preset's steps, frames, segments and size
MIN_CLIP_FRAMES = 2  # a clip a model makes whole has a first and a last frame (frames added to a video: any count)

# The range of every number a job or a tool takes, once, as pydantic constraints. The job model's options
# hold these very dicts as their bounds (after changing one, `mora.workflows.jobspec.job_model.cache_clear()`);
# the checks below read them when they run. A preset narrows a range (a size multiple, a model's max_frames,
# LLM_FACTOR times its value) and never widens it. `num_frames` has no upper bound of its own: each model's
# `max_frames` is it. `segments` is a tool argument (chained clips of image_to_video), not a job option.
BOUNDS: dict[str, dict[str, int]] = {
    "seed": dict(ge=0, le=MAX_SEED),
    "num_frames": dict(ge=1),
    **{side: dict(ge=1, le=MAX_SIDE) for side in ("width", "height")},
    "steps": dict(ge=1, le=MAX_STEPS),
    "fps": dict(ge=1, le=MAX_FPS),
    "segments": dict(ge=1, le=MAX_SEGMENTS),
}
Span = tuple[int, int | None]  # (low, high) of a number; None: no upper bound


def check_text(value: Any, argument: str, *, required: bool = True) -> str | None:
    """A non-empty string of reasonable length, stripped (None allowed when not required).

    Example:
        >>> check_text("  a fox ", "prompt")
        'a fox'
    """
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{quote(value)} is empty or not text; pass a non-empty description", param=argument)
    if len(value) > MAX_PROMPT_CHARS:
        raise InputError(f"text of {len(value)} characters is too long; keep it under {MAX_PROMPT_CHARS}",
                         param=argument)
    return value.strip()


def check_int(value: Any, argument: str, *, low: int = 1, high: int | None = None, multiple: int | None = None,
              remainder: int = 0, hint: str = "") -> int | None:
    """An integer in [low, high]; optionally `value % multiple == remainder`. None passes through.

    `argument` is the field's name (`num_frames`): the error's `param`, which each front door spells.

    Example:
        >>> check_int(25, "num_frames", low=2, high=64)
        25
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise InputError(f"{quote(value)} is not an integer; pass a whole number{hint}", param=argument)
    value = int(value)
    if value < low or (high is not None and value > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InputError(f"{value} is out of range; pass a number {span}{hint}", param=argument)
    if multiple and value % multiple != remainder:
        below = (value - remainder) // multiple * multiple + remainder
        options = [v for v in (below, below + multiple) if v >= max(low, remainder or multiple)]
        kind = f"a multiple of {multiple}" if not remainder else f"{multiple}k+{remainder}"
        raise InputError(f"{value} is not {kind} as this model needs; use {' or '.join(map(str, options))}",
                         param=argument)
    return value


def span(name: str, *, low: int | None = None, high: int | None = None) -> Span:
    """(low, high) of the number `name` (`BOUNDS`), narrowed by a preset's `low` and `high`.

    Example:
        >>> span("steps"), span("steps", high=4), span("num_frames", low=2, high=64)
        ((1, 500), (1, 4), (2, 64))
    """
    bounds = BOUNDS[name]
    top = bounds.get("le")
    if high is not None:
        top = high if top is None else min(top, high)
    return bounds["ge"] if low is None else max(bounds["ge"], low), top


def check_bounded(value: Any, name: str, *, argument: str | None = None, low: int | None = None,
                  high: int | None = None, multiple: int | None = None, remainder: int = 0, hint: str = "") -> int | None:
    """`check_int` of the number `name` within its range (`span`: `BOUNDS`, narrowed by `low` and `high`).

    Args:
        value: the given value (None passes through).
        name: a key of `BOUNDS`; also the error's field unless `argument` names another.
        low, high, multiple, remainder, hint: the preset's narrower rules (see `check_int`).

    Example:
        >>> check_bounded(4, "steps")
        4
    """
    lo, hi = span(name, low=low, high=high)
    return check_int(value, argument or name, low=lo, high=hi, multiple=multiple, remainder=remainder, hint=hint)


def frame_rule(settings: Any, *, added: bool = False) -> dict[str, Any]:
    """`check_bounded`'s rules of `num_frames` for a video model: its max_frames and frame multiple.

    A clip the model makes whole has at least MIN_CLIP_FRAMES and, with a frame multiple m, m*k+1
    frames; frames `added` to an input video are any count (the model family rounds its own clip). A
    family with a frame multiple makes an extension in one call, which holds the frames it is
    conditioned on (`context_frames`) too: the new frames are at most max_frames less those, so the
    call (rounded to m*k+1) is never past max_frames. SVD (no multiple) chains its extensions.

    Example:
        >>> frame_rule(get_preset("ltx").spec("image_to_video").settings)
        {'low': 2, 'high': 257, 'multiple': 8, 'remainder': 1}
        >>> frame_rule(get_preset("ltx").spec("extend").settings, added=True)["high"]  # 257 less a 9-frame tail
        248
    """
    multiple = None if added else settings.frame_multiple
    high = settings.max_frames - (context_frames(settings) if added and settings.frame_multiple else 0)
    return dict(low=None if added else MIN_CLIP_FRAMES, high=high, multiple=multiple, remainder=1 if multiple else 0)


def context_frames(settings: Any) -> int:
    """Frames of the input an extension's call is conditioned on: its tail (`tail_frames`), else its last frame."""
    return getattr(settings, "tail_frames", None) or 1


def default_added_frames(settings: Any) -> int:
    """New frames an extension makes by default: one clip's worth, within what one call holds (`frame_rule`).

    A family that continues from its last frame alone (SVD, Wan 2.2) adds its clip less that frame.

    Example:
        >>> default_added_frames(get_preset("modern").spec("extend").settings)  # Wan 2.2: one 121-frame call
        120
    """
    clip = settings.num_frames if hasattr(settings, "tail_frames") else settings.num_frames - 1
    return min(clip, frame_rule(settings, added=True)["high"])


def fixed_steps(settings: Any) -> int | None:
    """The one step count of a model sampled at fixed noise levels (`dmd_sigmas`, one step each); None: any.

    Example:
        >>> fixed_steps(get_preset("modern-fast").spec("image_to_video").settings)
        3
    """
    sigmas = getattr(settings, "dmd_sigmas", None)
    return len(sigmas) if sigmas else None


def check_fixed_steps(settings: Any, steps: int | None) -> None:
    """InputError naming `steps` when a model with fixed noise levels (`fixed_steps`) is given another count."""
    n = fixed_steps(settings)
    if n is not None and steps is not None and steps != n:
        raise InputError(f"{steps} does not fit this model's {n} fixed sampling steps (dmd_sigmas "
                         f"{list(settings.dmd_sigmas)}); pass {n} or leave steps unset", param="steps")


def check_seed(seed: Any, argument: str = "seed") -> int:
    """The given seed, or a fresh random one (logged, so the run can be repeated)."""
    if seed is None:
        seed = secrets.randbelow(2**31)
        logger.info("seed not given; using %d", seed)
        return seed
    return check_bounded(seed, "seed", argument=argument)


def derive_seed(seed: int, *offsets: int) -> int:
    """A seed related to `seed` (a best-of candidate's, a regenerated image's, a shot's, a segment's):
    seed plus the offsets, wrapped modulo 2**32 so it is always a seed the tools accept.

    Every derived seed goes through here: `seed + k` past MAX_SEED would be refused by the tools
    after earlier steps had already run. Wrapping keeps the seeds deterministic and distinct.

    Example:
        >>> derive_seed(7, 1000, 2), derive_seed(MAX_SEED, 1)
        (1009, 0)
    """
    return (seed + sum(offsets)) % (BOUNDS["seed"]["le"] + 1)  # seeds are 0..le (`BOUNDS`)


def check_options(preset: Any, options: dict, *, video_tool: str) -> dict:
    """A job's numeric options checked against its preset's models (size multiples, frame rules).

    Args:
        preset: a `mora.config.Preset`.
        options: `width`, `height`, `steps`, `fps`, `num_frames` (None = the preset's value).
        video_tool: the tool that makes the job's video (its route's last tool, `mora.tooltable`):
            its preset role's frame rules apply.

    Example:
        >>> check_options(get_preset("tiny"), {"width": 96}, video_tool="image_to_video")["width"]
        96
    """
    tool = TOOL_TABLE[video_tool]
    video = preset.spec(tool.role).settings
    multiple = max(video.size_multiple, preset.spec("text_to_image").settings.size_multiple)
    opts = dict(options)
    for side in ("width", "height"):
        opts[side] = check_bounded(options.get(side), side, low=multiple, multiple=multiple,
                                   hint=f" (a multiple of {multiple} for preset {preset.name})")
    for name in ("steps", "fps"):
        opts[name] = check_bounded(options.get(name), name)
    check_fixed_steps(video, opts["steps"])  # a DMD model's steps are its noise levels
    opts["num_frames"] = check_bounded(options.get("num_frames"), "num_frames",
                                       **frame_rule(video, added=tool.added_frames))
    return opts


def llm_bounds(preset: Any, tool: str) -> dict[str, Span]:
    """(low, high) of each integer argument an LLM may give `tool`: its range (`BOUNDS`) within the tool's
    own rules, and at most LLM_FACTOR times the preset's value.

    Example:
        >>> llm_bounds(get_preset("mora"), "image_to_video")["steps"]
        (1, 50)
    """
    s = preset.spec(TOOL_ROLES[tool]).settings
    width, height = getattr(s, "width", None), getattr(s, "height", None)
    side = LLM_FACTOR * max(width or 0, height or 0, int((getattr(s, "max_area", 0) or 0) ** 0.5))
    fixed = fixed_steps(s)  # a DMD model takes its own step count only
    bounds = {"seed": span("seed"), "steps": span("steps", low=fixed, high=fixed or LLM_FACTOR * s.steps),
              **{name: span(name, low=s.size_multiple, high=side) for name in ("width", "height")}}
    if hasattr(s, "num_frames"):
        frames = frame_rule(s, added=TOOL_TABLE[tool].added_frames)
        bounds["num_frames"] = span("num_frames", low=frames["low"], high=min(LLM_FACTOR * s.num_frames, frames["high"]))
        bounds["fps"] = span("fps")
        bounds["segments"] = span("segments", high=LLM_FACTOR * getattr(s, "segments", 1))
    return bounds

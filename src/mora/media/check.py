"""Checking a user's file before models load: readable as an image, a video, or either."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mora.errors import InputError, bad_input
from mora.media.files import check_path
from mora.media.images import IMAGE_FIX, open_image
from mora.media.video import VIDEO_FIX, check_video_limits, probe_video

_FIXES = {"image": IMAGE_FIX, "video": VIDEO_FIX}
_KIND_WORDS = {"image": "an image", "video": "a video"}


def check_file(path: str | os.PathLike, *, argument: str, kinds: tuple[str, ...] = ("image",)) -> Path:
    """Check that `path` is a readable file of one of `kinds` ("image", "video"), before models load.

    Opens the file as far as needed to be sure: images are fully decoded, videos are probed
    (decoded without colour conversion) so truncated files fail here rather than after minutes
    of model loading. The sizes (`mora.limits.MAX_INPUT_PIXELS`, `MAX_INPUT_FRAMES`,
    `MAX_INPUT_SECONDS`) are checked from the header first, so an oversized input costs nothing.

    Args:
        path: the path as the user gave it.
        argument: the argument name used in error messages, e.g. "image" or "video_a".
        kinds: the kinds accepted; the file must be readable as at least one.

    Returns:
        The path (with `~` expanded).

    Raises:
        InputError: naming `argument`, the path and the fix.

    Example:
        >>> check_file("cat.png", argument="image")  # doctest: +SKIP
        PosixPath('cat.png')
    """
    unknown = [k for k in kinds if k not in _FIXES]
    if not kinds or unknown:
        raise ValueError(f"kinds must be a non-empty subset of {tuple(_FIXES)}, got {kinds!r}")
    fix = _fix_for(kinds)
    p = check_path(path, argument, fix)
    errors: list[InputError] = []
    for kind in kinds:
        try:
            if kind == "image":
                open_image(p, path, argument)
            else:
                check_video_limits(p, argument=argument)  # from the header, before the probe decodes it all
                probe_video(p, argument=argument)
            return p
        except InputError as err:
            errors.append(err)
    if len(errors) == 1:
        raise errors[0]
    words = " or ".join(_KIND_WORDS[k] for k in kinds)
    raise bad_input(
        argument, str(path), f"is not readable as {words} (truncated or another kind of file)", fix
    )


def _fix_for(kinds: Iterable[str]) -> str:
    kinds = tuple(kinds)
    if kinds == ("image",) or kinds == ("video",):
        return _FIXES[kinds[0]]
    return "pass a PNG, JPEG, WebP or GIF image or an MP4, WebM, MOV or MKV video"

"""The one containment check: is a path inside a folder (a job's folder, `--inputs-dir`, a data set).

Its own small module at the bottom layer, beside `errors`, so the service and the MCP server use it
without importing `mora.media` (numpy, PIL) at start.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` is `folder` or under it, symlinks resolved.

    Both sides are resolved first, so neither a symlink that points out of the folder nor a `..` that
    climbs out of it passes (`/out/job/../other` starts with `/out/job` as text), and a symlinked
    folder still holds its own files. A relative `path` is taken from the working directory, as
    `open` would; a missing path is fine: resolution needs no file.

    Example:
        >>> is_inside("/srv/out/job1/video.mp4", "/srv/out/job1"), is_inside("/srv/out/job1/../job2", "/srv/out/job1")
        (True, False)
    """
    return Path(path).resolve().is_relative_to(Path(folder).resolve())

"""Atomic files: a temp file beside the destination, then `os.replace`; and the path checks every reader shares.

Readers see the old file or the complete new one, never half of one; a failed or interrupted
write leaves nothing at the destination.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mora.errors import bad_input


def check_path(path: str | os.PathLike, argument: str, fix: str) -> Path:
    """File-system checks shared by every reader: exists, is a file, is not empty, is readable."""
    if not isinstance(path, (str, os.PathLike)):
        raise bad_input(argument, path, f"is a {type(path).__name__}, not a path", fix)
    shown = os.fspath(path)
    p = Path(path).expanduser()
    if not p.exists():
        raise bad_input(argument, shown, "does not exist", "check the path")
    if p.is_dir():
        raise bad_input(argument, shown, "is a directory", "pass a file")
    if not p.is_file():
        raise bad_input(argument, shown, "is not a regular file", fix)
    if not os.access(p, os.R_OK):
        raise bad_input(
            argument, shown, "is not readable (permission denied)", "check the file's permissions"
        )
    if p.stat().st_size == 0:
        raise bad_input(argument, shown, "is empty (0 bytes)", fix)
    return p


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write `obj` as indented JSON, atomically; values JSON cannot hold are written with `str`.

    Example:
        >>> write_json({"task": "extend", "out": Path("a.mp4")}, "outputs/a.json")  # doctest: +SKIP
        PosixPath('outputs/a.json')
    """
    text = json.dumps(obj, indent=2, default=str) + "\n"  # serialize first: a failure writes nothing
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path next to `path`; move it onto `path` on success, delete it on failure.

    The temp file lives in the destination's directory, so the final `os.replace` is atomic: readers
    see the old file or the complete new one, never half of one, and a failed or interrupted write
    leaves nothing at `path`. Parent directories are created.

    Args:
        path: the destination.
        suffix: the temp file's suffix (tools like ffmpeg pick the format from it); defaults to
            `path`'s suffix.

    Example:
        >>> with atomic_path("out/report.txt") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("done")
    """
    dest = Path(path).expanduser()
    shown = os.fspath(path)
    if dest.is_dir():
        raise bad_input("out", shown, "is a directory", "pass a file path")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise bad_input(
            "out", shown, f"cannot be created ({err.strerror or err})", "choose a writable location"
        ) from err
    suffix = dest.suffix if suffix is None else suffix
    tmp = _create_temp(dest, suffix)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:  # also Ctrl-C: an interrupted run must leave no partial file
        tmp.unlink(missing_ok=True)
        raise


def _create_temp(dest: Path, suffix: str) -> Path:
    # os.open with mode 0o666 lets the umask decide permissions like a normal write would
    # (tempfile.mkstemp would leave the final file at 0600).
    for _ in range(100):
        tmp = dest.with_name(f".{dest.stem}.{secrets.token_hex(4)}.tmp{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as err:
            raise bad_input(
                "out",
                os.fspath(dest),
                f"cannot be written ({err.strerror or err})",
                "choose a writable location",
            ) from err
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temp file next to {dest}")

"""Weights that are here but cannot be read: a corrupt file, a full or failing disk, no permission.

`read_weights` is every `from_pretrained` of the runtime: such a failure is `ModelLoadError`, named
as what it is, while a missing model (not cached, not a folder, the Hub unreachable) keeps its own
error ("not available", `mora.tools.weights.from_pretrained`).
"""

from __future__ import annotations

import errno
import pickle
from pathlib import Path
from typing import Any

from mora.errors import ModelLoadError, one_line

# OS errors that say the files are there (or being written) but the file system cannot serve them, with the
# fix; a network error carries other errnos (ECONNREFUSED, ...) and a missing file ENOENT: "not available"
_FILE_SYSTEM_ERRNOS = {getattr(errno, name): what_fix for name, what_fix in (
    ("ENOSPC", ("the disk is full", "free space on that disk (or point HF_HOME/MORA_HOME at another) and run again")),
    ("EDQUOT", ("the disk quota is used up", "free space in your quota and run again")),
    ("EROFS", ("the file system is read-only", "point HF_HOME/MORA_HOME at a writable folder")),
    ("EIO", ("the disk reported an I/O error", "check the disk, then delete the model's files and download it again")),
    ("EFBIG", ("a file is too large for the file system", "point HF_HOME at a file system that takes large files")),
) if hasattr(errno, name)}
_CORRUPT = ("a weights file is corrupt or truncated", "download it again: hf download {model} --force-download")
_CORRUPT_FOLDER = {True: "delete {path}: it is built again on the next run",  # a tiny model
                   False: "save or download the model into that folder again"}
_DENIED = ("permission denied", "make the model's files readable (and its cache writable) by this user")


def unreadable(error: BaseException) -> tuple[BaseException, str, str] | None:
    """The error in `error`'s chain that says a model's weights are here but cannot be read, what that
    means in words and the fix; None when nothing says so (a missing model: not in the cache, not a directory,
    the Hub unreachable).

    A corrupt or truncated weights file is safetensors' or pickle's error (diffusers wraps it in an
    `OSError`, transformers does not); a full disk, a read-only or failing file system are their errnos;
    a permission error on a named file (a socket's has no file name).
    """
    from safetensors import SafetensorError

    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, SafetensorError | pickle.UnpicklingError):
            return (link, *_CORRUPT)
        if isinstance(link, OSError) and link.errno in _FILE_SYSTEM_ERRNOS:
            return (link, *_FILE_SYSTEM_ERRNOS[link.errno])
        if isinstance(link, PermissionError) and link.filename:
            return (link, *_DENIED)
        link = link.__cause__ or link.__context__
    return None


def read_weights(cls: Any, model: str, source: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(source, **kwargs)`; weights that are here but unreadable raise `ModelLoadError`."""
    try:
        return cls.from_pretrained(source, **kwargs)
    except Exception as error:  # noqa: BLE001 - re-raised as is unless its chain says "unreadable"
        found = unreadable(error)
        if found is None:
            raise
        cause, what, fix = found
        path = next((str(e.filename) for e in (cause, error) if isinstance(e, OSError) and e.filename), None)
        folder = Path(source).is_dir()
        path = path or (source if folder else None)
        if what == _CORRUPT[0] and folder:
            fix = _CORRUPT_FOLDER[model.startswith("tiny/")]
        lines = dict.fromkeys(one_line(e, limit=200) for e in (error, cause))
        raise ModelLoadError(f"model {model!r} could not be read{f' at {path}' if path else ''}: {what} "
                             f"({'; '.join(lines)}); {fix.format(model=model, path=source)}") from error

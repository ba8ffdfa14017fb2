"""How files cross the web page (`mora ui`, and `/ui` under `mora serve`): only through gradio's upload cache.

A file input must be one the page's gradio /upload received: a path a client writes in gradio's
FileData (`{"path": "/any/file", "meta": {"_type": "gradio.FileData"}}`) is refused. A job's
outputs are copied into that cache (gradio's content hash with its secret seed: another session
cannot guess the name) before the page shows them, so gradio serves nothing by a server path: not
the job folders, not the service's database.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from mora.paths import is_inside


def file_access(blocked: Iterable[str | Path]) -> dict:
    """gradio's file rules (`Blocks.launch` / `gr.mount_gradio_app` keywords): no folder served by path,
    and `blocked` refused even if GRADIO_ALLOWED_PATHS names it (blocked_paths win over allowed ones)."""
    return {"allowed_paths": [], "blocked_paths": [str(Path(p).resolve()) for p in blocked]}


def received(demo: gr.Blocks | None, value: Any, name: str) -> str | None:
    """The path of a file `demo`'s gradio /upload received (None if empty); a gr.Error naming the input
    for any other path.

    gradio refuses other paths itself once the Blocks is launched (`mora serve` marks its mounted page
    so); this second guard holds without it: the file must be in the page's upload record
    (`Blocks.upload_file_set`), inside gradio's upload folder, symlinks resolved.
    """
    if not value:
        return None
    from gradio.utils import get_upload_folder

    path = str(value if isinstance(value, str) else getattr(value, "name", value))
    real = Path(path).resolve()
    uploads = demo.upload_file_set if demo is not None else set()
    if is_inside(real, get_upload_folder()) and (
            path in uploads or any(Path(p).resolve() == real for p in uploads)):
        return path
    label = name.replace("_", " ").capitalize()
    raise gr.Error(f"{name}: {real.name[:40]!r} is not a file uploaded to this page; upload it with the "
                   f"{label} field", duration=None)


def cached(updates: Iterator[tuple], files: tuple[int, ...]) -> Iterator[tuple]:
    """The updates as the page shows them: each file at a position in `files` replaced by its copy in
    gradio's cache (gradio's own content-addressed copy), the only folder the page serves from."""
    from gradio.processing_utils import save_file_to_cache
    from gradio.utils import get_upload_folder

    for update in updates:
        yield tuple(save_file_to_cache(v, cache_dir=get_upload_folder()) if i in files and isinstance(v, (str, Path))
                    and v else v for i, v in enumerate(update))


def owner(request: gr.Request | None) -> str | None:
    """The API key's owner of the HTTP request that started the event (`mora serve`'s auth sets
    `request.state.owner`), or None (loopback without keys, `mora ui`, a Python caller)."""
    http = getattr(request, "request", None)  # gr.Request wraps the starlette request that queued the event
    return getattr(getattr(http, "state", None), "owner", None) or None

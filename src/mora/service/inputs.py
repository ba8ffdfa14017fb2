"""A submitted job's input files: uploads, `job:<id>` references and server paths, placed in `<job>/inputs/`.

A job runs from its own `inputs/` folder alone: an upload is moved there, an earlier job's video
copied there (so deleting that job changes nothing), and a server path is allowed only under
`--inputs-dir` (or from a local front door such as stdio MCP). Outputs go beside `inputs/`, never
into it, so a requeued job starts from what it was given.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mora.errors import InputError
from mora.paths import is_inside
from mora.validation import quote
from mora.workflows.tasks import FILE_KINDS

JOB_REF = "job:"  # `job:<id>`: an earlier job's video as an input
INPUTS = "inputs"  # `<job>/inputs/`: the job's input files, never overwritten by its outputs


def place_files(store: Any, data: dict, kinds: dict, files: dict[str, Path], inputs: Path, owner: str) -> dict:
    """Uploads moved into `inputs`, `job:<id>` copied there, server paths allowed only under inputs_dir."""
    data = dict(data)
    for name, kind in kinds.items():
        value = data.get(name)
        if kind not in FILE_KINDS or not isinstance(value, str):
            continue
        if name in files:
            src = Path(files[name])
            dest = inputs / f"{name}{src.suffix.lower()}"
            shutil.move(src, dest)
            data[name] = str(dest)
        elif value.startswith(JOB_REF):
            data[name] = job_video(store, name, kind, value[len(JOB_REF):], inputs, owner)
        else:
            data[name] = server_path(store, name, value)
    return data


def job_video(store: Any, name: str, kind: str, ref: str, inputs: Path, owner: str) -> str:
    """An earlier job's video as this job's own input file (its first frame for an image input), so
    the job runs from its inputs even if that job is deleted meanwhile."""
    row = store.get(ref, owner=owner)
    if row is None:
        raise InputError(f"{quote(JOB_REF + ref)} is not a job of this server; pass the id of an earlier job",
                         param=name)
    if row.status != "completed" or not row.video:
        raise InputError(f"job:{ref} is {row.status}, not completed; wait for it to complete or pass another job",
                         param=name)
    if kind != "image":
        dest = inputs / f"{name}{Path(row.video).suffix}"
        shutil.copyfile(row.video, dest)
        return str(dest)
    from mora import media  # an image input takes the earlier video's first frame

    return str(media.write_image(media.read_frame(row.video, 0, argument=name), inputs / f"{name}.png"))


def server_path(store: Any, name: str, value: str) -> str:
    """A path a job names on the server: any on a local front door, else only under `--inputs-dir`."""
    path = Path(value).expanduser()
    if store.any_path:
        return str(path)
    if store.inputs_dir is not None and is_inside(path, store.inputs_dir):
        return str(path.resolve())
    where = f", or a path under {store.inputs_dir}" if store.inputs_dir else ""
    raise InputError(f"{quote(value)} is a path on the server, which a request may not name; upload "
                     f"the file or pass job:<id> of an earlier job{where}", param=name)

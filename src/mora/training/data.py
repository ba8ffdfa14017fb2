"""Training data: a folder of videos with `metadata.jsonl` (the Hugging Face videofolder layout).

Each line of `DIR/metadata.jsonl` is `{"file_name": "clip.mp4", "text": "..."}`. Every line is
checked before training starts (all of them, so one run reports every problem): bad JSON, a
missing or undecodable file, an empty text, a duplicate file, a clip shorter than the training
clip. Windows are taken at the training frame rate (`--train-fps`, default the preset's SVD fps):
every `stride`-th frame, stride = round(clip fps / train fps), so SVD learns the motion per frame
that inference asks of it (a 24 fps clip trained at 7 fps takes every 3rd frame). The data order is a pure function of (seed, step): a seeded permutation per epoch, so a
resumed run sees exactly the clips the uninterrupted one would have.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mora import media
from mora.errors import InputError
from mora.paths import is_inside

logger = logging.getLogger(__name__)

METADATA = "metadata.jsonl"
SHOWN_ERRORS = 10  # bad lines listed in the error message (the log has them all)


@dataclass(frozen=True)
class Clip:
    """One checked line of `metadata.jsonl`.

    Args:
        path: the video file.
        text: its caption (the prompt the image agent learns it from).
        line: the line number in `metadata.jsonl` (1-based).
        num_frames: decodable frames.
        fps: frame rate from the file's metadata.
        stride: a training window takes every `stride`-th frame (`frame_stride`).
    """

    path: Path
    text: str
    line: int
    num_frames: int
    fps: float
    stride: int = 1

    def span(self, frames: int) -> int:
        """Source frames a window of `frames` training frames covers."""
        return (frames - 1) * self.stride + 1


def frame_stride(clip_fps: float, train_fps: float | None) -> int:
    """Every how many source frames a window takes one, to sample a clip at `train_fps` (None: every frame).

    A clip slower than `train_fps` (or of unknown rate) is read frame by frame.

    Example:
        >>> frame_stride(24, 7), frame_stride(30, 7), frame_stride(8, 7), frame_stride(24, None)
        (3, 4, 1, 1)
    """
    if not train_fps or clip_fps <= 0:
        return 1
    return max(1, round(clip_fps / train_fps))


def check_dataset(data: str | os.PathLike, train_frames: int, train_fps: float | None = None) -> list[Clip]:
    """Read and check every line of `data/metadata.jsonl`; return the clips in file order.

    Args:
        data: the data folder.
        train_frames: frames per training clip; videos shorter than the window spans are errors.
        train_fps: the rate windows are sampled at (each clip's `stride`); None: every frame.

    Raises:
        InputError: no folder or no metadata file, no lines, or bad lines (the first ten listed, with the fix).

    Example:
        >>> clips = check_dataset("data/clips", train_frames=14)  # doctest: +SKIP
        >>> clips[0].text
        'a red fox running through snow'
    """
    root = Path(data).expanduser()
    if not root.is_dir():
        raise InputError(f"--data: {os.fspath(data)!r} is not a folder; pass a folder of videos with {METADATA}")
    meta = root / METADATA
    if not meta.is_file():
        raise InputError(f"--data: {os.fspath(data)!r} has no {METADATA}; write one line per clip: "
                         '{"file_name": "clip.mp4", "text": "what happens in the clip"}')
    entries, problems = _parse_lines(root, meta)
    probed = _probe_all([path for _, path, _ in entries])
    clips = []
    for (line, path, text), result in zip(entries, probed, strict=True):
        if isinstance(result, str):
            problems.append((line, result))
            continue
        clip = Clip(path=path, text=text, line=line, num_frames=result[0], fps=result[1],
                    stride=frame_stride(result[1], train_fps))
        if clip.num_frames < clip.span(train_frames):
            needed = f"--train-frames {train_frames}" if clip.stride == 1 else (
                f"the {clip.span(train_frames)} that --train-frames {train_frames} spans at --train-fps "
                f"{train_fps:g} (every {clip.stride} of its {clip.fps:g} fps)")
            problems.append((line, f"{path.name!r} has {clip.num_frames} frames, fewer than {needed}"))
        else:
            clips.append(clip)
    if problems:
        raise _bad_lines(meta, sorted(problems), train_frames, train_fps)
    if not clips:
        raise InputError(f"--data: {os.fspath(meta)!r} lists no clips; add one line per video")
    logger.info("data: %d clips checked in %s", len(clips), meta)
    return clips


def _parse_lines(root: Path, meta: Path) -> tuple[list[tuple[int, Path, str]], list[tuple[int, str]]]:
    entries: list[tuple[int, Path, str]] = []
    problems: list[tuple[int, str]] = []
    seen: dict[Path, int] = {}
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"--data: {os.fspath(meta)!r} cannot be read ({err}); write it as UTF-8 JSON lines") from err
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            problems.append((number, "is not JSON"))
            continue
        name = row.get("file_name") if isinstance(row, dict) else None
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(name, str) or not name.strip():
            problems.append((number, "has no file_name"))
            continue
        path = (root / name).resolve()
        if not is_inside(path, root):
            problems.append((number, f"{name!r} is outside the data folder"))
            continue
        if not isinstance(text, str) or not text.strip():
            problems.append((number, f"{name!r} has an empty text"))
            continue
        if path in seen:
            problems.append((number, f"{name!r} duplicates line {seen[path]}"))
            continue
        seen[path] = number
        entries.append((number, path, " ".join(text.split())))
    return entries, problems


def _probe_all(paths: list[Path]) -> list[tuple[int, float] | str]:
    """(frames, fps) per file or the problem as text; ffmpeg runs in threads (it is a subprocess)."""

    def probe(path: Path) -> tuple[int, float] | str:
        if not path.is_file():
            return f"{path.name!r} is missing"
        try:
            _, _, fps, frames = media.probe_video(path, argument="file_name")
        except InputError:
            return f"{path.name!r} cannot be decoded as a video"
        return frames, fps

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        return list(pool.map(probe, paths))


def _bad_lines(meta: Path, problems: list[tuple[int, str]], train_frames: int,
               train_fps: float | None) -> InputError:
    for line, problem in problems:
        logger.debug("%s line %d: %s", meta, line, problem)  # the error lists them (one line)
    shown = "; ".join(f"line {line}: {problem}" for line, problem in problems[:SHOWN_ERRORS])
    more = f" (and {len(problems) - SHOWN_ERRORS} more)" if len(problems) > SHOWN_ERRORS else ""
    return InputError(
        f"--data: {len(problems)} bad line(s) in {os.fspath(meta)!r}: {shown}{more}; fix or remove them: "
        f'each line needs {{"file_name": ..., "text": ...}} naming a decodable video of at least '
        f"{train_frames} frames{' at --train-fps ' + format(train_fps, 'g') if train_fps else ''} in the folder, "
        "once, with a non-empty text (or lower --train-frames or raise --train-fps)"
    )


def batch_indices(step: int, batch_size: int, num_clips: int, seed: int) -> list[int]:
    """Clip indices of training step `step` (0-based): epoch-wise seeded permutations, stateless.

    Example:
        >>> batch_indices(0, 2, 3, seed=0) == batch_indices(0, 2, 3, seed=0)
        True
    """
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, position = divmod(k, num_clips)
        order = np.random.default_rng([seed, epoch]).permutation(num_clips)
        out.append(int(order[position]))
    return out


@dataclass(frozen=True)
class ClipFrames:
    """A training window of one clip and where it came from (SDXL's size and crop micro-conditioning).

    Args:
        frames: (T, H, W, 3) uint8 at the training size.
        source_size: (height, width) of the video file's frames.
        crop_top_left: (top, left) of the crop in the resized frame (diffusers' SDXL scripts' `crop_top_left`).
    """

    frames: np.ndarray
    source_size: tuple[int, int]
    crop_top_left: tuple[int, int]


def load_clip(clip: Clip, *, frames: int, size: tuple[int, int], seed: int, step: int) -> ClipFrames:
    """`frames` frames of `clip`, every `clip.stride`-th, cover-resized to `size` and centre-cropped.

    The window's start is drawn from (seed, step, line), so a resumed run reads the same frames.
    Frames are decoded one at a time up to the window's end and only the window is kept: a step
    costs its window, not the whole clip (a 10 s clip at 30 fps is 300 frames to decode and hold).
    """
    start = window_start(clip, frames, seed, step)
    window = list(itertools.islice(media.iter_frames(clip.path, argument="file_name"), start,
                                   start + clip.span(frames), clip.stride))
    if len(window) < frames:  # the file changed since the check
        raise InputError(f"--data: {clip.path.name!r} now has fewer than {start + clip.span(frames)} frames, not "
                         f"the {clip.num_frames} it had when checked; restore the file or remove its line")
    return cover_crop(np.stack(window), size)


def window_start(clip: Clip, frames: int, seed: int, step: int) -> int:
    """The first frame of step `step`'s window of `clip`: drawn from (seed, step, line), so a resumed run
    (and a cached one) reads the same frames."""
    return int(np.random.default_rng([seed, step, clip.line]).integers(0, clip.num_frames - clip.span(frames) + 1))


def cover_crop(window: np.ndarray, size: tuple[int, int]) -> ClipFrames:
    """Resize (T, h, w, 3) frames so they cover `size` (no distortion, no borders), then centre-crop.

    Written out rather than `ImageOps.fit`, because SDXL is conditioned on the crop's offset, which
    is computed here as diffusers' SDXL training scripts do: resize, then crop (round((h' - H) / 2), ...).
    """
    width, height = size
    source = (int(window.shape[1]), int(window.shape[2]))
    if source == (height, width):
        return ClipFrames(window, source, (0, 0))
    scale = max(width / source[1], height / source[0])
    resized = (max(width, round(source[1] * scale)), max(height, round(source[0] * scale)))
    top, left = round((resized[1] - height) / 2), round((resized[0] - width) / 2)
    out = np.stack([np.asarray(Image.fromarray(f).resize(resized, Image.Resampling.LANCZOS))[top:top + height,
                                                                                           left:left + width]
                    for f in window])
    return ClipFrames(out, source, (top, left))

"""Reading, checking and writing images and videos: the only place Mora touches media files.

Images go through PIL, videos through imageio's ffmpeg plugin (the ffmpeg binary bundled with
imageio-ffmpeg), GIFs through PIL. Every problem with a user's file becomes an `InputError` that
names the argument, the path as given and the fix; raw imageio/PIL/ffmpeg errors never escape for
bad input. Every write is atomic: a temp file in the destination's directory, then `os.replace`.

This module must stay light: numpy, PIL and (lazily) imageio; never torch.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import re
import secrets
import struct
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, ImageSequence

from mora.errors import InputError, bad_input

logger = logging.getLogger(__name__)

#: Frame rate used when a video's metadata has none (or nonsense).
DEFAULT_VIDEO_FPS = 24.0
#: Frame rate used when a GIF's frames have no usable duration; browsers do the same.
DEFAULT_GIF_FPS = 10.0
#: Rates outside (0, MAX_FPS] are treated as broken metadata.
MAX_FPS = 1000.0
#: x264 constant rate factor: 17-18 is visually lossless for most content.
H264_CRF = 18

_IMAGE_FIX = "pass a PNG, JPEG, WebP, GIF or BMP file"
_VIDEO_FIX = "pass an MP4, WebM, MOV, MKV, AVI or GIF file"
_FIXES = {"image": _IMAGE_FIX, "video": _VIDEO_FIX}
_KIND_WORDS = {"image": "an image", "video": "a video"}

# ffmpeg log lines that mean the file is cut short or damaged, not merely quirky. Other error
# lines (e.g. "co located POCs unavailable" in streams cut mid-GOP) are common in files that play
# fine, so they are logged, not fatal.
_FATAL_FFMPEG = (
    "partial file",
    "ended prematurely",
    "truncat",
    "invalid data found when processing input",
    "moov atom not found",
    "corrupt",
    "premature",
)


# PIL signals bad data with all of these (SyntaxError from some decoders, struct.error from broken
# EXIF, IndexError from broken palettes, ...). None of them is a bug of ours for a file we only read.
_PIL_BAD_DATA = (OSError, ValueError, SyntaxError, EOFError, KeyError, IndexError, TypeError, struct.error)


@dataclass
class Video:
    """Decoded video frames and their rate.

    Args:
        frames: `(T, H, W, 3)` uint8 RGB array.
        fps: frames per second.

    Example:
        >>> v = Video(np.zeros((4, 48, 64, 3), np.uint8), fps=8.0)
        >>> (v.num_frames, v.width, v.height)
        (4, 64, 48)
    """

    frames: np.ndarray
    fps: float

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
            desc = f"{f.dtype} {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
            raise ValueError(f"Video.frames must be a (T, H, W, 3) uint8 array, got {desc}")

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def pil_frames(self) -> list[Image.Image]:
        """The frames as RGB PIL images (copies; editing them does not change `frames`)."""
        return [Image.fromarray(frame) for frame in self.frames]


# --------------------------------------------------------------------------------------------
# Checks


def check_file(path: str | os.PathLike, *, argument: str, kinds: tuple[str, ...] = ("image",)) -> Path:
    """Check that `path` is a readable file of one of `kinds` ("image", "video"), before models load.

    Opens the file as far as needed to be sure: images are fully decoded, videos are probed
    (decoded without colour conversion) so truncated files fail here rather than after minutes
    of model loading.

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
    p = _check_path(path, argument, fix)
    errors: list[InputError] = []
    for kind in kinds:
        try:
            if kind == "image":
                _open_image(p, path, argument)
            else:
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


def _check_path(path: str | os.PathLike, argument: str, fix: str) -> Path:
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


# --------------------------------------------------------------------------------------------
# Images


def read_image(path: str | os.PathLike, *, argument: str = "image") -> Image.Image:
    """Read any PNG/JPEG/WebP/GIF/BMP image as an upright RGB PIL image.

    Any mode is accepted (RGBA, LA, L, P, P with transparency, I;16, CMYK, ...). Transparency is
    composited over white, EXIF orientation is applied, and for animated files the first frame
    is used. The whole file is decoded here, so truncated files fail here.

    Args:
        path: the image file.
        argument: the argument name used in error messages.

    Raises:
        InputError: the file is missing, empty, not an image, truncated or in an unusable mode.

    Example:
        >>> img = read_image("cat.png")  # doctest: +SKIP
        >>> img.mode
        'RGB'
    """
    p = _check_path(path, argument, _IMAGE_FIX)
    return _open_image(p, path, argument)


def _open_image(p: Path, shown: str | os.PathLike, argument: str) -> Image.Image:
    unreadable = bad_input(
        argument, os.fspath(shown), "is not a readable image (truncated or not an image file)", _IMAGE_FIX
    )
    try:
        with Image.open(p) as img:
            img.seek(0)  # first frame of GIF/WebP/APNG animations
            img.load()  # decode everything now so a truncated file fails here, not later
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except Image.DecompressionBombError as err:
        raise bad_input(
            argument, os.fspath(shown), f"is too large to decode safely ({err})", "pass a smaller image"
        ) from err
    except PermissionError as err:
        raise bad_input(
            argument, os.fspath(shown), "is not readable (permission denied)", "check the file's permissions"
        ) from err
    except _PIL_BAD_DATA as err:
        logger.debug("PIL could not read %s: %r", p, err)
        raise unreadable from err


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB, compositing transparency over white.

    White, not black: transparent pixels usually store black RGB, so dropping alpha turns logos and
    stickers into dark blobs; a white page is what the author saw behind them, and what the image
    models (trained on opaque photos) handle best.
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _high_depth_to_l(img)
        mode = "L"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float greyscale to 8-bit L by scaling, since PIL's convert() clips to 255."""
    a = np.asarray(img)
    if img.mode.startswith("I;16"):
        a = a.astype(np.float64) / 257.0
    elif img.mode == "F":
        a = a.astype(np.float64)
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
    else:  # "I": 32-bit ints; PNG 16-bit greyscale opens as "I" in some Pillow versions
        a = a.astype(np.float64)
        a = a / 257.0 if np.nanmax(a, initial=0.0) > 255 else a
    out = Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8))
    if "transparency" in img.info:
        logger.debug("dropping the transparency key of a %s image", img.mode)
    return out


def write_image(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write a PIL image as PNG, atomically; creates parent directories.

    Args:
        image: any PIL image; modes PNG cannot store (e.g. CMYK) are converted to RGB.
        path: the destination (PNG bytes whatever the suffix).

    Example:
        >>> write_image(Image.new("RGB", (64, 64)), "outputs/first_frame.png")  # doctest: +SKIP
        PosixPath('outputs/first_frame.png')
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"write_image needs a PIL image, got {type(image).__name__}")
    if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        image = _to_rgb(image)
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


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


# --------------------------------------------------------------------------------------------
# Videos


def _is_gif(p: Path) -> bool:
    with open(p, "rb") as fh:
        return fh.read(6) in (b"GIF87a", b"GIF89a")


def _sane_fps(fps: Any) -> bool:
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        return False
    return math.isfinite(fps) and 0 < fps <= MAX_FPS


def _video_fps(meta: dict, p: Path) -> float:
    fps = meta.get("fps")
    if _sane_fps(fps):
        return float(fps)
    logger.warning("%s: frame rate in the metadata is %r; assuming %g fps", p, fps, DEFAULT_VIDEO_FPS)
    return DEFAULT_VIDEO_FPS


def _gif_fps(durations_ms: list[float], p: Path) -> float:
    # Browsers play 0 and 10 ms frame delays at 100 ms, so a GIF without a usable delay runs at 10 fps.
    usable = [d for d in durations_ms if d and d > 10]
    if not usable:
        logger.debug("%s: no usable GIF frame delay; assuming %g fps", p, DEFAULT_GIF_FPS)
        return DEFAULT_GIF_FPS
    return 1000.0 / (sum(usable) / len(usable))


def _read_gif(p: Path, shown: str | os.PathLike, argument: str, decode: bool = True):
    """(frames or None, size, fps, count) of a GIF, via PIL."""
    try:
        with Image.open(p) as img:
            frames, durations = [], []
            for frame in ImageSequence.Iterator(img):
                frame.load()
                durations.append(float(frame.info.get("duration") or 0))
                if decode:
                    frames.append(np.asarray(_to_rgb(frame)))
            size = img.size
    except Image.DecompressionBombError as err:
        raise bad_input(
            argument, os.fspath(shown), f"is too large to decode safely ({err})", "pass a smaller GIF"
        ) from err
    except _PIL_BAD_DATA as err:
        logger.debug("PIL could not read GIF %s: %r", p, err)
        raise _unreadable_video(argument, shown) from err
    if not durations:
        raise _no_frames(argument, shown)
    return frames if decode else None, size, _gif_fps(durations, p), len(durations)


def _unreadable_video(argument: str, shown: str | os.PathLike) -> InputError:
    return bad_input(
        argument, os.fspath(shown), "is not a readable video (truncated or not a video file)", _VIDEO_FIX
    )


def _no_frames(argument: str, shown: str | os.PathLike) -> InputError:
    return bad_input(
        argument, os.fspath(shown), "has no video frames", "pass a video with at least one frame"
    )


def _ffmpeg_scan(p: Path, shown: str | os.PathLike, argument: str) -> int:
    """Decode the first video stream to nowhere; return its frame count or raise InputError.

    This is what catches damage: ffmpeg reads a truncated MP4 whose index is at the front
    (`+faststart`, which is how Mora writes them) without failing, it just stops early, and
    imageio's reader returns the frames it got. Only ffmpeg's log says the file is cut short.
    """
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    # "file:" so a name like "concat:x.mp4" is read as a file, never as an ffmpeg protocol.
    tail = ["-progress", "pipe:1", "-i", f"file:{p.resolve()}", "-map", "0:v:0", "-f", "null", "-"]
    # "level+info" tags each log line with its level ("[error]"); ffmpeg < 4.4 lacks the flag.
    proc = _run_ffmpeg([exe, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info", *tail])
    tagged = not (proc.returncode != 0 and b"level+info" in proc.stderr)
    if not tagged:
        proc = _run_ffmpeg([exe, "-hide_banner", "-nostdin", "-nostats", *tail])
    log = proc.stderr.decode("utf-8", errors="replace")
    progress = proc.stdout.decode("utf-8", errors="replace")
    lines = [line.strip() for line in log.splitlines()]
    if tagged:
        errors = [line for line in lines if re.search(r"\[(error|fatal|panic)\]", line)]
        warnings = [line for line in lines if "[warning]" in line]
    else:  # untagged: component lines ("[h264 @ 0x...] ...") are the candidates
        errors, warnings = [line for line in lines if line.startswith("[") and "[out#" not in line], []
    fatal = [line for line in errors if any(m in line.lower() for m in _FATAL_FFMPEG)]
    if fatal:
        logger.debug("ffmpeg on %s: %s", p, " | ".join(fatal[:5]))
        raise _unreadable_video(argument, shown)
    if proc.returncode != 0:
        logger.debug("ffmpeg on %s exited %d: %s", p, proc.returncode, log[-2000:])
        if "matches no streams" in log:  # a container with no video stream (audio only, empty)
            raise _no_frames(argument, shown)
        raise _unreadable_video(argument, shown)
    demuxer = re.search(r"Input #0, ([^ ]+), from", log)  # the container ffmpeg detected
    if demuxer and (demuxer.group(1).endswith("_pipe") or demuxer.group(1) == "image2"):
        raise bad_input(
            argument,
            os.fspath(shown),
            "is a still image, not a video",
            f"{_VIDEO_FIX} (or pass the image as an image)",
        )
    if errors:
        logger.warning("ffmpeg reported errors decoding %s: %s", p, " | ".join(errors[:3]))
    elif warnings:
        logger.debug("ffmpeg warnings decoding %s: %s", p, " | ".join(warnings[:3]))
    counts = re.findall(r"^frame=\s*(\d+)", progress, flags=re.MULTILINE)
    num_frames = int(counts[-1]) if counts else 0
    if num_frames == 0:
        raise _no_frames(argument, shown)
    return num_frames


def _run_ffmpeg(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, check=False)
    except OSError as err:  # the ffmpeg binary itself is missing or broken: ours, not the user's
        raise RuntimeError(f"could not run ffmpeg ({cmd[0]}): {err}") from err


def _open_reader(p: Path, shown: str | os.PathLike, argument: str):
    import imageio.v2 as iio

    try:
        return iio.get_reader(p, format="FFMPEG")
    except (OSError, RuntimeError, ValueError, IndexError, KeyError, AttributeError) as err:
        # imageio-ffmpeg parses ffmpeg's header text; odd files fail in odd places.
        logger.debug("imageio could not open %s: %r", p, err)
        raise _unreadable_video(argument, shown) from err


def probe_video(path: str | os.PathLike, *, argument: str = "video") -> tuple[int, int, float, int]:
    """(width, height, fps, num_frames) of a video, without converting frames to RGB.

    Used to validate inputs before models load: a missing, empty, truncated or frameless file
    raises here. Much cheaper than `read_video` (one decode to nowhere, nothing kept in memory).

    Args:
        path: the video file (MP4, WebM, MOV, MKV, AVI or GIF).
        argument: the argument name used in error messages.

    Example:
        >>> probe_video("clip.mp4")  # doctest: +SKIP
        (1024, 576, 7.0, 75)
    """
    p = _check_path(path, argument, _VIDEO_FIX)
    if _is_gif(p):
        _, (w, h), fps, n = _read_gif(p, path, argument, decode=False)
        return int(w), int(h), fps, n
    num_frames = _scan(p, path, argument)
    reader = _open_reader(p, path, argument)
    try:
        meta = reader.get_meta_data()
    except (OSError, RuntimeError, ValueError, IndexError, KeyError) as err:
        raise _unreadable_video(argument, path) from err
    finally:
        reader.close()
    try:
        w, h = (int(v) for v in meta["size"])
    except (KeyError, TypeError, ValueError) as err:
        raise _unreadable_video(argument, path) from err
    return w, h, _video_fps(meta, p), num_frames


def read_frame(path: str | os.PathLike, index: int = 0, *, argument: str = "video") -> Image.Image:
    """Decode one frame of a video (the first by default) as an RGB PIL image, not the whole video.

    Example:
        >>> read_frame("clip.mp4").size  # doctest: +SKIP
        (1024, 576)
    """
    p = _check_path(path, argument, _VIDEO_FIX)
    if _is_gif(p):
        with Image.open(p) as img:
            img.seek(index)
            return _to_rgb(img.copy())
    count = _scan(p, path, argument)
    if not 0 <= index < count:
        raise bad_input(argument, os.fspath(path), f"has {count} frames, no frame {index}", "pass a longer video")
    reader = _open_reader(p, path, argument)
    try:
        frame = reader.get_data(index)
    except (OSError, RuntimeError, ValueError, IndexError, KeyError) as err:
        raise _unreadable_video(argument, path) from err
    finally:
        reader.close()
    return Image.fromarray(np.asarray(frame, dtype=np.uint8)[..., :3])


# (resolved path, size, mtime) -> frame count: the damage scan decodes a whole file, so a job that
# probes an input before a model loads and reads it later scans it once.
_SCANNED: dict[tuple, int] = {}


def _scan(p: Path, shown: str | os.PathLike, argument: str) -> int:
    stat = p.stat()
    key = (str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SCANNED:
        if len(_SCANNED) > 256:
            _SCANNED.clear()
        _SCANNED[key] = _ffmpeg_scan(p, shown, argument)
    return _SCANNED[key]


def read_video(path: str | os.PathLike, *, argument: str = "video") -> Video:
    """Decode a whole video (MP4, WebM, MOV, MKV, AVI, GIF) to RGB frames.

    The rate comes from the file's metadata; when that is missing or nonsense, 24 fps is assumed
    and a warning is logged (GIFs: from the frame delays, 10 fps if there are none). Rotation
    metadata is applied by ffmpeg. Any frame size is fine, odd ones included.

    Args:
        path: the video file.
        argument: the argument name used in error messages.

    Raises:
        InputError: missing, empty, not a video, truncated, or no frames.

    Example:
        >>> v = read_video("clip.mp4")  # doctest: +SKIP
        >>> v.frames.shape, v.fps
        ((75, 576, 1024, 3), 7.0)
    """
    p = _check_path(path, argument, _VIDEO_FIX)
    if _is_gif(p):
        frames, _, fps, _ = _read_gif(p, path, argument)
        return Video(np.stack(frames), fps)
    expected = _scan(p, path, argument)
    reader = _open_reader(p, path, argument)
    try:
        meta = reader.get_meta_data()
        frames = [np.asarray(frame, dtype=np.uint8)[..., :3] for frame in reader]
    except (OSError, RuntimeError, ValueError, IndexError, KeyError) as err:
        logger.debug("imageio could not decode %s: %r", p, err)
        raise _unreadable_video(argument, path) from err
    finally:
        reader.close()
    if not frames:
        raise _no_frames(argument, path)
    if len(frames) != expected:
        logger.debug("%s: decoded %d frames, ffmpeg counted %d", p, len(frames), expected)
    return Video(np.stack(frames), _video_fps(meta, p))


def _frames_iter(frames: Any) -> Iterator[np.ndarray]:
    """Validate frames one by one (a generator is never materialized) as (H, W, 3) uint8."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(
                f"frames: array of {frames.dtype} {frames.shape} is not a (T, H, W, 3) uint8 RGB video; "
                "pass uint8 RGB frames"
            )
        yield from frames
        return
    if isinstance(frames, (str, bytes, Image.Image)) or not isinstance(frames, Iterable):
        raise InputError(
            f"frames: a {type(frames).__name__} is not a sequence of frames; "
            "pass a (T, H, W, 3) uint8 array or a list of arrays or PIL images"
        )
    first_shape = None
    for i, frame in enumerate(frames):
        if isinstance(frame, Image.Image):
            frame = np.asarray(_to_rgb(frame))
        elif not isinstance(frame, np.ndarray):
            raise InputError(
                f"frames: frame {i} is a {type(frame).__name__}; pass numpy arrays or PIL images"
            )
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise InputError(
                f"frames: frame {i} is {frame.dtype} {frame.shape}, not (H, W, 3) uint8 RGB; pass uint8 RGB frames"
            )
        if first_shape is None:
            first_shape = frame.shape
        elif frame.shape != first_shape:
            raise InputError(
                f"frames: frame {i} has shape {frame.shape} but frame 0 has {first_shape}; "
                "pass frames of one size"
            )
        yield frame


def write_video(frames: Any, path: str | os.PathLike, *, fps: float) -> Path:
    """Write frames as an H.264 (yuv420p) MP4 that browsers play, atomically.

    yuv420p needs even sizes, so an odd width or height is padded by one column/row that repeats
    the last one (never rescaled). The file is written to a temp file beside `path` and renamed;
    if anything fails (a bad frame half-way, ffmpeg, Ctrl-C) nothing is left at `path`.

    Args:
        frames: `(T, H, W, 3)` uint8 array, or an iterable (list, generator) of `(H, W, 3)` uint8
            arrays or PIL images (converted to RGB).
        path: the destination (MP4 whatever the suffix); parent directories are created.
        fps: frames per second, > 0.

    Raises:
        InputError: `fps` is not positive, `frames` is empty or malformed.

    Example:
        >>> write_video(np.zeros((8, 64, 64, 3), np.uint8), "outputs/black.mp4", fps=8)  # doctest: +SKIP
        PosixPath('outputs/black.mp4')
    """
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not _sane_fps(fps):
        raise bad_input(
            "fps", fps, "is not a usable frame rate", f"pass a number greater than 0 and at most {MAX_FPS:g}"
        )
    if isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.shape[0] == 0:
        raise InputError("frames: got 0 frames; pass at least one frame")
    import imageio.v2 as iio

    with atomic_path(path, suffix=".mp4") as tmp:
        writer = None
        count = 0
        try:
            for frame in _frames_iter(frames):
                if writer is None:
                    h, w = frame.shape[:2]
                    pad_h, pad_w = h % 2, w % 2
                    if pad_h or pad_w:
                        logger.debug("padding %dx%d frames to %dx%d for yuv420p", w, h, w + pad_w, h + pad_h)
                    writer = iio.get_writer(
                        tmp,
                        format="FFMPEG",
                        mode="I",
                        fps=float(fps),
                        codec="libx264",
                        pixelformat="yuv420p",
                        quality=None,  # imageio's own quality scale would add its own -crf
                        macro_block_size=1,  # never let imageio resize; we pad ourselves
                        ffmpeg_log_level="error",
                        output_params=["-crf", str(H264_CRF), "-preset", "medium", "-movflags", "+faststart"],
                    )
                if pad_h or pad_w:
                    frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                writer.append_data(frame)
                count += 1
        finally:
            if writer is not None:
                writer.close()
        if count == 0:
            raise InputError("frames: got 0 frames; pass at least one frame")
    logger.debug("wrote %d frames at %g fps to %s", count, fps, path)
    return Path(path)


def iter_frames(path: str | os.PathLike, *, argument: str = "video") -> Iterator[np.ndarray]:
    """Decode a video's frames one at a time as (H, W, 3) uint8 (memory: one frame, not the video).

    With `write_video`, which takes an iterable, this streams many files into one video
    (`mora story` joins its shots this way).

    Example:
        >>> sum(1 for _ in iter_frames("outputs/fox.mp4"))  # doctest: +SKIP
        22
    """
    p = _check_path(path, argument, _fix_for(("video",)))
    reader = _open_reader(p, path, argument)
    try:
        for frame in reader:
            yield np.asarray(frame, dtype=np.uint8)[..., :3]
    except (OSError, RuntimeError, ValueError, IndexError, KeyError) as err:
        raise _unreadable_video(argument, path) from err
    finally:
        reader.close()

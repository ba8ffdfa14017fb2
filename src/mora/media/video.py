"""Reading videos: probe, decode, one frame, or a stream of frames; PyAV for every container, PIL for GIFs.

PyAV (FFmpeg's libraries in-process) reports damage as exceptions and says what the container
declares (its frame count, its duration), so a truncated file is found without reading ffmpeg's
log and without a subprocess: decoding fails, or ends before the frames or the time the container
promised. Every problem with a user's file becomes an `InputError` naming the argument, the path
as given and the fix. A decode that runs past `DECODE_TIMEOUT_S` is a `MediaTimeoutError`, never
"not a video".
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageSequence

from mora.errors import InputError, MediaTimeoutError, bad_input
from mora.limits import MAX_INPUT_FRAMES, MAX_INPUT_SECONDS
from mora.media.files import check_path
from mora.media.images import PIL_BAD_DATA, check_pixels, to_rgb

logger = logging.getLogger(__name__)

#: Frame rate used when a video's metadata has none (or nonsense).
DEFAULT_VIDEO_FPS = 24.0
#: Frame rate used when a GIF's frames have no usable duration; browsers do the same.
DEFAULT_GIF_FPS = 10.0
#: Rates outside (0, MAX_FPS] are treated as broken metadata.
MAX_FPS = 1000.0
#: Seconds one decode of a whole file may take. Mora's clips decode in well under a second; a
#: decode still running after this is stuck (or the machine is), which is its own error.
DECODE_TIMEOUT_S = 300.0

VIDEO_FIX = "pass an MP4, WebM, MOV, MKV, AVI or GIF file"


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


# --- the shared pieces ---------------------------------------------------------------------------


def sane_fps(fps: Any) -> bool:
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        return False
    return math.isfinite(fps) and 0 < fps <= MAX_FPS


def _video_fps(meta: dict, p: Path) -> float:
    fps = meta.get("fps")
    if sane_fps(fps):
        return float(fps)
    logger.warning("%s: frame rate in the metadata is %r; assuming %g fps", p, fps, DEFAULT_VIDEO_FPS)
    return DEFAULT_VIDEO_FPS


def _is_gif(p: Path) -> bool:
    with open(p, "rb") as fh:
        return fh.read(6) in (b"GIF87a", b"GIF89a")


def _unreadable(argument: str, shown: str | os.PathLike) -> Exception:
    return bad_input(argument, os.fspath(shown), "is not a readable video (truncated or not a video file)", VIDEO_FIX)


def _damaged(argument: str, shown: str | os.PathLike, why: str) -> Exception:
    return bad_input(argument, os.fspath(shown), f"is not a readable video (truncated or damaged: {why})",
                     f"{VIDEO_FIX} that plays to its end")


def _no_frames(argument: str, shown: str | os.PathLike) -> Exception:
    return bad_input(argument, os.fspath(shown), "has no video frames", "pass a video with at least one frame")


# --- GIFs (PIL) -----------------------------------------------------------------------------------


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
                    frames.append(np.asarray(to_rgb(frame)))
            size = img.size
    except Image.DecompressionBombError as err:
        raise bad_input(
            argument, os.fspath(shown), f"is too large to decode safely ({err})", "pass a smaller GIF"
        ) from err
    except PIL_BAD_DATA as err:
        logger.debug("PIL could not read GIF %s: %r", p, err)
        raise _unreadable(argument, shown) from err
    if not durations:
        raise _no_frames(argument, shown)
    return frames if decode else None, size, _gif_fps(durations, p), len(durations)


# --- every other container (PyAV) ----------------------------------------------------------------


class _Decoder:
    """One pass over the first video stream of a file, with what its container declares.

    `frames()` yields each frame (RGB arrays, or None when only counting), then checks the pass
    against the container: a decode error, fewer frames than declared, or (when no count is
    declared) a shorter span than the declared duration is damage. Close it when done.
    """

    def __init__(self, p: Path, shown: str | os.PathLike, argument: str, timeout_s: float | None = None):
        import av

        self.p, self.shown, self.argument = p, shown, argument
        self.timeout_s = DECODE_TIMEOUT_S if timeout_s is None else timeout_s
        try:
            # "file:" so a name like "concat:x.mp4" is read as a file, never as an FFmpeg protocol.
            self.container = av.open(f"file:{p.resolve()}", mode="r")
        except av.error.FFmpegError as err:
            logger.debug("PyAV could not open %s: %r", p, err)
            raise _unreadable(argument, shown) from err
        fmt = self.container.format.name
        if fmt == "image2" or fmt.endswith("_pipe"):  # FFmpeg's demuxers of still images
            self.close()
            raise bad_input(argument, os.fspath(shown), "is a still image, not a video",
                            f"{VIDEO_FIX} (or pass the image as an image)")
        if not self.container.streams.video:
            self.close()
            raise _no_frames(argument, shown)
        self.stream = self.container.streams.video[0]
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = _video_fps({"fps": float(rate) if rate else None}, p)
        self.count = 0
        self.rotation = 0.0  # of the first frame, once decoded

    @property
    def size(self) -> tuple[int, int]:
        return int(self.stream.width), int(self.stream.height)

    def frames(self, rgb: bool = True) -> Iterator[np.ndarray | None]:
        import av

        deadline = time.monotonic() + self.timeout_s
        first = last = None
        try:
            for frame in self.container.decode(self.stream):
                if time.monotonic() > deadline:
                    raise self._timed_out()
                if self.count == 0:
                    self.rotation = frame.rotation
                first = frame.time if first is None else first
                last = frame.time if frame.time is not None else last
                self.count += 1
                yield _upright(frame.to_ndarray(format="rgb24"), frame.rotation) if rgb else None
        except av.error.FFmpegError as err:  # PyAV's report of damaged data
            logger.debug("PyAV stopped decoding %s at frame %d: %r", self.p, self.count, err)
            raise _damaged(self.argument, self.shown, f"decoding failed after {self.count} frames") from err
        if self.count == 0:
            raise _no_frames(self.argument, self.shown)
        self._check_complete(first, last)

    def _check_complete(self, first: float | None, last: float | None) -> None:
        """Damage that decoded cleanly: fewer frames than declared, or a span short of the declared time.

        Both must agree when the container declares both: an MP4 edit list can legitimately hide
        a few of the frames its index counts, but never shorten the time it says the video lasts.
        """
        declared = int(self.stream.frames or 0)
        duration = self._declared_duration()
        span = None if first is None or last is None else last - first + 1.0 / self.fps
        short = duration is not None and span is not None and span < duration - max(2.0 / self.fps, 0.02 * duration)
        if declared and self.count < declared and (short or duration is None or span is None):
            raise _damaged(self.argument, self.shown, f"{self.count} of the {declared} frames it declares")
        if short:
            raise _damaged(self.argument, self.shown, f"{span:.2f} s of the {duration:.2f} s it declares")

    def _declared_duration(self) -> float | None:
        """The video stream's duration in seconds, or the container's when the video is its only stream."""
        if self.stream.duration and self.stream.time_base:
            return float(self.stream.duration * self.stream.time_base)
        if self.container.duration and len(self.container.streams) == 1:
            return self.container.duration / 1_000_000  # AV_TIME_BASE
        return None

    def _timed_out(self) -> Exception:
        return MediaTimeoutError(
            f"{self.argument}: {os.fspath(self.shown)!r} took longer than {self.timeout_s:g} s to decode (stopped "
            f"after {self.count} frames); the machine may be overloaded: try again, or pass a shorter video"
        )

    def close(self) -> None:
        self.container.close()


def _turns(rotation: float | None) -> int:
    """Quarter turns counter-clockwise of a display rotation in degrees."""
    return round((rotation or 0) / 90) % 4


def _upright(frame: np.ndarray, rotation: float | None) -> np.ndarray:
    """Apply the display rotation (counter-clockwise degrees), as players and ffmpeg do."""
    turns = _turns(rotation)
    return np.ascontiguousarray(np.rot90(frame, turns)) if turns else frame


def _decode(p: Path, shown: str | os.PathLike, argument: str, rgb: bool) -> tuple[list, tuple[int, int], float]:
    decoder = _Decoder(p, shown, argument)
    try:
        frames = list(decoder.frames(rgb=rgb))
        width, height = decoder.size
        return frames, (width, height), decoder.fps
    finally:
        decoder.close()


# --- the public readers --------------------------------------------------------------------------

# (resolved path, size, mtime) -> probe: a job that checks an input before a model loads and reads
# it later decodes it for the check once.
_PROBED: dict[tuple, tuple[int, int, float, int]] = {}


def probe_video(path: str | os.PathLike, *, argument: str = "video") -> tuple[int, int, float, int]:
    """(width, height, fps, num_frames) of a video, decoded once without converting frames to RGB.

    Used to validate inputs before models load: a missing, empty, truncated or frameless file
    raises here. Width and height are as displayed (a rotated phone clip is portrait).

    Args:
        path: the video file (MP4, WebM, MOV, MKV, AVI or GIF).
        argument: the argument name used in error messages.

    Raises:
        InputError: missing, empty, not a video, truncated or damaged, or no frames.
        MediaTimeoutError: the decode ran past `DECODE_TIMEOUT_S`.

    Example:
        >>> probe_video("clip.mp4")  # doctest: +SKIP
        (1024, 576, 7.0, 75)
    """
    p = check_path(path, argument, VIDEO_FIX)
    if _is_gif(p):
        _, (w, h), fps, n = _read_gif(p, path, argument, decode=False)
        return int(w), int(h), fps, n
    stat = p.stat()
    key = (str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _PROBED:
        decoder = _Decoder(p, path, argument)
        try:
            for _ in decoder.frames(rgb=False):  # decoding every frame is the damage check
                pass
            w, h = decoder.size
        finally:
            decoder.close()
        if _turns(decoder.rotation) % 2:  # shown rotated a quarter turn: portrait for landscape
            w, h = h, w
        if len(_PROBED) > 256:
            _PROBED.clear()
        _PROBED[key] = (w, h, decoder.fps, decoder.count)
    return _PROBED[key]


def check_video_limits(path: str | os.PathLike, *, argument: str = "video") -> None:
    """Refuse an input video past `MAX_INPUT_PIXELS` a frame, `MAX_INPUT_FRAMES` or `MAX_INPUT_SECONDS`.

    Read from the container's header (PyAV: its frame count and duration; GIF: its size), so a long
    video is refused before any frame is decoded; a container that declares neither is counted up
    to the limit (one frame in memory, no colour conversion). Mora's own outputs are not limited.

    Raises:
        InputError: naming `argument`, the file, what it holds and the limit.
    """
    p = check_path(path, argument, VIDEO_FIX)
    if _is_gif(p):
        try:
            with Image.open(p) as img:
                size = img.size
        except PIL_BAD_DATA as err:
            raise _unreadable(argument, path) from err
        check_pixels(size, path, argument)
        return
    decoder = _Decoder(p, path, argument)
    try:
        check_pixels(decoder.size, path, argument)
        declared, duration = int(decoder.stream.frames or 0), decoder._declared_duration()
        if declared > MAX_INPUT_FRAMES:
            raise _too_long(argument, path, f"{declared} frames", f"{MAX_INPUT_FRAMES} frames")
        if duration is not None and duration > MAX_INPUT_SECONDS:
            raise _too_long(argument, path, f"{duration:.0f} s", f"{MAX_INPUT_SECONDS:g} s")
        if not declared and duration is None:
            for _ in decoder.frames(rgb=False):
                if decoder.count > MAX_INPUT_FRAMES:
                    raise _too_long(argument, path, f"more than {MAX_INPUT_FRAMES} frames", f"{MAX_INPUT_FRAMES} frames")
    finally:
        decoder.close()


def _too_long(argument: str, shown: str | os.PathLike, has: str, limit: str) -> InputError:
    return InputError(f"{os.fspath(shown)!r} has {has}, more than the {limit} an input video may "
                      "have; pass a shorter video (cut it)", param=argument)


def read_video(path: str | os.PathLike, *, argument: str = "video") -> Video:
    """Decode a whole video (MP4, WebM, MOV, MKV, AVI, GIF) to RGB frames.

    The rate comes from the file's metadata; when that is missing or nonsense, 24 fps is assumed
    and a warning is logged (GIFs: from the frame delays, 10 fps if there are none). Display
    rotation is applied. Any frame size is fine, odd ones included.

    Args:
        path: the video file.
        argument: the argument name used in error messages.

    Raises:
        InputError: missing, empty, not a video, truncated or damaged, or no frames.
        MediaTimeoutError: the decode ran past `DECODE_TIMEOUT_S`.

    Example:
        >>> v = read_video("clip.mp4")  # doctest: +SKIP
        >>> v.frames.shape, v.fps
        ((75, 576, 1024, 3), 7.0)
    """
    p = check_path(path, argument, VIDEO_FIX)
    if _is_gif(p):
        frames, _, fps, _ = _read_gif(p, path, argument)
        return Video(np.stack(frames), fps)
    frames, _, fps = _decode(p, path, argument, rgb=True)
    return Video(np.stack(frames), fps)


def read_frame(path: str | os.PathLike, index: int = 0, *, argument: str = "video") -> Image.Image:
    """Decode one frame of a video (the first by default) as an RGB PIL image, not the whole video.

    The file is probed first (cached), so a damaged file fails here as it does everywhere else.

    Example:
        >>> read_frame("clip.mp4").size  # doctest: +SKIP
        (1024, 576)
    """
    p = check_path(path, argument, VIDEO_FIX)
    if _is_gif(p):
        with Image.open(p) as img:
            img.seek(index)
            return to_rgb(img.copy())
    count = probe_video(p, argument=argument)[3]
    if not 0 <= index < count:
        raise bad_input(argument, os.fspath(path), f"has {count} frames, no frame {index}", "pass a longer video")
    decoder = _Decoder(p, path, argument)
    try:
        for i, frame in enumerate(decoder.frames(rgb=True)):
            if i == index:
                return Image.fromarray(frame)
    finally:
        decoder.close()
    raise _damaged(argument, path, f"no frame {index} on a second decode")  # the probe counted it


def iter_frames(path: str | os.PathLike, *, argument: str = "video") -> Iterator[np.ndarray]:
    """Decode a video's frames one at a time as (H, W, 3) uint8 (memory: one frame, not the video).

    With `write_video`, which takes an iterable, this streams many files into one video
    (`mora story` joins its shots this way). Damage found at the end raises after the frames
    before it were yielded.

    Example:
        >>> sum(1 for _ in iter_frames("outputs/fox.mp4"))  # doctest: +SKIP
        22
    """
    p = check_path(path, argument, VIDEO_FIX)
    if _is_gif(p):
        yield from _read_gif(p, path, argument)[0]
        return
    decoder = _Decoder(p, path, argument)
    try:
        yield from decoder.frames(rgb=True)
    finally:
        decoder.close()

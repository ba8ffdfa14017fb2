"""Writing videos: H.264 (yuv420p) MP4 that browsers play, with an optional AAC track, through PyAV, atomically.

PyAV encodes in-process with FFmpeg's libx264, so there is no ffmpeg subprocess to wait on.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mora.errors import InputError, bad_input
from mora.media.audio import AacTrack, Audio, check_audio
from mora.media.files import atomic_path
from mora.media.images import to_rgb
from mora.media.video import MAX_FPS, sane_fps

logger = logging.getLogger(__name__)

#: x264 constant rate factor: 17-18 is visually lossless for most content.
H264_CRF = 18


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
            frame = np.asarray(to_rgb(frame))
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


def write_video(frames: Any, path: str | os.PathLike, *, fps: float, audio: Audio | None = None) -> Path:
    """Write frames as an H.264 (yuv420p) MP4 that browsers play, with `audio` as AAC if given, atomically.

    yuv420p needs even sizes, so an odd width or height is padded by one column/row that repeats
    the last one (never rescaled). The file is written to a temp file beside `path` and renamed;
    if anything fails (a bad frame half-way, the encoder, Ctrl-C) nothing is left at `path`. The
    index goes first (`+faststart`), so browsers start playing before the download ends.

    Args:
        frames: `(T, H, W, 3)` uint8 array, or an iterable (list, generator) of `(H, W, 3)` uint8
            arrays or PIL images (converted to RGB).
        path: the destination (MP4 whatever the suffix); parent directories are created.
        fps: frames per second, > 0.
        audio: sound for the same file (`media.Audio`), encoded as one AAC stream and trimmed, or
            padded at the end with silence, to the video's duration (frames / fps). None: no audio
            stream, as before.

    Raises:
        InputError: `fps` is not positive, `frames` is empty or malformed, `audio` is not a valid
            `media.Audio` (dtype, shape, non-finite samples, sample rate).

    Example:
        >>> write_video(np.zeros((8, 64, 64, 3), np.uint8), "outputs/black.mp4", fps=8)  # doctest: +SKIP
        PosixPath('outputs/black.mp4')
    """
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not sane_fps(fps):
        raise bad_input(
            "fps", fps, "is not a usable frame rate", f"pass a number greater than 0 and at most {MAX_FPS:g}"
        )
    if isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.shape[0] == 0:
        raise InputError("frames: got 0 frames; pass at least one frame")
    if audio is not None:
        audio = check_audio(audio)
    with atomic_path(path, suffix=".mp4") as tmp:
        count = _encode(_frames_iter(frames), tmp, float(fps), audio)
        if count == 0:
            raise InputError("frames: got 0 frames; pass at least one frame")
    logger.debug("wrote %d frames at %g fps (%s) to %s", count, fps, "with audio" if audio else "silent", path)
    return Path(path)


def _encode(frames: Iterator[np.ndarray], tmp: Path, fps: float, audio: Audio | None = None) -> int:
    """Encode `frames` (and `audio`, fitted to them) into the MP4 at `tmp`; returns how many frames.

    The container opens at the first frame; the audio is encoded frame by frame beside the video
    (interleaved, so players stream both), and fitted to the video's duration after the last one.
    """
    import av

    container = stream = None
    sound: AacTrack | None = None
    count = 0
    try:
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                pad = ((0, h % 2), (0, w % 2), (0, 0))
                if h % 2 or w % 2:
                    logger.debug("padding %dx%d frames to %dx%d for yuv420p", w, h, w + w % 2, h + h % 2)
                container = av.open(os.fspath(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
                # A fraction keeps NTSC rates exact (24000/1001), as ffmpeg's -r does.
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1_000_000),
                                              options={"crf": str(H264_CRF), "preset": "medium"})
                stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
                if audio is not None:  # every stream is added before the first packet
                    sound = AacTrack(container, audio)
            if pad[0][1] or pad[1][1]:
                frame = np.pad(frame, pad, mode="edge")
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture.pts = count  # in frames: the stream's time base is 1/fps
            container.mux(stream.encode(picture))
            count += 1
            if sound is not None:
                sound.advance(count / fps)
        if stream is not None:
            container.mux(stream.encode(None))  # flush the encoder's delayed frames
        if sound is not None:
            sound.finish(count / fps)
    finally:
        if container is not None:
            container.close()
    return count

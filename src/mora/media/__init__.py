"""Reading, checking and writing images, videos and their sound: the only place Mora touches media files.

One file per job: `images` (PIL), `video` (probe and decode with PyAV; GIFs through PIL),
`video_write` (H.264 MP4, with an optional AAC track, through PyAV), `audio` (`Audio`, reading a
file's sound, BS.1770 loudness through pyloudnorm, cross-fades), `files` (atomic writes and path checks), `check` (is this
file an image or a video, before models load). Every problem with a user's file becomes an
`InputError` that names the argument, the path as given and the fix; every write is atomic.

This package must stay light: numpy, PIL and (lazily) PyAV, pyloudnorm and scipy; never torch.

Example:
    >>> from mora import media
    >>> media.write_video(frames, "outputs/clip.mp4", fps=8)  # doctest: +SKIP
"""

from __future__ import annotations

from mora.media.audio import (
    DEFAULT_LUFS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    Audio,
    Loudness,
    crossfade,
    fit_audio,
    loudness,
    normalize_loudness,
    read_audio,
)
from mora.media.check import check_file
from mora.media.files import atomic_path, write_json
from mora.media.images import read_image, write_image
from mora.media.video import (
    DECODE_TIMEOUT_S,
    DEFAULT_GIF_FPS,
    DEFAULT_VIDEO_FPS,
    MAX_FPS,
    Video,
    iter_frames,
    probe_video,
    read_frame,
    read_video,
)
from mora.media.video import (
    _video_fps as _video_fps,  # tests pin its fallbacks
)
from mora.media.video_write import H264_CRF, write_video

__all__ = [
    "DEFAULT_LUFS", "MAX_SAMPLE_RATE", "MIN_SAMPLE_RATE", "Audio", "Loudness", "crossfade", "fit_audio",
    "loudness", "normalize_loudness", "read_audio",
    "DECODE_TIMEOUT_S", "DEFAULT_GIF_FPS", "DEFAULT_VIDEO_FPS", "H264_CRF", "MAX_FPS", "Video", "atomic_path",
    "check_file", "iter_frames", "probe_video", "read_frame", "read_image", "read_video", "write_image",
    "write_json", "write_video",
]

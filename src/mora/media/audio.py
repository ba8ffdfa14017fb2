"""Sound beside the pictures: `Audio`, its AAC track in MP4s, reading it back, loudness and cross-fades.

`write_video(..., audio=...)` (video_write) muxes an `Audio` as AAC into the same MP4 through PyAV,
fitted to the video's length (`fit_audio`); `read_audio` decodes a file's first audio stream back.
Loudness is ITU-R BS.1770 integrated loudness through pyloudnorm (lazily imported, like PyAV), never
by hand. Nothing here imports torch.

Example:
    >>> tone = Audio(np.zeros((16000, 1), np.float32), 16000)
    >>> tone.seconds
    1.0
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from mora.errors import InputError, bad_input
from mora.media.files import check_path

logger = logging.getLogger(__name__)

#: The sample rates an AAC track may have (Hz): AAC's own range.
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 96_000
#: Channels an `Audio` may have: mono or stereo.
LAYOUTS = {1: "mono", 2: "stereo"}
#: Integrated loudness `normalize_loudness` aims at by default (LUFS): the usual target for web video.
DEFAULT_LUFS = -16.0
#: AAC bit rate per channel (bits/s).
AAC_BITRATE_PER_CHANNEL = 96_000
#: Oversampling factor for the true peak (BS.1770-4 Annex 2: 4x at 48 kHz).
TRUE_PEAK_OVERSAMPLING = 4


@dataclass
class Audio:
    """Sound as float32 samples in [-1, 1] and their rate.

    Args:
        samples: `(n, channels)` float32 array, channels 1 (mono) or 2 (stereo), finite values.
        sample_rate: samples per second per channel, an integer in [8000, 96000].

    Raises:
        InputError: any of the above is wrong (one line naming `audio`, the value and the fix).

    Example:
        >>> a = Audio(np.zeros((8000, 2), np.float32), 16000)
        >>> (a.num_samples, a.channels, a.seconds)
        (8000, 2, 0.5)
    """

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        _check(self.samples, self.sample_rate)
        self.sample_rate = int(self.sample_rate)

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate


def _check(samples: Any, rate: Any) -> None:
    """The one rule for what an `Audio` holds; every problem is one `InputError` about `audio`."""
    if not isinstance(samples, np.ndarray):
        raise bad_input("audio", type(samples).__name__, "is not an array of samples",
                        "pass a (n, channels) float32 numpy array")
    if samples.dtype != np.float32:
        raise bad_input("audio", f"{samples.dtype} samples", "are not float32",
                        "pass float32 samples in [-1, 1] (samples.astype(np.float32))")
    if samples.ndim != 2 or samples.shape[1] not in LAYOUTS:
        raise bad_input("audio", f"shape {samples.shape}", "is not (n, channels) with 1 or 2 channels",
                        "pass (n, 1) for mono (samples[:, None]) or (n, 2) for stereo")
    if not np.isfinite(samples).all():
        raise bad_input("audio", "samples with NaN or infinity", "cannot be played",
                        "pass finite samples in [-1, 1] (np.nan_to_num)")
    if (isinstance(rate, bool) or not isinstance(rate, numbers.Integral)
            or not MIN_SAMPLE_RATE <= int(rate) <= MAX_SAMPLE_RATE):
        raise bad_input("audio", f"sample rate {rate!r}", "is out of range",
                        f"pass an integer number of Hz from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}")


def check_audio(audio: Any) -> Audio:
    """`audio` itself when it is an `Audio` (checked again: its arrays may have changed since)."""
    if not isinstance(audio, Audio):
        raise bad_input("audio", type(audio).__name__, "is not a media.Audio",
                        "pass media.Audio(samples, sample_rate) or None for no sound")
    _check(audio.samples, audio.sample_rate)
    return audio


def fit_audio(audio: Audio, seconds: float) -> Audio:
    """`audio` trimmed, or padded at the end with silence, to `seconds` (rounded to whole samples)."""
    n = round(seconds * audio.sample_rate)
    if n == audio.num_samples:
        return audio
    if n < audio.num_samples:
        logger.debug("trimming %.3f s of audio to the video's %.3f s", audio.seconds, seconds)
        return Audio(audio.samples[:n].copy(), audio.sample_rate)
    logger.debug("padding %.3f s of audio with silence to the video's %.3f s", audio.seconds, seconds)
    pad = np.zeros((n - audio.num_samples, audio.channels), np.float32)
    return Audio(np.concatenate([audio.samples, pad]), audio.sample_rate)


# --- the AAC track (called by video_write._encode) ----------------------------------------------


class AacTrack:
    """`audio` as the AAC stream of an MP4 being written, interleaved with the video as it grows.

    Made before the container's first packet (every stream is added first); `advance(seconds)`
    encodes the sound up to the video's time so far, `finish(seconds)` fits it to the video's final
    duration (trimmed, or padded at the end with silence) and flushes the encoder.
    """

    def __init__(self, container: Any, audio: Audio) -> None:
        self.container, self.audio, self.done = container, audio, 0
        self.stream = container.add_stream("aac", rate=audio.sample_rate, layout=LAYOUTS[audio.channels])
        self.stream.bit_rate = AAC_BITRATE_PER_CHANNEL * audio.channels

    def advance(self, seconds: float) -> None:
        """Encode the samples up to `seconds` that the audio has (none past its end)."""
        self._encode(self.audio.samples[self.done:min(round(seconds * self.audio.sample_rate),
                                                      self.audio.num_samples)])

    def finish(self, seconds: float) -> None:
        """Encode the rest up to exactly `seconds` (silence past the audio's end) and flush."""
        rest = fit_audio(self.audio, seconds).samples[self.done:]
        self._encode(rest)
        self.container.mux(self.stream.encode(None))  # flush the encoder's delayed frames
        logger.debug("muxed %.3f s of audio (%.3f s given)", self.done / self.audio.sample_rate,
                     self.audio.seconds)

    def _encode(self, samples: np.ndarray) -> None:
        import av

        if not len(samples):
            return
        planar = np.ascontiguousarray(np.clip(samples, -1.0, 1.0).T)  # PyAV cuts it into AAC frames
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=LAYOUTS[self.audio.channels])
        rate = self.audio.sample_rate
        frame.sample_rate, frame.pts, frame.time_base = rate, self.done, Fraction(1, rate)
        self.container.mux(self.stream.encode(frame))
        self.done += len(samples)


# --- reading ------------------------------------------------------------------------------------


def read_audio(path: str | os.PathLike, *, argument: str = "video") -> Audio | None:
    """Decode the first audio stream of a video (or audio) file to float32 at its own rate.

    Returns None when the file has no audio stream. More than two channels are mixed down to
    stereo. The encoder's padding at the end is cut, so the length is the stream's duration.

    Raises:
        InputError: missing, empty or not a media file PyAV can open.

    Example:
        >>> read_audio("clip.mp4").sample_rate  # doctest: +SKIP
        16000
    """
    import av

    p = check_path(path, argument, "pass an MP4, WebM, MOV or MKV file")
    try:
        with av.open(os.fspath(p)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            rate, channels = stream.codec_context.sample_rate, min(stream.codec_context.channels, 2)
            resampler = av.AudioResampler(format="fltp", layout=LAYOUTS[channels], rate=rate)
            chunks = [r.to_ndarray() for f in container.decode(stream) for r in resampler.resample(f)]
            chunks += [r.to_ndarray() for r in resampler.resample(None)]
            length = _stream_samples(stream, rate)
    except av.FFmpegError as e:
        raise InputError(f"{os.fspath(path)!r} has audio that cannot be decoded ({e}); "
                         "pass a file whose sound plays", param=argument) from None
    samples = np.concatenate(chunks, axis=1).T if chunks else np.zeros((0, channels), np.float32)
    if length is not None:
        samples = samples[:length]
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), rate)


def _stream_samples(stream: Any, rate: int) -> int | None:
    """The stream's length in samples from its header (decoders keep AAC's end padding), if known."""
    if stream.duration is None or stream.time_base is None:
        return None
    return round(stream.duration * stream.time_base * rate)


# --- loudness and seams -------------------------------------------------------------------------


@dataclass(frozen=True)
class Loudness:
    """`loudness(audio)`: integrated loudness (LUFS) and peaks (dBFS); -inf for silence."""

    lufs: float
    sample_peak_db: float
    true_peak_db: float


def _db(peak: float) -> float:
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def loudness(audio: Audio) -> Loudness:
    """Integrated loudness (ITU-R BS.1770-4 through pyloudnorm), sample peak and true peak.

    `lufs` is -inf when BS.1770 has nothing to measure: silence (every block is gated out), or
    audio shorter than one 400 ms gating block. The true peak is the sample peak of the signal
    oversampled 4x (BS.1770-4 Annex 2); peaks of silence are -inf.

    Example:
        >>> loudness(Audio(np.zeros((16000, 1), np.float32), 16000)).lufs
        -inf
    """
    import pyloudnorm
    from scipy.signal import resample_poly

    check_audio(audio)
    sample_peak = float(np.abs(audio.samples).max()) if audio.num_samples else 0.0
    true_peak = sample_peak
    if audio.num_samples > 1:
        over = resample_poly(audio.samples.astype(np.float64), TRUE_PEAK_OVERSAMPLING, 1, axis=0)
        true_peak = max(sample_peak, float(np.abs(over).max()))
    lufs = -math.inf
    meter = pyloudnorm.Meter(audio.sample_rate)
    if audio.seconds >= meter.block_size and sample_peak > 0:
        with np.errstate(divide="ignore"):
            lufs = float(meter.integrated_loudness(audio.samples.astype(np.float64)))
    return Loudness(lufs, _db(sample_peak), _db(true_peak))


def normalize_loudness(audio: Audio, target_lufs: float = DEFAULT_LUFS) -> Audio:
    """`audio` scaled to `target_lufs` integrated loudness (one gain for the whole clip).

    Audio with no measurable loudness (silence, or shorter than BS.1770's 400 ms block: `lufs` is
    -inf) comes back unchanged. Samples the gain pushes past full scale are clipped to [-1, 1]
    (logged), so a quiet target is safer than a loud one.

    Raises:
        InputError: `target_lufs` is not a finite number below 0.

    Example:
        >>> loud = normalize_loudness(tone)  # doctest: +SKIP
        >>> round(loudness(loud).lufs)  # doctest: +SKIP
        -16
    """
    if (isinstance(target_lufs, bool) or not isinstance(target_lufs, numbers.Real)
            or not math.isfinite(target_lufs) or target_lufs >= 0):
        raise bad_input("target_lufs", target_lufs, "is not a loudness target",
                        f"pass a negative number of LUFS such as {DEFAULT_LUFS:g}")
    measured = loudness(audio).lufs
    if measured == -math.inf:
        logger.debug("audio of %.3f s has no measurable loudness; left as it is", audio.seconds)
        return audio
    gain = 10 ** ((target_lufs - measured) / 20)
    scaled = audio.samples * np.float32(gain)
    if np.abs(scaled).max() > 1.0:
        logger.warning("normalizing to %g LUFS clips audio peaks; pass a lower target_lufs", target_lufs)
        scaled = np.clip(scaled, -1.0, 1.0)
    return Audio(scaled.astype(np.float32), audio.sample_rate)


def crossfade(a: Audio, b: Audio, seconds: float) -> Audio:
    """`a` then `b`, overlapping by `seconds` with an equal-power fade (cos/sin gains, cos² + sin² = 1).

    The result has `len(a) + len(b) - overlap` samples; `seconds=0` is a plain cut. Both must have
    the same rate and channels.

    Raises:
        InputError: rates or channels differ, or `seconds` is negative or longer than either clip.

    Example:
        >>> crossfade(a, b, 0.25).seconds == a.seconds + b.seconds - 0.25  # doctest: +SKIP
        True
    """
    check_audio(a), check_audio(b)
    if (a.sample_rate, a.channels) != (b.sample_rate, b.channels):
        raise bad_input("audio", f"{b.sample_rate} Hz x{b.channels} after {a.sample_rate} Hz x{a.channels}",
                        "cannot be cross-faded", "pass clips of one sample rate and channel count")
    limit = min(a.seconds, b.seconds)
    if (isinstance(seconds, bool) or not isinstance(seconds, numbers.Real)
            or not 0 <= seconds <= limit):
        raise bad_input("seconds", seconds, "is not a usable cross-fade length",
                        f"pass a number from 0 to {limit:g} (the shorter clip)")
    k = round(seconds * a.sample_rate)
    t = ((np.arange(k, dtype=np.float64) + 0.5) / k * (math.pi / 2))[:, None] if k else np.zeros((0, 1))
    middle = a.samples[a.num_samples - k:] * np.cos(t) + b.samples[:k] * np.sin(t)
    joined = np.concatenate([a.samples[:a.num_samples - k], middle.astype(np.float32), b.samples[k:]])
    return Audio(joined.astype(np.float32), a.sample_rate)

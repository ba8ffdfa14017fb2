"""mora.media's sound: an AAC track muxed into the MP4 (fitted to the video's length), read back,
BS.1770 loudness through pyloudnorm, equal-power cross-fades, and one-line errors for bad audio.

Everything is made here in tmp_path with PyAV; nothing touches the network.
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest

from mora import media
from mora.errors import InputError
from mora.media import Audio

FPS = 8
FRAMES = 16  # 2 s of video
RATE = 16_000


def tone(seconds: float, hz: float = 440.0, amp: float = 0.5, rate: int = RATE, channels: int = 1,
         phase: float = 0.0) -> Audio:
    t = np.arange(round(seconds * rate)) / rate
    wave = (amp * np.sin(2 * np.pi * hz * t + phase)).astype(np.float32)
    return Audio(np.repeat(wave[:, None], channels, axis=1), rate)


def frames(n: int = FRAMES) -> np.ndarray:
    return np.full((n, 32, 48, 3), 90, np.uint8)


def streams(path: Path) -> tuple[list[str], float, float | None]:
    """(stream types, container seconds, audio stream seconds) as PyAV reads them."""
    with av.open(str(path)) as c:
        audio = c.streams.audio[0] if c.streams.audio else None
        secs = float(audio.duration * audio.time_base) if audio is not None else None
        return [s.type for s in c.streams], c.duration / av.time_base, secs


def test_tone_is_one_aac_stream_as_long_as_the_video(tmp_path):
    out = media.write_video(frames(), tmp_path / "a.mp4", fps=FPS, audio=tone(FRAMES / FPS, channels=2))
    types, container_s, audio_s = streams(out)
    assert sorted(types) == ["audio", "video"]
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
        assert c.streams.audio[0].codec_context.channels == 2
    assert abs(audio_s - FRAMES / FPS) <= 1 / FPS
    assert abs(container_s - FRAMES / FPS) <= 1 / FPS
    back = media.read_audio(out)
    assert abs(back.seconds - FRAMES / FPS) <= 1 / FPS
    assert media.read_video(out).num_frames == FRAMES  # the pictures are untouched


def test_ntsc_rate_generator_frames_and_44k_audio_stay_within_a_frame(tmp_path):
    fps, n = 24000 / 1001, 37
    gen = (np.full((31, 47, 3), 6 * i, np.uint8) for i in range(n))  # odd sizes, never materialized
    out = media.write_video(gen, tmp_path / "a.mp4", fps=fps, audio=tone(1.0, rate=44_100, channels=2))
    _, _, audio_s = streams(out)
    assert abs(audio_s - n / fps) <= 1 / fps
    back = media.read_audio(out)
    assert (back.sample_rate, back.channels) == (44_100, 2)
    assert abs(back.seconds - n / fps) <= 1 / fps


@pytest.mark.parametrize("seconds", [5.0, 0.7])
def test_longer_tone_is_trimmed_and_shorter_one_padded(tmp_path, seconds):
    out = media.write_video(frames(), tmp_path / "a.mp4", fps=FPS, audio=tone(seconds))
    _, _, audio_s = streams(out)
    assert abs(audio_s - FRAMES / FPS) <= 1 / FPS
    back = media.read_audio(out)
    assert abs(back.seconds - FRAMES / FPS) <= 1 / FPS
    if seconds < FRAMES / FPS:  # padded with silence: the tail is quiet, the head is the tone
        tail = back.samples[round((seconds + 0.1) * RATE):]
        assert np.abs(tail).max() < 0.02
        assert np.abs(back.samples[: round(0.5 * RATE)]).max() > 0.3


def test_no_audio_means_no_audio_stream(tmp_path):
    out = media.write_video(frames(), tmp_path / "a.mp4", fps=FPS)
    assert streams(out)[0] == ["video"]
    assert media.read_audio(out) is None
    out2 = media.write_video(frames(), tmp_path / "b.mp4", fps=FPS, audio=None)
    assert streams(out2)[0] == ["video"]


def test_read_back_rate_length_and_frequency(tmp_path):
    out = media.write_video(frames(), tmp_path / "a.mp4", fps=FPS, audio=tone(FRAMES / FPS))
    back = media.read_audio(out)
    assert back.sample_rate == RATE and back.channels == 1
    assert back.samples.dtype == np.float32
    assert abs(back.num_samples - FRAMES / FPS * RATE) <= RATE / FPS
    spectrum = np.abs(np.fft.rfft(back.samples[:, 0]))
    peak_hz = np.fft.rfftfreq(back.num_samples, 1 / RATE)[spectrum.argmax()]
    assert abs(peak_hz - 440) < 5


def test_normalize_loudness_hits_the_target():
    quiet = tone(3.0, amp=0.05)
    meter = pyloudnorm.Meter(RATE)
    before = meter.integrated_loudness(quiet.samples.astype(np.float64))
    assert abs(before - media.DEFAULT_LUFS) > 5  # the test would fail without normalizing
    loud = media.normalize_loudness(quiet)
    after = meter.integrated_loudness(loud.samples.astype(np.float64))
    assert abs(after - (-16.0)) < 0.5
    assert abs(media.loudness(loud).lufs - after) < 1e-6
    assert abs(media.normalize_loudness(quiet, target_lufs=-23.0).samples).max() < loud.samples.max()


def test_loudness_peaks_and_silence():
    m = media.loudness(tone(1.0, amp=0.5))
    assert math.isfinite(m.lufs)
    assert abs(m.sample_peak_db - 20 * math.log10(0.5)) < 0.05
    assert m.true_peak_db >= m.sample_peak_db
    silence = Audio(np.zeros((RATE, 2), np.float32), RATE)
    assert media.loudness(silence) == media.Loudness(-math.inf, -math.inf, -math.inf)
    assert media.normalize_loudness(silence) is silence
    short = tone(0.2)  # shorter than BS.1770's 400 ms block
    assert media.loudness(short).lufs == -math.inf
    assert media.normalize_loudness(short) is short


BAD_AUDIO = [
    (lambda: Audio(np.zeros((10, 1), np.float64), RATE), "float32"),
    (lambda: Audio(np.zeros(10, np.float32), RATE), "(n, channels)"),
    (lambda: Audio(np.zeros((10, 3), np.float32), RATE), "(n, channels)"),
    (lambda: Audio(np.array([[np.nan]], np.float32), RATE), "finite"),
    (lambda: Audio(np.zeros((10, 1), np.float32), 1000), "8000"),
    (lambda: Audio(np.zeros((10, 1), np.float32), 44100.5), "8000"),
    (lambda: Audio([0.0], RATE), "numpy array"),
]


@pytest.mark.parametrize("make, fix", BAD_AUDIO)
def test_bad_audio_is_one_line_input_error(make, fix):
    with pytest.raises(InputError) as e:
        make()
    msg = str(e.value)
    assert msg.startswith("audio: ") and "\n" not in msg and fix in msg


def test_write_video_refuses_bad_audio_and_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match=r"^audio: 'ndarray' is not a media.Audio; pass media.Audio"):
        media.write_video(frames(), tmp_path / "a.mp4", fps=FPS, audio=np.zeros((10, 1), np.float32))
    a = tone(1.0)
    a.samples[3] = np.inf  # changed after it was checked: write_video checks again
    with pytest.raises(InputError, match="^audio: .*finite"):
        media.write_video(frames(), tmp_path / "a.mp4", fps=FPS, audio=a)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="^target_lufs: "):
        media.normalize_loudness(tone(1.0), target_lufs=3)


def test_crossfade_length_and_continuity():
    a, b = tone(1.0, hz=440), tone(1.0, hz=440, phase=math.pi)  # b is a's opposite: a cut would jump
    joined = media.crossfade(a, b, 0.25)
    assert joined.num_samples == a.num_samples + b.num_samples - round(0.25 * RATE)
    np.testing.assert_array_equal(joined.samples[:1000], a.samples[:1000])
    np.testing.assert_array_equal(joined.samples[-1000:], b.samples[-1000:])
    max_step = np.abs(np.diff(a.samples[:, 0])).max()
    assert np.abs(np.diff(joined.samples[:, 0])).max() <= 1.5 * max_step
    cut = media.crossfade(a, tone(1.0, hz=440, phase=math.pi / 2), 0)
    assert cut.num_samples == 2 * a.num_samples
    assert np.abs(np.diff(cut.samples[:, 0])).max() > 3 * max_step  # what a seam without a fade does
    noise = np.random.default_rng(0)
    x = Audio(noise.uniform(-0.5, 0.5, (RATE, 1)).astype(np.float32), RATE)
    y = Audio(noise.uniform(-0.5, 0.5, (RATE, 1)).astype(np.float32), RATE)
    mid = media.crossfade(x, y, 1.0).samples  # all overlap: equal power keeps uncorrelated RMS level
    assert abs(np.sqrt((mid ** 2).mean()) / np.sqrt((x.samples ** 2).mean()) - 1) < 0.05


def test_crossfade_refusals():
    with pytest.raises(InputError, match="^seconds: 2 .*from 0 to 1"):
        media.crossfade(tone(1.0), tone(1.5), 2)
    with pytest.raises(InputError, match="^audio: .*one sample rate"):
        media.crossfade(tone(1.0), tone(1.0, rate=22050), 0.1)

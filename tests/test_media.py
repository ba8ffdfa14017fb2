"""mora.media: reading every image mode and video container we accept, writing browser-playable
MP4s atomically, and turning every kind of bad file into a one-line InputError.

Every input is made here in tmp_path (PIL, our own writer, or the ffmpeg binary that
imageio-ffmpeg bundles); nothing touches the network.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from mora import media
from mora.errors import InputError
from mora.media import Video

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

# Mean absolute difference (0-255 scale) allowed between frames written as H.264 at crf 18 and
# read back, on smooth content. Typical is ~1.5.
ROUND_TRIP_TOL = 3.0


def gradient_video(t: int = 10, h: int = 48, w: int = 64) -> np.ndarray:
    """Smooth, moving RGB gradient: compresses well, so round-trip error is small and meaningful."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(t):
        r = xx * 200 // max(w - 1, 1) + 4 * i  # no wrap-around: a sharp edge is not smooth
        g = yy * 255 // max(h - 1, 1)
        b = np.full_like(xx, 60 + 10 * i)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.stack(frames).astype(np.uint8)


def ffmpeg_make(path: Path, *args: str) -> Path:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args, str(path)], check=True, capture_output=True, timeout=60)
    return path


def ffmpeg_info(path: Path) -> str:
    """ffmpeg's description of a file (stderr of `ffmpeg -i`; ffprobe may not exist)."""
    proc = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True, timeout=60)
    return proc.stderr


def truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def noise_image(size=(96, 64), mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def assert_input_error(excinfo, argument: str, value: str, *words: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg
    assert msg.startswith(f"{argument}: "), msg
    assert repr(value) in msg, msg
    assert ";" in msg, msg  # the fix follows the semicolon
    for word in words:
        assert word in msg, msg


@pytest.fixture
def mp4(tmp_path) -> Path:
    return media.write_video(gradient_video(), tmp_path / "clip.mp4", fps=8)


# ------------------------------------------------------------------------------------------
# write_video / read_video round trip


def test_round_trip_frames_size_fps_and_pixels(tmp_path):
    frames = gradient_video(t=10, h=48, w=64)
    out = media.write_video(frames, tmp_path / "sub" / "dir" / "clip.mp4", fps=8)
    assert out == tmp_path / "sub" / "dir" / "clip.mp4"
    video = media.read_video(out)
    assert isinstance(video, Video)
    assert video.frames.shape == (10, 48, 64, 3)
    assert video.frames.dtype == np.uint8
    assert (video.num_frames, video.width, video.height) == (10, 64, 48)
    assert video.fps == pytest.approx(8.0)
    diff = np.abs(video.frames.astype(int) - frames.astype(int)).mean()
    assert diff < ROUND_TRIP_TOL
    assert media.probe_video(out) == (64, 48, pytest.approx(8.0), 10)


def test_fractional_fps_round_trips_closely(tmp_path):
    # imageio-ffmpeg passes the rate to ffmpeg as a fraction (24000/1001), but reads it back from
    # ffmpeg's header text, which prints two decimals: 23.98.
    out = media.write_video(gradient_video(t=4), tmp_path / "ntsc.mp4", fps=24000 / 1001)
    assert media.read_video(out).fps == pytest.approx(24000 / 1001, abs=0.01)


def test_odd_size_is_padded_by_edge_replication(tmp_path):
    frames = gradient_video(t=6, h=75, w=113)
    out = media.write_video(frames, tmp_path / "odd.mp4", fps=7)
    video = media.read_video(out)
    assert (video.width, video.height, video.num_frames) == (114, 76, 6)
    top_left = video.frames[:, :75, :113].astype(int)
    assert np.abs(top_left - frames.astype(int)).mean() < ROUND_TRIP_TOL
    # the extra column/row repeats the last one (up to compression error)
    assert np.abs(video.frames[:, :75, 113].astype(int) - frames[:, :, 112].astype(int)).mean() < 6
    assert np.abs(video.frames[:, 75, :113].astype(int) - frames[:, 74, :].astype(int)).mean() < 6


def test_output_is_h264_yuv420p_faststart(mp4):
    info = ffmpeg_info(mp4)
    video_line = next(line for line in info.splitlines() if "Video:" in line)
    assert re.search(r"Video: h264\b", video_line), video_line
    assert "yuv420p" in video_line, video_line
    data = mp4.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # index first: browsers start playing at once


def test_accepts_list_of_pil_images_and_generators(tmp_path):
    frames = gradient_video(t=4, h=48, w=64)
    pil = [Image.fromarray(f).convert("RGBA") for f in frames]  # converted to RGB on the way
    a = media.read_video(media.write_video(pil, tmp_path / "pil.mp4", fps=4))
    b = media.read_video(media.write_video((f for f in frames), tmp_path / "gen.mp4", fps=4))
    c = media.read_video(media.write_video(list(frames), tmp_path / "list.mp4", fps=4))
    for video in (a, b, c):
        assert video.frames.shape == (4, 48, 64, 3)
        assert np.abs(video.frames.astype(int) - frames.astype(int)).mean() < ROUND_TRIP_TOL


def test_video_dataclass_helpers():
    video = Video(gradient_video(t=3, h=20, w=30), fps=5.0)
    images = video.pil_frames()
    assert len(images) == 3
    assert all(im.mode == "RGB" and im.size == (30, 20) for im in images)
    assert np.array_equal(np.asarray(images[1]), video.frames[1])
    with pytest.raises(ValueError):
        Video(np.zeros((3, 20, 30), np.uint8), fps=5.0)


# ------------------------------------------------------------------------------------------
# Atomic writes


def test_bad_frame_midway_leaves_nothing(tmp_path):
    frames = list(gradient_video(t=5, h=32, w=32))
    frames[3] = np.zeros((16, 16, 3), np.uint8)
    dest = tmp_path / "out" / "bad.mp4"
    with pytest.raises(InputError, match=r"^frames: frame 3 .*; pass frames of one size"):
        media.write_video(frames, dest, fps=8)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no temp file either


def test_exception_in_generator_leaves_nothing_and_keeps_old_file(tmp_path):
    dest = tmp_path / "keep.mp4"
    dest.write_bytes(b"previous run")

    def frames():
        yield from gradient_video(t=3, h=32, w=32)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        media.write_video(frames(), dest, fps=8)
    assert dest.read_bytes() == b"previous run"  # untouched: the new file never replaced it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]


def test_atomic_path_success_and_failure(tmp_path):
    dest = tmp_path / "a" / "note.txt"
    with media.atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.suffix == ".txt" and tmp != dest
        tmp.write_text("hello")
        assert not dest.exists()
    assert dest.read_text() == "hello"

    with pytest.raises(KeyboardInterrupt):
        with media.atomic_path(tmp_path / "b.mp4", suffix=".mp4") as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == [tmp_path / "a"]
    assert list((tmp_path / "a").iterdir()) == [dest]


def test_atomic_path_refuses_a_directory(tmp_path):
    with pytest.raises(InputError) as excinfo:
        media.write_json({}, tmp_path)
    assert_input_error(excinfo, "out", str(tmp_path), "is a directory")


def test_write_image_and_write_json(tmp_path):
    img = noise_image((33, 17))
    out = media.write_image(img, tmp_path / "x" / "frame.png")
    assert out == tmp_path / "x" / "frame.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(np.asarray(media.read_image(out)), np.asarray(img))
    cmyk = media.write_image(img.convert("CMYK"), tmp_path / "cmyk.png")  # PNG has no CMYK
    assert media.read_image(cmyk).size == (33, 17)

    out = media.write_json({"path": tmp_path / "v.mp4", "n": 3}, tmp_path / "y" / "m.json")
    assert json.loads(out.read_text()) == {"path": str(tmp_path / "v.mp4"), "n": 3}
    assert out.read_text().startswith('{\n  "path"')
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.json"]


# ------------------------------------------------------------------------------------------
# write_video validation


@pytest.mark.parametrize("fps", [0, -5, float("nan"), float("inf"), True, "fast"])
def test_write_video_rejects_bad_fps(tmp_path, fps):
    dest = tmp_path / "v.mp4"
    with pytest.raises(InputError, match=r"^fps: .*; pass a number greater than 0"):
        media.write_video(gradient_video(t=2), dest, fps=fps)
    assert not dest.exists()


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((0, 32, 32, 3), np.uint8),
        [],
        (f for f in []),
        np.zeros((2, 32, 32, 3), np.float32),
        np.zeros((2, 32, 32), np.uint8),
        [np.zeros((32, 32, 4), np.uint8)],
        "frames.mp4",
    ],
    ids=["empty-array", "empty-list", "empty-generator", "float", "gray", "rgba-array", "str"],
)
def test_write_video_rejects_bad_frames(tmp_path, frames):
    with pytest.raises(InputError, match=r"^frames: .*; pass "):
        media.write_video(frames, tmp_path / "v.mp4", fps=8)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# read_video: other containers and GIF


@pytest.mark.parametrize(
    "name, codec",
    [
        ("clip.webm", ["-c:v", "libvpx", "-pix_fmt", "yuv420p"]),
        # x264 refuses odd sizes in 4:2:0; 4:4:4 is how odd-sized H.264 exists in the wild
        ("clip.mov", ["-c:v", "libx264", "-pix_fmt", "yuv444p"]),
        ("clip.mkv", ["-c:v", "libx264", "-pix_fmt", "yuv444p"]),
        ("clip.avi", ["-c:v", "mpeg4", "-pix_fmt", "yuv420p"]),
    ],
)
def test_read_video_containers_with_odd_size(tmp_path, name, codec):
    # The bundled ffmpeg has libvpx, so WebM is tested for real.
    src = ["-f", "lavfi", "-i", "testsrc=size=113x75:rate=5", "-frames:v", "6"]
    path = ffmpeg_make(tmp_path / name, *src, *codec)
    video = media.read_video(path)
    assert video.frames.shape == (6, 75, 113, 3)
    assert video.fps == pytest.approx(5.0)
    assert media.probe_video(path) == (113, 75, pytest.approx(5.0), 6)


def test_read_video_gif(tmp_path):
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    frames = [Image.new("RGB", (31, 17), c) for c in colors]
    path = tmp_path / "anim.gif"
    # GIF delays are stored in 1/100 s: 50 ms is exact (20 fps), 125 ms would become 120 ms.
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    video = media.read_video(path)
    assert video.frames.shape == (4, 17, 31, 3)
    assert video.fps == pytest.approx(20.0)
    assert [tuple(int(v) for v in video.frames[i, 5, 5]) for i in range(4)] == colors
    assert media.probe_video(path) == (31, 17, pytest.approx(20.0), 4)


def test_read_video_gif_without_delay_defaults_to_10_fps(tmp_path):
    frames = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(3)]
    path = tmp_path / "nodelay.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=0)
    assert media.read_video(path).fps == pytest.approx(10.0)


def test_missing_fps_metadata_defaults_to_24_with_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="mora.media"):
        assert media._video_fps({"fps": 0}, tmp_path / "v.mp4") == 24.0
        assert media._video_fps({}, tmp_path / "v.mp4") == 24.0
        assert media._video_fps({"fps": float("nan")}, tmp_path / "v.mp4") == 24.0
    assert len([r for r in caplog.records if "assuming 24 fps" in r.getMessage()]) == 3
    assert media._video_fps({"fps": 30.0}, tmp_path / "v.mp4") == 30.0


# ------------------------------------------------------------------------------------------
# read_image: every mode becomes RGB


def pixel(img: Image.Image, xy=(0, 0)) -> tuple[int, ...]:
    assert img.mode == "RGB"
    return tuple(int(v) for v in img.getpixel(xy))


def test_rgba_transparent_becomes_white(tmp_path):
    img = Image.new("RGBA", (113, 75), (255, 0, 0, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))
    img.putpixel((1, 0), (0, 0, 255, 128))
    img.save(tmp_path / "a.png")
    out = media.read_image(tmp_path / "a.png")
    assert out.size == (113, 75)
    assert pixel(out, (0, 0)) == (255, 255, 255)
    assert pixel(out, (5, 5)) == (255, 0, 0)
    r, g, b = pixel(out, (1, 0))  # half-transparent blue over white
    assert abs(r - 127) <= 2 and abs(g - 127) <= 2 and b == 255


def test_la_l_and_16bit_gray(tmp_path):
    la = Image.new("LA", (9, 7), (40, 255))
    la.putpixel((0, 0), (0, 0))
    la.save(tmp_path / "la.png")
    out = media.read_image(tmp_path / "la.png")
    assert pixel(out, (0, 0)) == (255, 255, 255) and pixel(out, (3, 3)) == (40, 40, 40)

    Image.new("L", (9, 7), 77).save(tmp_path / "l.png")
    assert pixel(media.read_image(tmp_path / "l.png")) == (77, 77, 77)

    deep = Image.fromarray(np.array([[0, 65535], [32896, 1000]], dtype=np.uint16))
    deep.save(tmp_path / "deep.png")  # 16-bit: scaled, not clipped to white
    out = media.read_image(tmp_path / "deep.png")
    assert [pixel(out, xy)[0] for xy in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [0, 255, 128, 4]


def test_palette_with_and_without_transparency(tmp_path):
    p = Image.new("P", (10, 10), 1)
    p.putpalette([0, 0, 0, 0, 200, 0] + [0, 0, 0] * 254)
    p.putpixel((0, 0), 0)
    p.save(tmp_path / "p.png")
    out = media.read_image(tmp_path / "p.png")
    assert pixel(out, (0, 0)) == (0, 0, 0) and pixel(out, (5, 5)) == (0, 200, 0)

    p.save(tmp_path / "pt.png", transparency=0)
    out = media.read_image(tmp_path / "pt.png")
    assert pixel(out, (0, 0)) == (255, 255, 255) and pixel(out, (5, 5)) == (0, 200, 0)


def test_gif_first_frame_webp_jpeg_bmp_cmyk(tmp_path):
    frames = [Image.new("RGB", (21, 13), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    out = media.read_image(tmp_path / "anim.gif")
    assert out.size == (21, 13) and pixel(out) == (255, 0, 0)

    src = noise_image((113, 75))
    src.save(tmp_path / "x.webp", lossless=True)
    assert np.array_equal(np.asarray(media.read_image(tmp_path / "x.webp")), np.asarray(src))
    src.save(tmp_path / "x.bmp")
    assert np.array_equal(np.asarray(media.read_image(tmp_path / "x.bmp")), np.asarray(src))

    smooth = Image.fromarray(gradient_video(t=1, h=75, w=113)[0])
    smooth.save(tmp_path / "x.jpg", quality=95)
    out = media.read_image(tmp_path / "x.jpg")
    assert out.size == (113, 75)
    assert np.abs(np.asarray(out, dtype=int) - np.asarray(smooth, dtype=int)).mean() < 3

    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    r, g, b = pixel(media.read_image(tmp_path / "cmyk.jpg"))
    assert r > 200 and g < 50 and b < 50


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert media.read_image(tmp_path / "rot.jpg").size == (20, 40)


# ------------------------------------------------------------------------------------------
# Bad input: one-line InputError naming the argument, the path as given and the fix


def test_missing_directory_and_empty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("empty.png").touch()
    Path("empty.mp4").touch()
    Path("folder").mkdir()
    cases = [
        (media.read_image, "nope.png", "does not exist; check the path"),
        (media.read_video, "nope.mp4", "does not exist; check the path"),
        (media.read_image, "folder", "is a directory; pass a file"),
        (media.read_video, "folder", "is a directory; pass a file"),
        (media.read_image, "empty.png", "is empty (0 bytes)"),
        (media.read_video, "empty.mp4", "is empty (0 bytes)"),
        (media.probe_video, "empty.mp4", "is empty (0 bytes)"),
    ]
    for fn, value, words in cases:
        argument = "image" if fn is media.read_image else "video"
        with pytest.raises(InputError) as excinfo:
            fn(value)
        assert_input_error(excinfo, argument, value, words)


def test_text_files_in_disguise(tmp_path):
    for name in ["notes.png", "notes.jpg"]:
        (tmp_path / name).write_text("just some text\n" * 20)
        with pytest.raises(InputError) as excinfo:
            media.read_image(tmp_path / name, argument="--image")
        assert_input_error(excinfo, "--image", str(tmp_path / name), "is not a readable image", "PNG, JPEG")
    for name in ["notes.mp4", "notes.gif", "notes.webm"]:
        (tmp_path / name).write_text("just some text\n" * 20)
        for fn in (media.read_video, media.probe_video):
            with pytest.raises(InputError) as excinfo:
                fn(tmp_path / name, argument="video_a")
            assert_input_error(
                excinfo, "video_a", str(tmp_path / name), "is not a readable video", "MP4, WebM"
            )


def test_truncated_images(tmp_path):
    src = noise_image((120, 90))
    src.save(tmp_path / "full.png")
    src.save(tmp_path / "full.jpg", quality=95)
    for name in ["full.png", "full.jpg"]:
        cut = truncate(tmp_path / name, tmp_path / f"cut{Path(name).suffix}")
        with pytest.raises(InputError) as excinfo:
            media.read_image(cut)
        assert_input_error(excinfo, "image", str(cut), "is not a readable image (truncated")


def test_truncated_videos(tmp_path):
    rng = np.random.default_rng(0)  # noise, so the second half holds real frames
    frames = rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8)
    # Our MP4s have the index up front (+faststart), so ffmpeg decodes the first half without
    # failing; only its log says "partial file". Without faststart the index is lost instead.
    ours = media.write_video(frames, tmp_path / "ours.mp4", fps=8)
    plain = ffmpeg_make(tmp_path / "plain.mp4", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=8",
                        "-frames:v", "12", "-c:v", "libx264", "-pix_fmt", "yuv420p")  # fmt: skip
    webm = ffmpeg_make(tmp_path / "full.webm", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=8",
                       "-frames:v", "12", "-c:v", "libvpx")  # fmt: skip
    for src in (ours, plain, webm):
        cut = truncate(src, tmp_path / f"cut_{src.name}")
        for fn in (media.read_video, media.probe_video):
            with pytest.raises(InputError) as excinfo:
                fn(cut)
            assert_input_error(excinfo, "video", str(cut), "is not a readable video (truncated")
            with pytest.raises(InputError):
                media.check_file(cut, argument="video", kinds=("video",))


def test_truncated_gif(tmp_path):
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(4)]
    frames[0].save(tmp_path / "full.gif", save_all=True, append_images=frames[1:], duration=100)
    cut = truncate(tmp_path / "full.gif", tmp_path / "cut.gif")
    with pytest.raises(InputError) as excinfo:
        media.read_video(cut)
    assert_input_error(excinfo, "video", str(cut), "is not a readable video")


def test_video_without_frames(tmp_path):
    # ffmpeg writes no video stream at all for 0 frames; an audio-only file is the same case
    zero = ffmpeg_make(tmp_path / "zero.mp4", "-f", "lavfi", "-i", "color=size=64x64:rate=8",
                       "-frames:v", "0", "-c:v", "libx264")  # fmt: skip
    audio = ffmpeg_make(tmp_path / "audio.m4a", "-f", "lavfi", "-i", "sine=duration=0.2", "-c:a", "aac")
    for path in (zero, audio):
        for fn in (media.read_video, media.probe_video):
            with pytest.raises(InputError) as excinfo:
                fn(path, argument="video_b")
            assert_input_error(excinfo, "video_b", str(path), "has no video frames")


def test_still_image_is_not_a_video(tmp_path):
    noise_image((32, 32)).save(tmp_path / "still.png")
    with pytest.raises(InputError) as excinfo:
        media.read_video(tmp_path / "still.png")
    assert_input_error(excinfo, "video", str(tmp_path / "still.png"), "is a still image")


def test_check_file(tmp_path, mp4):
    noise_image((20, 20)).save(tmp_path / "a.png")
    assert media.check_file(tmp_path / "a.png", argument="image") == tmp_path / "a.png"
    assert media.check_file(str(mp4), argument="video", kinds=("video",)) == mp4
    assert media.check_file(mp4, argument="input", kinds=("image", "video")) == mp4
    assert (
        media.check_file(tmp_path / "a.png", argument="input", kinds=("image", "video")) == tmp_path / "a.png"
    )

    with pytest.raises(InputError) as excinfo:
        media.check_file(mp4, argument="image")
    assert_input_error(excinfo, "image", str(mp4), "is not a readable image")
    with pytest.raises(InputError) as excinfo:
        media.check_file(tmp_path / "gone.mp4", argument="video_a", kinds=("video",))
    assert_input_error(excinfo, "video_a", str(tmp_path / "gone.mp4"), "does not exist; check the path")
    (tmp_path / "t.txt").write_text("text")
    with pytest.raises(InputError) as excinfo:
        media.check_file(tmp_path / "t.txt", argument="input", kinds=("image", "video"))
    assert_input_error(excinfo, "input", str(tmp_path / "t.txt"), "is not readable as an image or a video")
    with pytest.raises(ValueError):
        media.check_file(mp4, argument="video", kinds=("audio",))


# ------------------------------------------------------------------------------------------
# PyAV: damage is an exception or a shortfall against what the container declares; a slow decode
# is its own error (issue 20, item 3)


def test_truncated_mp4_is_damage_reported_by_pyav(tmp_path):
    import av

    rng = np.random.default_rng(0)
    ours = media.write_video(rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8), tmp_path / "ours.mp4", fps=8)
    cut = truncate(ours, tmp_path / "cut.mp4")
    with pytest.raises(InputError) as excinfo:
        media.read_video(cut)
    assert_input_error(excinfo, "video", str(cut), "(truncated or damaged: decoding failed after")
    assert isinstance(excinfo.value.__cause__, av.error.FFmpegError)  # PyAV's own report, no log reading


def test_mp4_cut_between_frames_falls_short_of_its_declared_frames(tmp_path):
    """Cut exactly where a frame starts, nothing fails to decode: the index still counts 12 frames."""
    import av

    rng = np.random.default_rng(0)
    ours = media.write_video(rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8), tmp_path / "ours.mp4", fps=8)
    with av.open(str(ours)) as container:
        starts = sorted(p.pos for p in container.demux(video=0) if p.pos is not None and p.pos >= 0)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(ours.read_bytes()[: starts[6]])
    for read in (media.read_video, media.probe_video, lambda p: list(media.iter_frames(p))):
        with pytest.raises(InputError) as excinfo:
            read(cut)
        assert_input_error(excinfo, "video", str(cut), "truncated or damaged: 6 of the 12 frames it declares")


def test_webm_cut_short_falls_short_of_its_declared_duration(tmp_path):
    webm = ffmpeg_make(tmp_path / "full.webm", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=8",
                       "-frames:v", "12", "-c:v", "libvpx")  # fmt: skip
    assert media.probe_video(webm)[3] == 12
    cut = truncate(webm, tmp_path / "cut.webm")
    with pytest.raises(InputError) as excinfo:
        media.probe_video(cut)
    assert_input_error(excinfo, "video", str(cut), "truncated or damaged", "of the 1.50 s it declares")


def test_a_non_video_is_not_a_video_not_damage(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("just some text\n" * 20)
    with pytest.raises(InputError) as excinfo:
        media.probe_video(path)
    assert_input_error(excinfo, "video", str(path), "(truncated or not a video file)")
    assert "damaged" not in str(excinfo.value)


@pytest.mark.parametrize("reader", ["read_video", "probe_video", "iter_frames"])
def test_a_decode_past_its_bound_is_a_timeout_not_a_bad_file(tmp_path, monkeypatch, reader):
    from mora.errors import MediaTimeoutError
    from mora.media import video

    path = media.write_video(gradient_video(t=6), tmp_path / "slow.mp4", fps=8)
    monkeypatch.setattr(video, "DECODE_TIMEOUT_S", 0.0)  # every decode is already late at its first frame
    with pytest.raises(MediaTimeoutError) as excinfo:
        list(getattr(media, reader)(path) or ())
    message = str(excinfo.value)
    assert not isinstance(excinfo.value, InputError)
    assert message.startswith(f"video: {str(path)!r} took longer than 0 s to decode")
    assert "not a readable video" not in message and "try again" in message


def test_display_rotation_is_applied(tmp_path):
    base = ffmpeg_make(tmp_path / "base.mp4", "-f", "lavfi", "-i", "testsrc=size=64x32:rate=5",
                       "-frames:v", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p")  # fmt: skip
    proc = subprocess.run([FFMPEG, "-v", "error", "-y", "-display_rotation", "90", "-i", str(base), "-c", "copy",
                           str(tmp_path / "rot.mp4")], capture_output=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip("this ffmpeg has no -display_rotation (ffmpeg < 6)")
    video = media.read_video(tmp_path / "rot.mp4")
    assert video.frames.shape == (3, 64, 32, 3)  # portrait, as players show it
    assert media.probe_video(tmp_path / "rot.mp4") == (32, 64, pytest.approx(5.0), 3)
    upright = media.read_video(base).frames[0]
    assert np.abs(np.rot90(upright).astype(int) - video.frames[0].astype(int)).mean() < 1


def test_media_runs_no_subprocess():
    """Reading and writing videos happen in-process (PyAV): no ffmpeg subprocess to hang without a timeout."""
    import ast

    from mora import media as package

    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("subprocess", "imageio", "imageio_ffmpeg") for n in names), path

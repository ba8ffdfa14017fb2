"""Score-card metrics: classical (numpy + OpenCV) stand-ins for VBench's dimensions and Mora's own.

Every metric takes `frames`, a `(T, H, W, 3)` uint8 RGB array, or a `Clip` built from one (a
`Clip` caches the analysis several metrics share, such as the downscaled grey frames and the
adjacent-frame optical flow). Scores are in [0, 1], higher is better, unless the docstring says
otherwise. `docs/metrics.md` gives each definition and how it differs from VBench's.

Motion and structure are analysed on grey frames downscaled so that the shorter side is at most
`ANALYSIS_SHORT_SIDE` (256, the size VBench's thresholds are written for); flow magnitudes are
reported in pixels of the original frame, so VBench's thresholds apply unchanged.

Example:
    >>> import numpy as np
    >>> from mora.evaluation.metrics import temporal_flickering
    >>> temporal_flickering(np.zeros((8, 64, 64, 3), np.uint8))
    1.0
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from mora.errors import InputError

logger = logging.getLogger(__name__)

#: Motion and structure are analysed with the shorter side downscaled to this (never upscaled).
ANALYSIS_SHORT_SIDE = 256
#: Imaging quality is measured with the longer side downscaled to this (VBench's MUSIQ preprocessing).
QUALITY_LONG_SIDE = 512
#: Farneback settings: 5 pyramid levels reach motions of tens of pixels at 256 px.
FARNEBACK = {
    "pyr_scale": 0.5,
    "levels": 5,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}
#: VBench dynamic degree: mean of the top 5% flow magnitudes, compared with 6 px at 256 px.
TOP_FRACTION = 0.05
DYNAMIC_THRESHOLD_AT_256 = 6.0
#: Imaging quality: sharpness = v / (v + SHARPNESS_HALF) for Laplacian variance v; noise penalty
#: 1 / (1 + (sigma / NOISE_SIGMA)^2) for the estimated noise standard deviation sigma (grey levels).
SHARPNESS_HALF = 100.0
NOISE_SIGMA = 8.0
#: Minimum shift (analysis pixels) worth re-aligning for; below it alignment only blurs.
_MIN_SHIFT = 0.1
_SSIM_RADIUS = 5  # 11x11 Gaussian window

METRIC_INFO: dict[str, str] = {
    "temporal_flickering": "1 - mean abs difference of adjacent frames / 255 (VBench); 1 = no change at all",
    "dynamic_degree": "1 if enough adjacent-frame pairs move more than VBench's flow threshold, else 0",
    "flow_magnitude": "mean of the per-pair top-5% optical-flow magnitudes, pixels per frame (not 0..1)",
    "motion_smoothness": "1 - error/255 of predicting each middle frame by flow-warping its neighbours",
    "subject_consistency": "motion-aligned SSIM of the centre region to the first and previous frame",
    "background_consistency": "motion-aligned SSIM of the border region to the first and previous frame",
    "imaging_quality": "sharpness (Laplacian variance) times a noise penalty; blur or noise lowers it",
    "tmean": "mean SSIM of adjacent grey frames (unaligned): how little each frame changes",
    "cuts": "frame indices where a hard cut starts (not a score)",
    "seam_continuity": "per known segment boundary: typical in-clip change / change at the seam, max 1",
    "clip_text_similarity": "optional: mean CLIP cosine similarity of frames to the prompt (VideoTI stand-in)",
}


def _frames_error(shape: object, problem: str) -> InputError:
    return InputError(f"frames: got {shape} {problem}; pass a (T, H, W, 3) uint8 RGB numpy array")


def check_frames(frames: Any, *, min_frames: int = 1) -> np.ndarray:
    """Validate a video array and return it (a `Clip`'s frames are returned as they are).

    Args:
        frames: a `(T, H, W, 3)` uint8 RGB array, or a `Clip`.
        min_frames: the fewest frames the caller can score.

    Example:
        >>> check_frames(np.zeros((2, 8, 8, 3), np.uint8)).shape
        (2, 8, 8, 3)
    """
    if isinstance(frames, Clip):
        frames = frames.frames
    if not isinstance(frames, np.ndarray):
        raise _frames_error(type(frames).__name__, "instead of an array")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise _frames_error(f"an array of shape {frames.shape}", "which is not (T, H, W, 3)")
    if frames.dtype != np.uint8:
        raise _frames_error(f"dtype {frames.dtype}", "instead of uint8")
    if frames.shape[1] < 8 or frames.shape[2] < 8:
        raise _frames_error(f"frames of {frames.shape[2]}x{frames.shape[1]}", "smaller than 8x8 pixels")
    if frames.shape[0] < min_frames:
        raise _frames_error(f"{frames.shape[0]} frame(s)", f"but this metric needs at least {min_frames}")
    return np.ascontiguousarray(frames)  # OpenCV rejects negative strides (e.g. frames[..., ::-1])


@dataclass
class _PairStats:
    """Per adjacent pair (t, t+1): flow strength and what the flow cannot explain."""

    top_flow: np.ndarray  # mean of the top 5% flow magnitudes, original-frame pixels
    residual: np.ndarray  # mean |frame t - frame t+1 warped back by the flow| / 255


class Clip:
    """A validated video plus the analysis the metrics share, computed lazily and once.

    Args:
        frames: a `(T, H, W, 3)` uint8 RGB array.

    Example:
        >>> clip = Clip(np.zeros((4, 32, 48, 3), np.uint8))
        >>> clip.gray.shape, clip.scale
        ((4, 32, 48), 1.0)
    """

    def __init__(self, frames: np.ndarray):
        self.frames = check_frames(frames)
        self.num_frames, self.height, self.width = (int(n) for n in self.frames.shape[:3])
        self.scale = min(1.0, ANALYSIS_SHORT_SIDE / min(self.height, self.width))
        self._gray: np.ndarray | None = None
        self._grayf: np.ndarray | None = None
        self._pairs: _PairStats | None = None

    @classmethod
    def of(cls, frames: Clip | np.ndarray, *, min_frames: int = 1) -> Clip:
        """`frames` itself if it is a `Clip` already, else a new one; checks the frame count."""
        clip = frames if isinstance(frames, Clip) else cls(frames)
        check_frames(clip.frames, min_frames=min_frames)
        return clip

    @property
    def gray(self) -> np.ndarray:
        """Grey frames at analysis size, `(T, h, w)` uint8."""
        if self._gray is None:
            h = max(8, round(self.height * self.scale))
            w = max(8, round(self.width * self.scale))
            out = np.empty((self.num_frames, h, w), np.uint8)
            for i, frame in enumerate(self.frames):
                small = (
                    frame if self.scale == 1.0 else cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
                )
                out[i] = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
            self._gray = out
        return self._gray

    @property
    def grayf(self) -> np.ndarray:
        """`gray` as float32, for SSIM and phase correlation."""
        if self._grayf is None:
            self._grayf = self.gray.astype(np.float32)
        return self._grayf

    def flow(self, i: int, j: int) -> np.ndarray:
        """Farneback flow from frame i to frame j at analysis size: frame_i(x) ~ frame_j(x + flow(x))."""
        return cv2.calcOpticalFlowFarneback(self.gray[i], self.gray[j], None, **FARNEBACK)

    def top_flow(self, flow: np.ndarray) -> float:
        """VBench's per-pair motion score: mean of the top 5% magnitudes, in original-frame pixels."""
        mag = cv2.magnitude(flow[..., 0], flow[..., 1]).ravel()
        k = max(1, int(mag.size * TOP_FRACTION))
        return float(np.partition(mag, mag.size - k)[mag.size - k :].mean()) / self.scale

    @property
    def pairs(self) -> _PairStats:
        """Flow strength and motion-compensated difference of every adjacent pair (one flow each)."""
        if self._pairs is None:
            n = self.num_frames - 1
            top, residual = np.zeros(n), np.zeros(n)
            for t in range(n):
                flow = self.flow(t, t + 1)
                top[t] = self.top_flow(flow)
                residual[t] = _compensated_difference(self.gray[t], self.gray[t + 1], flow)
            self._pairs = _PairStats(top, residual)
        return self._pairs


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs, ys


def _compensated_difference(a: np.ndarray, b: np.ndarray, flow: np.ndarray) -> float:
    """Mean |a - b warped onto a| / 255, over pixels whose source lies inside b."""
    h, w = a.shape
    xs, ys = _grid(h, w)
    mx, my = xs + flow[..., 0], ys + flow[..., 1]
    pred = cv2.remap(b, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    diff = cv2.absdiff(a, pred)
    valid = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    # Everything flowing out of frame (a fast pan of a tiny clip) leaves no valid pixel: use all.
    return float(diff[valid].mean() if valid.mean() > 0.1 else diff.mean()) / 255.0


def _ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) of two float32 grey images."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    mu_aa, mu_bb, mu_ab = mu_a * mu_a, mu_b * mu_b, mu_a * mu_b
    var_a, var_b, cov = blur(a * a) - mu_aa, blur(b * b) - mu_bb, blur(a * b) - mu_ab
    return ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_aa + mu_bb + c1) * (var_a + var_b + c2))


# ---------------------------------------------------------------------------------------------
# The metrics
# ---------------------------------------------------------------------------------------------


def temporal_flickering(frames: Clip | np.ndarray) -> float:
    """VBench temporal flickering: mean over adjacent pairs of (255 - mean |difference|) / 255.

    Computed at full resolution on all three channels, exactly as VBench does. VBench applies it
    only to videos of static scenes; on a moving video it also drops with motion.

    Example:
        >>> temporal_flickering(np.zeros((3, 8, 8, 3), np.uint8))
        1.0
    """
    clip = Clip.of(frames, min_frames=2)
    f = clip.frames
    mae = [float(cv2.absdiff(f[t], f[t + 1]).mean()) for t in range(len(f) - 1)]
    return (255.0 - float(np.mean(mae))) / 255.0


def _dynamic_stats(clip: Clip, fps: float | None) -> dict[str, Any]:
    """VBench's dynamic-degree rule on Farneback flow (see `dynamic_degree`)."""
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise InputError(f"fps: got {fps!r}; pass a positive number of frames per second, or None")
    # VBench samples about 8 frames per second and raises the threshold for slower videos.
    interval = 1 if fps is None else max(1, round(fps / 8.0))
    factor = 1.0 if fps is None else max(1.0, 8.0 / fps)
    sampled = list(range(0, clip.num_frames, interval))
    if interval == 1:
        scores = clip.pairs.top_flow
    else:
        scores = np.array(
            [clip.top_flow(clip.flow(a, b)) for a, b in zip(sampled, sampled[1:], strict=False)]
        )
    threshold = factor * DYNAMIC_THRESHOLD_AT_256 * min(clip.height, clip.width) / 256.0
    # VBench counts sampled frames, not pairs; at least one pair must move (VBench: 0 for < 3 frames).
    required = max(1, round(4 * len(sampled) / 16.0))
    above = int(np.sum(scores > threshold))
    return {
        "dynamic": int(above >= required),
        "flow_magnitude": float(np.mean(scores)) if len(scores) else 0.0,
        "threshold": threshold,
        "pairs_above": above,
        "required": required,
        "interval": interval,
    }


def dynamic_degree(frames: Clip | np.ndarray, *, fps: float | None = None) -> int:
    """VBench dynamic degree (0 or 1) with OpenCV Farneback flow in place of RAFT.

    Frames are sampled every `round(fps / 8)` frames (every frame when `fps` is None or below
    12). A pair moves when the mean of its top 5% flow magnitudes exceeds
    `max(1, 8 / fps) * 6 * min(H, W) / 256` pixels; the video is dynamic when at least
    `max(1, round(4 * sampled_frames / 16))` pairs move.

    Args:
        frames: video frames or a `Clip`.
        fps: the video's frame rate; None: treated as 8 fps or more (no sampling, factor 1).

    Example:
        >>> dynamic_degree(np.zeros((16, 64, 64, 3), np.uint8))
        0
    """
    return _dynamic_stats(Clip.of(frames, min_frames=2), fps)["dynamic"]


def flow_magnitude(frames: Clip | np.ndarray, *, fps: float | None = None) -> float:
    """Mean over (sampled) adjacent pairs of the top-5% flow magnitude, in original-frame pixels.

    Not in [0, 1]: pixels per frame (per sampled step when `fps` >= 12, see `dynamic_degree`).

    Example:
        >>> flow_magnitude(np.zeros((4, 64, 64, 3), np.uint8)) < 0.01
        True
    """
    return _dynamic_stats(Clip.of(frames, min_frames=2), fps)["flow_magnitude"]


def motion_smoothness(frames: Clip | np.ndarray) -> float:
    """How well each middle frame is predicted from its two neighbours by flow interpolation.

    For each t in 1..T-2, the Farneback flow from frame t-1 to frame t+1 (at analysis size, never
    looking at frame t) warps each neighbour half-way toward t; the average
    of the two is compared with the real frame t at full resolution in RGB. Score:
    `1 - mean abs error / 255`, VBench's scale (VBench interpolates with the AMT network).

    Example:
        >>> motion_smoothness(np.full((3, 16, 16, 3), 128, np.uint8))
        1.0
    """
    clip = Clip.of(frames, min_frames=3)
    f, h, w = clip.frames, clip.height, clip.width
    xs, ys = _grid(h, w)
    errors = []
    for t in range(1, clip.num_frames - 1):
        flow = clip.flow(t - 1, t + 1)
        if clip.scale != 1.0:
            flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) * (1.0 / clip.scale)
        half_x, half_y = 0.5 * flow[..., 0], 0.5 * flow[..., 1]
        # Linear motion: frame_t(x) ~ frame_t-1(x - flow/2) ~ frame_t+1(x + flow/2), with the flow
        # sampled at x rather than traced back (fine for smooth flow). One flow per frame keeps it fast.
        preds = [
            cv2.remap(f[t - 1], xs - half_x, ys - half_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
            cv2.remap(f[t + 1], xs + half_x, ys + half_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE),
        ]
        pred = cv2.addWeighted(preds[0], 0.5, preds[1], 0.5, 0.0)
        errors.append(float(cv2.absdiff(pred, f[t]).mean()))
    return 1.0 - float(np.mean(errors)) / 255.0


def _centre_box(h: int, w: int) -> tuple[slice, slice]:
    return slice(h // 4, h - h // 4), slice(w // 4, w - w // 4)


def _aligned_ssim(
    ref: np.ndarray, cur: np.ndarray, box: tuple[slice, slice], mask: np.ndarray | None
) -> float:
    """SSIM of `cur` to `ref` inside `box` (optionally only where `mask`), after aligning `ref` to
    `cur` by the global translation that phase correlation finds inside `box`."""
    h, w = ref.shape
    ref_box, cur_box = ref[box], cur[box]
    window = cv2.createHanningWindow((ref_box.shape[1], ref_box.shape[0]), cv2.CV_32F)
    # Copies: OpenCV's phaseCorrelate applies the window to its inputs in place.
    (dx, dy), _ = cv2.phaseCorrelate(ref_box.copy(), cur_box.copy(), window)
    valid = np.ones(ref_box.shape, bool) if mask is None else mask.copy()
    if abs(dx) >= _MIN_SHIFT or abs(dy) >= _MIN_SHIFT:
        # cur(x) ~ ref(x - d): shift ref by +d; keep pixels whose source (and SSIM window) is inside.
        shifted = cv2.warpAffine(
            ref,
            np.float32([[1, 0, dx], [0, 1, dy]]),
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        xs = np.arange(w, dtype=np.float32)[box[1]] - dx
        ys = np.arange(h, dtype=np.float32)[box[0]] - dy
        r = _SSIM_RADIUS
        inside = ((ys >= r) & (ys <= h - 1 - r))[:, None] & ((xs >= r) & (xs <= w - 1 - r))[None, :]
        if (valid & inside).mean() > 0.25:  # otherwise the "shift" is noise (a cut): compare unaligned
            ref_box, valid = shifted[box], valid & inside
    smap = _ssim_map(ref_box, cur_box)
    return float(np.clip(smap[valid].mean(), 0.0, 1.0))


def _region_consistency(clip: Clip, region: str) -> float:
    g = clip.grayf
    h, w = g.shape[1:]
    centre = _centre_box(h, w)
    if region == "subject":
        box, mask = centre, None
    else:
        box = (slice(0, h), slice(0, w))
        mask = np.ones((h, w), bool)
        mask[centre] = False
    sims = []
    for t in range(1, clip.num_frames):
        first = _aligned_ssim(g[0], g[t], box, mask)
        prev = first if t == 1 else _aligned_ssim(g[t - 1], g[t], box, mask)
        sims.append(0.5 * (first + prev))  # VBench: mean of similarity to the first and previous frame
    return float(np.mean(sims))


def subject_consistency(frames: Clip | np.ndarray) -> float:
    """Stand-in for VBench's DINO subject consistency, on the centre region (middle half of each side).

    For each frame t >= 1: 0.5 * (SSIM to frame 0 + SSIM to frame t-1), each SSIM computed on the
    centre region of the grey analysis-size frames after aligning the reference by the
    translation phase correlation finds in that region (so a steady pan or a subject drifting
    sideways stays consistent), clipped to [0, 1]; averaged over t.

    Example:
        >>> subject_consistency(np.full((3, 32, 32, 3), 90, np.uint8))
        1.0
    """
    return _region_consistency(Clip.of(frames, min_frames=2), "subject")


def background_consistency(frames: Clip | np.ndarray) -> float:
    """Stand-in for VBench's CLIP background consistency, on the border region (outside the centre).

    As `subject_consistency`, but the alignment is estimated on the whole frame and SSIM is
    averaged over the pixels outside the centre region.

    Example:
        >>> background_consistency(np.full((3, 32, 32, 3), 90, np.uint8))
        1.0
    """
    return _region_consistency(Clip.of(frames, min_frames=2), "background")


def _frame_quality(gray: np.ndarray) -> float:
    """Sharpness times a noise penalty for one grey uint8 frame at quality size."""
    g = gray.astype(np.float32)
    sharp_var = float(cv2.Laplacian(g, cv2.CV_32F, ksize=1).var())
    sharpness = sharp_var / (sharp_var + SHARPNESS_HALF)
    # Immerkaer (1996) noise estimate, taken over the flatter half of the image (by Sobel
    # gradient) so that texture and edges are not mistaken for noise.
    kernel = np.float32([[1, -2, 1], [-2, 4, -2], [1, -2, 1]])
    residual = np.abs(cv2.filter2D(g, cv2.CV_32F, kernel))[1:-1, 1:-1]
    gradient = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))[1:-1, 1:-1]
    flat = gradient <= np.median(gradient)
    sigma = math.sqrt(math.pi / 2.0) * float(residual[flat].mean()) / 6.0
    return sharpness / (1.0 + (sigma / NOISE_SIGMA) ** 2)


def imaging_quality(frames: Clip | np.ndarray, *, max_frames: int = 16) -> float:
    """Stand-in for VBench's MUSIQ imaging quality: sharpness with a penalty for noise.

    On grey frames with the longer side downscaled to 512 (VBench's MUSIQ preprocessing):
    `sharpness = v / (v + 100)` for the variance v of the Laplacian, times
    `1 / (1 + (sigma / 8)^2)` for the Immerkaer noise estimate sigma (grey levels) over the
    flatter half of the image. Averaged over up to `max_frames` evenly spaced frames.

    Example:
        >>> imaging_quality(np.full((2, 32, 32, 3), 128, np.uint8))
        0.0
    """
    clip = Clip.of(frames)
    h, w = clip.height, clip.width
    s = min(1.0, QUALITY_LONG_SIDE / max(h, w))
    size = (max(8, round(w * s)), max(8, round(h * s)))
    picks = np.unique(
        np.linspace(0, clip.num_frames - 1, min(max_frames, clip.num_frames)).round().astype(int)
    )
    scores = []
    for i in picks:
        frame = clip.frames[i] if s == 1.0 else cv2.resize(clip.frames[i], size, interpolation=cv2.INTER_AREA)
        scores.append(_frame_quality(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)))
    return float(np.mean(scores))


def tmean(frames: Clip | np.ndarray) -> float:
    """Mean SSIM of adjacent grey frames at analysis size (no motion alignment), clipped to [0, 1].

    Example:
        >>> tmean(np.full((3, 32, 32, 3), 7, np.uint8))
        1.0
    """
    clip = Clip.of(frames, min_frames=2)
    g = clip.grayf
    sims = [float(np.clip(_ssim_map(g[t], g[t + 1]).mean(), 0.0, 1.0)) for t in range(clip.num_frames - 1)]
    return float(np.mean(sims))

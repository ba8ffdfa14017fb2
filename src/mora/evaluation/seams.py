"""Where clips join: hard cuts found in a video, and continuity at the seams a workflow knows of.

`connect`, `extend` and `mora story` join segments; their manifests record where (`boundaries`).
`seam_continuity` scores those seams against the video's typical frame-to-frame change, and `cuts`
finds hard cuts anywhere. Both read the motion-compensated differences of adjacent frames that a
`mora.evaluation.metrics.Clip` computes once for every metric (`docs/metrics.md`).

Example:
    >>> import numpy as np
    >>> cuts(np.zeros((5, 32, 32, 3), np.uint8))
    []
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mora.errors import InputError
from mora.evaluation.metrics import Clip

#: A cut: motion-compensated difference above max(CUT_FACTOR * median, CUT_FLOOR) (0..1 scale).
CUT_FACTOR = 4.0
CUT_FLOOR = 0.05
#: Seam score = (typical + SEAM_SLACK) / (seam + SEAM_SLACK): changes of a few grey levels are invisible.
SEAM_SLACK = 3.0 / 255.0


def cuts(frames: Clip | np.ndarray) -> list[int]:
    """Frame indices where a hard cut starts (not a score).

    Pair (t, t+1) is a cut, reported as t+1, when its motion-compensated difference (frame t
    against frame t+1 warped back by Farneback flow, mean |difference| / 255 at analysis size)
    exceeds `max(4 * median over all pairs, 0.05)`. Motion compensation keeps fast pans from
    looking like cuts; the median keeps uniform flicker or noise from looking like cuts.

    Example:
        >>> cuts(np.zeros((5, 32, 32, 3), np.uint8))
        []
    """
    clip = Clip.of(frames)
    if clip.num_frames < 2:
        return []
    residual = clip.pairs.residual
    threshold = max(CUT_FACTOR * float(np.median(residual)), CUT_FLOOR)
    return [t + 1 for t, r in enumerate(residual) if r > threshold]


def check_boundaries(boundaries: Any, num_frames: int, argument: str = "boundaries") -> list[int]:
    """Segment boundaries (frame indices where a new segment starts, each in 1..T-1), sorted, once each."""
    if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence):
        raise InputError(f"{argument}: got {boundaries!r}; pass a list of frame indices where segments start")
    out = []
    for b in boundaries:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 1 <= int(b) <= num_frames - 1:
            raise InputError(
                f"{argument}: {b!r} is not a frame index between 1 and {num_frames - 1}; "
                f"pass the index of the first frame of each new segment"
            )
        out.append(int(b))
    return sorted(set(out))


def seam_continuity(frames: Clip | np.ndarray, boundaries: Sequence[int]) -> dict[str, Any]:
    """TCON-style continuity at known segment boundaries (extend / connect outputs).

    For a boundary b (the first frame of a new segment) the seam change is the
    motion-compensated difference of pair (b-1, b); the typical change is the median of the same
    quantity over the pairs that are not seams. Score: `min(1, (typical + s) / (seam + s))` with
    slack s = 3/255, so 1 means the seam is no bigger than a typical frame-to-frame change and 0.5
    means it is about twice as big.

    Args:
        frames: video frames or a `Clip`.
        boundaries: frame indices where a new segment starts, each in 1..T-1.

    Returns:
        `{"boundaries": [...], "scores": [...], "mean": float}` (mean is 1.0 with no boundary).

    Example:
        >>> seam_continuity(np.zeros((6, 32, 32, 3), np.uint8), [3])
        {'boundaries': [3], 'scores': [1.0], 'mean': 1.0}
    """
    clip = Clip.of(frames, min_frames=2)
    bounds = check_boundaries(boundaries, clip.num_frames)
    if not bounds:
        return {"boundaries": [], "scores": [], "mean": 1.0}
    residual = clip.pairs.residual
    seams = {b - 1 for b in bounds}
    inner = [r for t, r in enumerate(residual) if t not in seams]
    typical = float(np.median(inner if inner else residual))
    scores = [min(1.0, (typical + SEAM_SLACK) / (float(residual[b - 1]) + SEAM_SLACK)) for b in bounds]
    return {"boundaries": bounds, "scores": scores, "mean": float(np.mean(scores))}

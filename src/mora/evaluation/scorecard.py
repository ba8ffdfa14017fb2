"""The score card: every metric of `mora.evaluation.metrics` for one video, from frames or a file,
and its plain-text table.

Example:
    >>> import numpy as np
    >>> from mora.evaluation.scorecard import score_video
    >>> score_video(np.zeros((8, 64, 64, 3), np.uint8))["temporal_flickering"]
    1.0
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from mora.errors import InputError
from mora.evaluation.metrics import (
    METRIC_INFO,
    Clip,
    _dynamic_stats,
    background_consistency,
    imaging_quality,
    motion_smoothness,
    subject_consistency,
    temporal_flickering,
    tmean,
)
from mora.evaluation.seams import check_boundaries, cuts, seam_continuity

logger = logging.getLogger(__name__)

def _r(x: float) -> float:
    return round(float(x), 4)


def _pixel_metrics(clip: Clip, dyn: dict[str, Any]) -> dict[str, Any]:
    """The metrics every card has, rounded, in `METRIC_INFO`'s order; `dyn` is `_dynamic_stats(clip, fps)`."""
    return {
        "temporal_flickering": _r(temporal_flickering(clip)),
        "dynamic_degree": dyn["dynamic"],
        "flow_magnitude": _r(dyn["flow_magnitude"]),
        # It predicts each middle frame from its neighbours: a 2-frame video has no middle frame.
        "motion_smoothness": _r(motion_smoothness(clip)) if clip.num_frames >= 3 else None,
        "subject_consistency": _r(subject_consistency(clip)),
        "background_consistency": _r(background_consistency(clip)),
        "imaging_quality": _r(imaging_quality(clip)),
        "tmean": _r(tmean(clip)),
        "cuts": cuts(clip),
    }


def _seam_entry(clip: Clip, bounds: list[int]) -> dict[str, Any]:
    """The card's `seam_continuity`: the score at each checked boundary and their mean, rounded."""
    seam = seam_continuity(clip, bounds)
    return {
        "boundaries": seam["boundaries"],
        "scores": [_r(s) for s in seam["scores"]],
        "mean": _r(seam["mean"]),
    }


def score_video(
    frames: np.ndarray,
    *,
    fps: float | None = None,
    boundaries: list[int] | None = None,
    prompt: str | None = None,
    optional: bool = False,
) -> dict[str, Any]:
    """Compute the whole score card of one video; the result is JSON-serialisable.

    Args:
        frames: `(T, H, W, 3)` uint8 RGB, at least 2 frames.
        fps: frame rate, used by `dynamic_degree` (None: no sampling, VBench's 8 fps factor).
        boundaries: frame indices where generated segments start (extend / connect outputs);
            adds `seam_continuity`.
        prompt: the text prompt, for the optional CLIP similarity.
        optional: also run the model-based metrics whose weights are available locally.

    Returns:
        A dict with the keys of `METRIC_INFO` that apply, plus `num_frames`, `width`, `height`,
        `fps` and `seconds` (time taken). `motion_smoothness` is None for a 2-frame video.

    Example:
        >>> card = score_video(np.zeros((4, 32, 32, 3), np.uint8), fps=7)
        >>> card["dynamic_degree"], card["cuts"]
        (0, [])
    """
    start = time.perf_counter()
    clip = Clip.of(frames, min_frames=2)
    bounds = None if boundaries is None else check_boundaries(boundaries, clip.num_frames)
    dyn = _dynamic_stats(clip, fps)
    card = _pixel_metrics(clip, dyn)
    if bounds is not None:
        card["seam_continuity"] = _seam_entry(clip, bounds)
    if optional:
        from mora.evaluation.optional import optional_metrics

        card["optional"] = optional_metrics(clip.frames, prompt=prompt)
    card.update(
        num_frames=clip.num_frames,
        width=clip.width,
        height=clip.height,
        fps=None if fps is None else float(fps),
    )
    card["seconds"] = round(time.perf_counter() - start, 3)
    logger.debug(
        "scored %d frames of %dx%d in %.2f s (dynamic: %s)",
        clip.num_frames,
        clip.width,
        clip.height,
        card["seconds"],
        dyn,
    )
    return card


def _manifest_boundaries(manifest: Any) -> list[int] | None:
    if manifest is None:
        return None
    if not isinstance(manifest, dict):
        raise InputError(f"manifest: got {type(manifest).__name__}; pass the run's manifest dict or None")
    video = manifest.get("video")
    if not isinstance(video, dict) or video.get("boundaries") is None:
        return None
    return video["boundaries"]


def score_card_for_file(
    path: str | Path, *, manifest: dict | None = None, optional: bool = False
) -> dict[str, Any]:
    """Read a video file and compute its score card (see `score_video`).

    Args:
        path: the video file.
        manifest: the run's manifest; its `video.boundaries` (frame indices where segments start)
            add `seam_continuity`, and its `prompt` feeds the optional CLIP similarity.
        optional: also run the model-based metrics whose weights are available locally.

    Example:
        >>> card = score_card_for_file("outputs/extend-1.mp4", manifest=json.load(open("outputs/extend-1.json")))  # doctest: +SKIP
    """
    from mora.media import read_video

    video = read_video(path, argument="video")
    boundaries = _manifest_boundaries(manifest)
    if boundaries is not None:
        boundaries = check_boundaries(boundaries, len(video.frames), argument="manifest video.boundaries")
    prompt = manifest.get("prompt") if isinstance(manifest, dict) else None
    return score_video(
        video.frames,
        fps=video.fps,
        boundaries=boundaries,
        prompt=prompt if isinstance(prompt, str) else None,
        optional=optional,
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return "none" if not value else ", ".join(_fmt(v) for v in value)
    return str(value)


def format_table(card: dict[str, Any]) -> str:
    """A plain-text table of a score card: metric, value, one-line meaning.

    Example:
        >>> print(format_table({"temporal_flickering": 0.98, "num_frames": 25}))  # doctest: +SKIP
    """
    rows = [("metric", "value", "meaning")]
    for key, info in METRIC_INFO.items():
        if key == "seam_continuity" and isinstance(card.get(key), dict):
            seam = card[key]
            rows.append((key, _fmt(seam.get("mean")), info))
            for b, s in zip(seam.get("boundaries", []), seam.get("scores", []), strict=False):
                rows.append((f"  seam at frame {b}", _fmt(s), ""))
        elif key == "clip_text_similarity":
            opt = card.get("optional") or {}
            if key in opt:
                rows.append((key, _fmt(opt[key]), info))
        elif key in card:
            rows.append((key, _fmt(card[key]), info))
    for key, reason in ((card.get("optional") or {}).get("skipped") or {}).items():
        rows.append((key, "skipped", str(reason)))
    width0 = max(len(r[0]) for r in rows)
    width1 = max(len(r[1]) for r in rows)
    lines = [f"{a:<{width0}}  {b:>{width1}}  {c}".rstrip() for a, b, c in rows]
    lines.insert(1, "-" * min(100, max(len(line) for line in lines)))
    if "num_frames" in card:
        fps = card.get("fps")
        lines.append(
            f"{card['num_frames']} frames, {card.get('width')}x{card.get('height')}"
            + (f", {fps:g} fps" if fps else "")
            + (f"; scored in {card['seconds']:.2f} s" if "seconds" in card else "")
        )
    return "\n".join(lines)

"""Model-based metrics, run only when the user has the weights locally. Never downloads.

Implemented: `clip_text_similarity`, a stand-in for Mora's VideoTI / VBench's text-video
consistency: the mean cosine similarity between the prompt and evenly spaced frames under a CLIP
model loaded from the local directory in `$MORA_CLIP_MODEL` (`local_files_only=True`).
Not implemented (always reported as skipped, with the reason): DINO subject consistency and the
LAION aesthetic predictor; the classical stand-ins in `mora.evaluation.metrics` cover the first.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mora.errors import one_line

logger = logging.getLogger(__name__)

#: Environment variable naming a local directory with a `transformers` CLIP model and processor.
CLIP_ENV = "MORA_CLIP_MODEL"

_NOT_IMPLEMENTED = {
    "dino_subject_consistency": "not implemented in Mora; subject_consistency is the classical stand-in",
    "laion_aesthetic": "not implemented in Mora (needs the LAION aesthetic head on CLIP ViT-L/14)",
}


def _clip_similarity(frames: np.ndarray, prompt: str, model_dir: Path, max_frames: int, device: str) -> float:
    import torch
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(model_dir, local_files_only=True).to(device).train(False)
    processor = CLIPProcessor.from_pretrained(model_dir, local_files_only=True)
    picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    inputs = processor(
        text=[prompt], images=[frames[i] for i in picks], return_tensors="pt", padding=True, truncation=True
    )
    with torch.inference_mode():
        out = model(**{k: v.to(device) for k, v in inputs.items()})
    image = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
    text = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
    # Negative similarities carry no meaning for CLIP scores (CLIPScore clips them too).
    return float((image @ text.T).clamp(min=0).mean())


def optional_metrics(
    frames: np.ndarray, prompt: str | None = None, *, max_frames: int = 8, device: str = "cpu"
) -> dict[str, Any]:
    """Model-based metrics whose weights are available locally; the rest are listed as skipped.

    Args:
        frames: `(T, H, W, 3)` uint8 RGB.
        prompt: the text prompt (CLIP similarity is skipped without one).
        max_frames: how many evenly spaced frames CLIP looks at.
        device: torch device for the model (the caller's choice; default "cpu").

    Returns:
        `{"clip_text_similarity": float, "skipped": {name: reason}}`, the first key only when it
        ran. The similarity is a raw cosine (about 0.2-0.35 for matching pairs), not a 0..1 score.

    Example:
        >>> optional_metrics(np.zeros((2, 8, 8, 3), np.uint8))["skipped"]["clip_text_similarity"]  # doctest: +SKIP
        'MORA_CLIP_MODEL is not set; ...'
    """
    from mora.evaluation.metrics import check_frames

    frames = check_frames(frames)
    result: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    model_dir = os.environ.get(CLIP_ENV, "").strip()
    if not model_dir:
        skipped["clip_text_similarity"] = (
            f"{CLIP_ENV} is not set; point it to a local directory holding a transformers CLIP model "
            "(e.g. a saved openai/clip-vit-base-patch32); nothing is downloaded"
        )
    elif not prompt:
        skipped["clip_text_similarity"] = "no prompt given"
    elif not Path(model_dir).expanduser().is_dir():
        skipped["clip_text_similarity"] = f"{CLIP_ENV}={model_dir!r} is not a directory"
    else:
        try:
            result["clip_text_similarity"] = round(
                _clip_similarity(frames, prompt, Path(model_dir).expanduser(), max_frames, device), 4
            )
        # A broken local model (missing or mismatched files, a bad config) must not sink the whole score
        # card; these are what transformers raises for one. Anything else is a bug and propagates.
        except (OSError, ValueError, RuntimeError, KeyError, ImportError) as exc:
            logger.warning("CLIP similarity skipped: could not use %s: %s", model_dir, exc)
            reason = one_line(exc, limit=300)
            skipped["clip_text_similarity"] = (
                f"could not load or run the CLIP model in {model_dir!r}: {reason}"
            )
    skipped.update(_NOT_IMPLEMENTED)
    result["skipped"] = skipped
    return result

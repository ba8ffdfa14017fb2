"""The score card: VBench-style video metrics computed with numpy and OpenCV, no model weights.

See `docs/metrics.md` for each metric's definition and how it differs from VBench's. Imports are
lazy (PEP 562) so that `import mora.evaluation` does not load OpenCV until a metric is used.

Example:
    >>> from mora.evaluation import score_card_for_file, format_table
    >>> print(format_table(score_card_for_file("fox.mp4")))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mora._lazy import lazy_names

_LAZY = {
    "score_video": "mora.evaluation.scorecard",
    "score_card_for_file": "mora.evaluation.scorecard",
    "format_table": "mora.evaluation.scorecard",
    "METRIC_INFO": "mora.evaluation.metrics",
    "optional_metrics": "mora.evaluation.optional",
}

__all__ = ["METRIC_INFO", "format_table", "optional_metrics", "score_card_for_file", "score_video"]

if TYPE_CHECKING:  # pragma: no cover
    from mora.evaluation.metrics import METRIC_INFO
    from mora.evaluation.optional import optional_metrics
    from mora.evaluation.scorecard import format_table, score_card_for_file, score_video


__getattr__, __dir__ = lazy_names(__name__, _LAZY)

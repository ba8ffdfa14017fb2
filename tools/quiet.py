"""Library notices a user cannot act on: each filtered by its exact text, after checking it is harmless.

Nothing here silences a category of warnings wholesale; a new notice shows until someone checks it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings


class DropMessages(logging.Filter):
    """Drops library log records whose text contains one of `fragments` (each checked harmless)."""

    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


# transformers 5 prefers torchvision image processors and says so once per class when it falls back
# to the PIL ones; there is no CPU torchvision build here, and the PIL processors give the same
# inputs for SVD's and Wan's CLIP encoders (checked: the tiny presets' outputs are unchanged).
logging.getLogger("transformers.utils.import_utils").addFilter(
    DropMessages("requires torchvision (not installed); falling back to")
)


# In Jupyter without ipywidgets, importing tqdm.auto (diffusers and transformers do) warns once that
# widget bars are unavailable; the bars then print as text, which is all Mora needs.
warnings.filterwarnings("ignore", message="IProgress not found")


@contextlib.contextmanager
def no_library_bars():
    """Hide diffusers' and transformers' per-component loading and saving bars (Mora logs each load)."""
    import diffusers
    import transformers

    dlog, tlog = diffusers.utils.logging, transformers.utils.logging
    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            dlog.enable_progress_bar()
        if was[1]:
            tlog.enable_progress_bar()

"""`--ema`: an exponential moving average of the trained parameters (theta_i and z_i); the adapter
written is the average. diffusers' `EMAModel` (its decay warms up as (1 + s) / (10 + s) up to
`--ema-decay`), over the parameters themselves since z_i belongs to no module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

EMA_FILE = "ema.pt"


class Averaged:
    """The moving average of `params`, updated after each optimizer step.

    Args:
        params: every trained parameter (LoRA tensors and the modulation embeddings).
        decay: the average's decay (after the warm-up).

    Example:
        >>> ema = Averaged(params, 0.999)   # doctest: +SKIP
        >>> ema.step(); with ema.swapped_in(): save(...)
    """

    def __init__(self, params: list[Any], decay: float):
        from diffusers.training_utils import EMAModel

        self.params = params
        self.model = EMAModel(params, decay=decay)

    def step(self) -> None:
        self.model.step(self.params)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The average in the parameters for the block (then the trained values again)."""
        self.model.store(self.params)
        self.model.copy_to(self.params)
        try:
            yield
        finally:
            self.model.restore(self.params)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)

"""Fixed-sigma, re-noising sampling (DMD few-step models) inside diffusers' flow-matching pipelines.

A DMD-distilled model (FastVideo's FastWan2.2-TI2V-5B) is sampled at a few fixed noise levels, not at
a schedule spread over `num_inference_steps`: at each level the model's velocity gives the clean
estimate x0 = x_t - sigma_t * v, and the next level starts from fresh noise mixed in at that level,
x_next = (1 - sigma_next) * x0 + sigma_next * noise (sigma 0 after the last: x0 itself). diffusers'
`FlowMatchEulerDiscreteScheduler` with `stochastic_sampling` steps exactly so (`step`); what the
pipelines do not do is pass it the levels (they call `set_timesteps(num_inference_steps, device)`)
or a generator for the noise (`step` takes none from them and would draw from the global RNG).
`DMDScheduler` fixes both: its sigmas are its own, and `bind` hands it the call's CPU generator,
whose stream after the initial latents is the re-noising, so one seed gives one video.

Example:
    >>> pipe.scheduler = DMDScheduler.with_sigmas((1.0, 0.757, 0.522))  # doctest: +SKIP
    >>> bind(pipe, steps=3, generator=generator(seed))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from diffusers import FlowMatchEulerDiscreteScheduler

from mora.config.settings import dmd_sigmas_problem
from mora.errors import InputError
from mora.limits import check_fixed_steps


class DMDScheduler(FlowMatchEulerDiscreteScheduler):
    """`FlowMatchEulerDiscreteScheduler` with `stochastic_sampling`, at its configured `dmd_sigmas`
    whatever step count the pipeline asks for (which must be one per sigma), re-noising from `generator`."""

    generator: Any = None  # the call's torch.Generator (`bind`); None draws from the global RNG

    @classmethod
    def with_sigmas(cls, sigmas: tuple[float, ...]) -> DMDScheduler:
        """The scheduler at these noise levels, as given: shift 1 (no reshaping), timesteps sigma * 1000."""
        problem = dmd_sigmas_problem(sigmas)
        if problem:
            raise InputError(f"{list(sigmas)} {problem}; give the publisher's noise levels, e.g. [1.0, 0.757, 0.522]",
                             param="dmd_sigmas")
        return cls(num_train_timesteps=1000, shift=1.0, stochastic_sampling=True, dmd_sigmas=list(sigmas))

    def __init__(self, *args: Any, dmd_sigmas: list[float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_to_config(dmd_sigmas=dmd_sigmas)

    def set_timesteps(self, num_inference_steps: int | None = None, device: Any = None, **kwargs: Any) -> None:
        check_fixed_steps(self.config, num_inference_steps)
        super().set_timesteps(device=device, sigmas=list(self.config.dmd_sigmas))

    def step(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("generator", self.generator)
        return super().step(*args, **kwargs)


def bind(pipe: Any, *, steps: int, generator: Any) -> None:
    """Before a call of `pipe`: a `DMDScheduler` checks `steps` and re-noises from `generator` (the call's
    own, so the same seed gives the same output); any other scheduler is left as it is."""
    scheduler = pipe.scheduler
    if isinstance(scheduler, DMDScheduler):
        check_fixed_steps(scheduler.config, steps)
        scheduler.generator = generator

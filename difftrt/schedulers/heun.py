"""Heun's second-order sampling of the probability-flow ODE: Karras et al. 2022 (EDM), arXiv:2206.00364,
algorithm 1 (deterministic: no churn).

Each inference step is two model calls, so ``.timesteps`` repeats every timestep but the first (diffusers'
layout) and the loop simply iterates it: the first call of a pair takes an Euler step σ_i → σ_{i+1}, the
second re-evaluates the derivative there and redoes the step from x_i with the average. The last step, to
σ = 0, stays first order (EDM line 6). ``order`` = 2: img2img skips ``t_start * 2`` entries.

Notation (see ``sigmas.py`` for x, σ, d):

| paper       | code                | meaning                                                               |
|-------------|---------------------|-----------------------------------------------------------------------|
| x_i         | ``self.sample``     | the state at σ_i, kept from the first call of the pair, (B, C, H, W)  |
| d_i         | ``prev_derivative`` | (x_i − x̂_0)/σ_i, from the first call                                   |
| x_{i+1}     | prev_sample         | first call: x_i + (σ_{i+1} − σ_i)·d_i (line 5); second: the corrected one |
| d'_i        | derivative          | (x_{i+1} − x̂_0')/σ_{i+1} at the Euler point (line 7)                   |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from difftrt.arrays import namespace
from difftrt.schedulers.base import BaseConfig, SchedulerOutput
from difftrt.schedulers.betas import TimestepSpacing
from difftrt.schedulers.sigmas import SIGMA_GRID_RESTRICTED, SigmaGridOptions, SigmaScheduler


def heun_correct(x_i: np.ndarray, d_i: np.ndarray, d_euler: np.ndarray, dt: float) -> np.ndarray:
    """EDM algorithm 1, line 8: x_i + dt·(d_i + d'_i)/2. Overwrites and returns ``d_euler``: (B, C, H, W)."""
    d_euler += d_i
    d_euler *= 0.5 * dt
    d_euler += x_i
    return d_euler


def paired_grid(sigmas: np.ndarray, timesteps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repeat every inner σ and every timestep but the first: (n + 1,), (n,) -> (2n,), (2n − 1,)."""
    return (
        np.concatenate([sigmas[:1], np.repeat(sigmas[1:-1], 2), sigmas[-1:]]),
        np.concatenate([timesteps[:1], np.repeat(timesteps[1:], 2)]),
    )


@dataclass(frozen=True)
class HeunConfig(BaseConfig, SigmaGridOptions):
    """diffusers' ``HeunDiscreteScheduler`` config (its β defaults are Stable Diffusion's)."""

    class_name: ClassVar[str] = "HeunDiscreteScheduler"
    restricted: ClassVar[Mapping[str, tuple[Any, ...]]] = SIGMA_GRID_RESTRICTED

    beta_start: float = 0.00085  # diffusers' Heun default, unlike the other schedulers
    beta_end: float = 0.012  # ditto
    timestep_spacing: TimestepSpacing = TimestepSpacing.LINSPACE  # diffusers' default here
    clip_sample: bool = False  # clip predicted x_0 to ±clip_sample_range
    clip_sample_range: float = 1.0  # bound used by clip_sample


class HeunDiscreteScheduler(SigmaScheduler):
    """Heun (EDM algorithm 1) with the diffusers protocol: two ``step`` calls per inference step."""

    config_class: ClassVar[type[BaseConfig]] = HeunConfig
    config: HeunConfig
    order: int = 2

    def __init__(self, config: HeunConfig | None = None) -> None:
        super().__init__(config)
        self._set_grid(*paired_grid(self.sigmas, self.timesteps))

    def set_timesteps(self, num_inference_steps: int) -> None:
        """n inference steps: σ_0, σ_1, σ_1, …, σ_{n−1}, σ_{n−1}, 0 and t_0, t_1, t_1, …, t_{n−1} (2n − 1 calls)."""
        super().set_timesteps(num_inference_steps)
        self._set_grid(*paired_grid(self.sigmas, self.timesteps))

    def _set_grid(self, sigmas: np.ndarray, timesteps: np.ndarray) -> None:
        super()._set_grid(sigmas, timesteps)
        self.prev_derivative: np.ndarray | None = None  # d_i between the two calls of a pair
        self.dt: float | None = None  # σ_{i+1} − σ_i, set while a pair is open
        self.sample: np.ndarray | None = None  # x_i

    @property
    def state_in_first_order(self) -> bool:
        """True when the next call starts a pair (diffusers' name)."""
        return self.dt is None

    def step(
        self,
        model_output: np.ndarray,
        timestep: float | np.floating,
        sample: np.ndarray,
        generator: np.random.Generator | None = None,  # noqa: ARG002 (deterministic; protocol argument)
        variance_noise: np.ndarray | None = None,  # noqa: ARG002
        eta: float | None = None,
    ) -> SchedulerOutput:
        """One of the two calls of a Heun step. Arrays (B, C, H, W), outputs in ``sample``'s dtype."""
        self._reject_eta(eta)
        i = self._index(timestep)
        first = self.state_in_first_order
        j = i if first else i - 1  # the pair's σ_i sits at index i on its first call, i − 1 on its second
        sigma, sigma_next = float(self.sigmas[j]), float(self.sigmas[j + 1])
        pred_x0 = self._predict_x0(model_output, sample, sigma if first else sigma_next)
        if self.config.clip_sample:
            pred_x0 = namespace(pred_x0).clip(pred_x0, -self.config.clip_sample_range, self.config.clip_sample_range)
        derivative = sample - pred_x0
        derivative /= sigma if first else sigma_next
        if first:
            self.prev_derivative, self.dt, self.sample = derivative, sigma_next - sigma, sample
            x_next = derivative * self.dt
            x_next += sample
        else:
            assert self.prev_derivative is not None and self.dt is not None and self.sample is not None
            x_next = heun_correct(self.sample, self.prev_derivative, derivative, self.dt)
            self.prev_derivative, self.dt, self.sample = None, None, None
        self._step_index = i + 1
        return SchedulerOutput.of(x_next, pred_x0, sample)

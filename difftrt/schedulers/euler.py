"""Euler sampling of the probability-flow ODE, with optional "churn": Karras et al. 2022 (EDM), arXiv:2206.00364,
algorithm 2 without its second-order correction (that is ``heun.py``).

Notation (see ``sigmas.py`` for x, σ, d):

| paper            | code          | meaning                                                                  |
|------------------|---------------|--------------------------------------------------------------------------|
| σ_i, σ_{i+1}     | ``sigma``, ``sigma_next`` | this step's noise level and the next one (0 after the last)  |
| γ_i              | ``gamma``     | churn: min(S_churn/n, √2 − 1) when S_tmin ≤ σ_i ≤ S_tmax, else 0 (line 4) |
| σ̂_i              | ``sigma_hat`` | (1 + γ_i)·σ_i, the raised noise level (line 5)                           |
| ε_i              | ``noise``     | fresh N(0, I), scaled by S_noise (line 6), (B, C, H, W)                   |
| d_i              | derivative    | (x̂_i − x̂_0)/σ̂_i (line 7)                                                 |
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from difftrt.schedulers.base import BaseConfig, Prediction, SchedulerOutput
from difftrt.schedulers.betas import TimestepSpacing
from difftrt.schedulers.sigmas import SIGMA_GRID_RESTRICTED, FinalSigmas, SigmaGridOptions, SigmaScheduler


def euler_step(sample: np.ndarray, pred_x0: np.ndarray, sigma: float, sigma_next: float) -> np.ndarray:
    """x + d·(σ_next − σ) with d = (x − x̂_0)/σ: one Euler step of dx/dσ. sample, pred_x0: (B, C, H, W) -> same."""
    x_next = sample - pred_x0
    x_next *= (sigma_next - sigma) / sigma
    x_next += sample
    return x_next


def churn_gamma(sigma: float, s_churn: float, num_steps: int, s_tmin: float, s_tmax: float) -> float:
    """γ of EDM algorithm 2, line 4: how much noise to add back before the step (0: plain Euler)."""
    return min(s_churn / num_steps, math.sqrt(2.0) - 1.0) if s_tmin <= sigma <= s_tmax else 0.0


@dataclass(frozen=True)
class EulerConfig(BaseConfig, SigmaGridOptions):
    """diffusers' ``EulerDiscreteScheduler`` config."""

    class_name: ClassVar[str] = "EulerDiscreteScheduler"
    restricted: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        **SIGMA_GRID_RESTRICTED,
        "interpolation_type": ("linear",),
        "timestep_type": ("discrete",),
    }

    timestep_spacing: TimestepSpacing = TimestepSpacing.LINSPACE  # diffusers' Euler default
    interpolation_type: str = "linear"  # σ between training timesteps: linear in t ("log_linear" unsupported)
    sigma_min: float | None = None  # low end of a Karras / exponential grid (None: the interpolated grid's)
    sigma_max: float | None = None  # high end of a Karras / exponential grid (None: the interpolated grid's)
    timestep_type: str = "discrete"  # "continuous" (EDM's c_noise = log(σ)/4 as the timestep) unsupported
    rescale_betas_zero_snr: bool = False  # ᾱ_{T−1} → 2⁻²⁴ after Lin et al. 2023's rescaling
    final_sigmas_type: FinalSigmas = FinalSigmas.ZERO  # σ after the last step

    def __post_init__(self) -> None:
        super().__post_init__()
        self._coerce("final_sigmas_type", FinalSigmas)


class EulerDiscreteScheduler(SigmaScheduler):
    """Euler (EDM algorithm 2, first order) with the diffusers protocol; deterministic unless ``s_churn`` > 0."""

    config_class: ClassVar[type[BaseConfig]] = EulerConfig
    config: EulerConfig

    def step(
        self,
        model_output: np.ndarray,
        timestep: float | np.floating,
        sample: np.ndarray,
        generator: np.random.Generator | None = None,
        variance_noise: np.ndarray | None = None,
        eta: float | None = None,
        *,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = math.inf,
        s_noise: float = 1.0,
    ) -> SchedulerOutput:
        """x at σ_i -> x at σ_{i+1}. model_output, sample, variance_noise: (B, C, H, W); outputs in ``sample``'s dtype.

        With ``s_churn`` > 0, noise (``variance_noise``, else drawn from ``generator``) first raises σ_i to σ̂_i.
        """
        self._reject_eta(eta)
        i = self._index(timestep)
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        gamma = churn_gamma(sigma, s_churn, len(self.sigmas) - 1, s_tmin, s_tmax)
        sigma_hat = sigma * (gamma + 1.0)
        x = sample
        if gamma > 0.0:  # line 6: x̂ = x + sqrt(σ̂² − σ²)·ε
            x = sample + self._noise(sample, generator, variance_noise) * (s_noise * math.sqrt(sigma_hat**2 - sigma**2))
        # diffusers converts an eps output at σ̂ but a v output at σ; the two differ only with churn
        eps = self.config.prediction_type is Prediction.EPSILON
        pred_x0 = self._predict_x0(model_output, x, sigma_hat if eps else sigma)
        x_next = euler_step(x, pred_x0, sigma_hat, sigma_next)
        self._step_index = i + 1
        return SchedulerOutput.of(x_next, pred_x0, sample)

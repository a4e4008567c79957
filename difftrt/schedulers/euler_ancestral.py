"""Euler ancestral sampling: an Euler step down to σ_down, then fresh noise up to σ_{i+1}; Crowson's k-diffusion
``sample_euler_ancestral`` (η = 1), the σ-space form of DDPM's ancestral step (Ho et al. 2020; Karras et al. 2022).

Notation (see ``sigmas.py`` for x, σ, d):

| symbol        | code          | meaning                                                                      |
|---------------|---------------|------------------------------------------------------------------------------|
| σ_i, σ_{i+1}  | ``sigma_from``, ``sigma_to`` | this step's noise level and the next one (0 after the last)   |
| σ_up          | ``sigma_up``  | std of the fresh noise: sqrt(σ_{i+1}²·(σ_i² − σ_{i+1}²)/σ_i²)                 |
| σ_down        | ``sigma_down``| where the deterministic step lands: sqrt(σ_{i+1}² − σ_up²)               |
| z             | ``noise``     | fresh N(0, I), (B, C, H, W)                                                  |
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from difftrt.schedulers.base import BaseConfig, SchedulerOutput
from difftrt.schedulers.betas import TimestepSpacing
from difftrt.schedulers.euler import euler_step
from difftrt.schedulers.sigmas import SigmaScheduler


def ancestral_sigmas(sigma_from: float, sigma_to: float) -> tuple[float, float]:
    """(σ_down, σ_up) of an ancestral step from σ_from to σ_to (k-diffusion ``get_ancestral_step``, η = 1)."""
    sigma_up = math.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2)
    return math.sqrt(max(sigma_to**2 - sigma_up**2, 0.0)), sigma_up


@dataclass(frozen=True)
class EulerAncestralConfig(BaseConfig):
    """diffusers' ``EulerAncestralDiscreteScheduler`` config."""

    class_name: ClassVar[str] = "EulerAncestralDiscreteScheduler"
    restricted: ClassVar[Mapping[str, tuple[Any, ...]]] = {}

    timestep_spacing: TimestepSpacing = TimestepSpacing.LINSPACE  # diffusers' default here
    rescale_betas_zero_snr: bool = False  # ᾱ_{T−1} → 2⁻²⁴ after Lin et al. 2023's rescaling


class EulerAncestralDiscreteScheduler(SigmaScheduler):
    """Euler ancestral with the diffusers protocol; stochastic: pass ``variance_noise`` or ``generator``."""

    config_class: ClassVar[type[BaseConfig]] = EulerAncestralConfig
    config: EulerAncestralConfig

    def step(
        self,
        model_output: np.ndarray,
        timestep: float | np.floating,
        sample: np.ndarray,
        generator: np.random.Generator | None = None,
        variance_noise: np.ndarray | None = None,
        eta: float | None = None,
    ) -> SchedulerOutput:
        """x at σ_i -> x at σ_{i+1}: Euler to σ_down, plus σ_up·z (z = ``variance_noise``, else drawn from
        ``generator``; none on the last step, where σ_up = 0). Arrays (B, C, H, W), outputs in ``sample``'s dtype.
        """
        self._reject_eta(eta)
        i = self._index(timestep)
        sigma_from, sigma_to = float(self.sigmas[i]), float(self.sigmas[i + 1])
        sigma_down, sigma_up = ancestral_sigmas(sigma_from, sigma_to)
        pred_x0 = self._predict_x0(model_output, sample, sigma_from)
        x_next = euler_step(sample, pred_x0, sigma_from, sigma_down)
        if sigma_up > 0.0:
            x_next += self._noise(sample, generator, variance_noise) * sigma_up
        self._step_index = i + 1
        return SchedulerOutput.of(x_next, pred_x0, sample)

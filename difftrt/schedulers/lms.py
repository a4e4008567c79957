"""Linear multistep (LMS) sampling of the probability-flow ODE: Crowson's k-diffusion ``sample_lms``, the
Adams–Bashforth method over σ (Karras et al. 2022 write the ODE as dx/dσ = (x − x̂_0)/σ).

The derivative is extrapolated by the Lagrange polynomial through the last k derivatives and integrated
exactly over [σ_i, σ_{i+1}]; diffusers integrates each basis polynomial numerically (``scipy.integrate.quad``),
here the integrals are exact (a k×k polynomial-moment solve, see ``lms_coefficients``).

k counts the derivatives actually stored, so a loop begun mid-grid (img2img) ramps up from order 1. diffusers
uses min(step index + 1, 4) there, weighting its single stored derivative with a 4th-order coefficient, and
with an exact model does not return x_0 (diffusers issue #5630); from the first step both agree.

Notation (see ``sigmas.py`` for x, σ, d):

| symbol            | code            | meaning                                                               |
|-------------------|-----------------|-----------------------------------------------------------------------|
| d_{i−j}           | ``derivatives`` | stored derivatives, newest first at j = 0, (B, C, H, W) each           |
| k                 | ``order``       | how many are used: min(number stored, max order 4)                     |
| ℓ_j(τ)            | basis           | ∏_{m≠j} (τ − σ_{i−m})/(σ_{i−j} − σ_{i−m}), the Lagrange basis on the k nodes |
| c_j               | ``coeffs``      | ∫_{σ_i}^{σ_{i+1}} ℓ_j(τ) dτ; x_{i+1} = x_i + Σ_j c_j·d_{i−j}            |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.polynomial.polynomial import polyvander

from difftrt.errors import UsageError
from difftrt.schedulers.base import BaseConfig, SchedulerOutput
from difftrt.schedulers.betas import TimestepSpacing
from difftrt.schedulers.sigmas import SIGMA_GRID_RESTRICTED, SigmaGridOptions, SigmaScheduler, push_history


def lms_coefficients(nodes: Sequence[float], sigma_from: float, sigma_to: float) -> np.ndarray:
    """c_j = ∫_{σ_from}^{σ_to} ℓ_j(τ) dτ for the Lagrange basis ℓ_j on ``nodes`` (σ_i, σ_{i−1}, ...): (k,) float64.

    These are the weights of the k-node quadrature exact for polynomials of degree < k, so they solve the
    moment equations Σ_j c_j·u_j^m = (σ_to − σ_from)/(m + 1), m < k, in u = (τ − σ_from)/(σ_to − σ_from),
    where the Vandermonde matrix (``numpy.polynomial``'s ``polyvander``) is well conditioned: one k×k solve,
    exact up to float64 rounding. One node gives c_0 = σ_to − σ_from, the Euler step.
    """
    step = sigma_to - sigma_from
    u = (np.asarray(nodes, dtype=np.float64) - sigma_from) / step
    moments = 1.0 / np.arange(1, u.size + 1)
    return step * np.linalg.solve(polyvander(u, u.size - 1).T, moments)


@dataclass(frozen=True)
class LMSConfig(BaseConfig, SigmaGridOptions):
    """diffusers' ``LMSDiscreteScheduler`` config."""

    class_name: ClassVar[str] = "LMSDiscreteScheduler"
    restricted: ClassVar[Mapping[str, tuple[Any, ...]]] = SIGMA_GRID_RESTRICTED

    timestep_spacing: TimestepSpacing = TimestepSpacing.LINSPACE  # diffusers' default here


class LMSDiscreteScheduler(SigmaScheduler):
    """LMS with the diffusers protocol; deterministic. Holds the last ``order`` derivatives between steps."""

    config_class: ClassVar[type[BaseConfig]] = LMSConfig
    config: LMSConfig

    def _set_grid(self, sigmas: np.ndarray, timesteps: np.ndarray) -> None:
        super()._set_grid(sigmas, timesteps)
        self.derivatives: list[np.ndarray] = []  # newest last

    def step(
        self,
        model_output: np.ndarray,
        timestep: float | np.floating,
        sample: np.ndarray,
        generator: np.random.Generator | None = None,  # noqa: ARG002 (deterministic; protocol argument)
        variance_noise: np.ndarray | None = None,  # noqa: ARG002
        eta: float | None = None,
        order: int = 4,
    ) -> SchedulerOutput:
        """x at σ_i -> x at σ_{i+1} from up to ``order`` derivatives. Arrays (B, C, H, W), in ``sample``'s dtype.

        The order ramps up 1, 2, 3, 4 from the first step run, also when the loop starts mid-grid (img2img).
        """
        self._reject_eta(eta)
        if order < 1:
            raise UsageError(f"LMS order must be a positive integer (4 by default), got {order}")
        i = self._index(timestep)
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        pred_x0 = self._predict_x0(model_output, sample, sigma)
        derivative = sample - pred_x0
        derivative /= sigma
        self.derivatives = push_history(self.derivatives, derivative, order)
        k = len(self.derivatives)
        coeffs = lms_coefficients(self.sigmas[i - k + 1 : i + 1][::-1].tolist(), sigma, sigma_next)
        x_next = sample + 0.0  # a new array, in sample's dtype
        for c, d in zip(coeffs.tolist(), reversed(self.derivatives)):  # Python floats keep float32 arrays float32
            x_next += c * d
        self._step_index = i + 1
        return SchedulerOutput.of(x_next, pred_x0, sample)

"""DDPM ancestral sampling: Ho, Jain & Abbeel 2020, arXiv:2006.11239; learned variances from Nichol & Dhariwal
2021 ("Improved DDPM"), arXiv:2102.09672.

Notation (t' is the previous *inference* timestep, so one step may span several training steps):

| paper            | code               | meaning                                                         |
|------------------|--------------------|-----------------------------------------------------------------|
| x_t              | sample             | the noisy sample at timestep t, (B, C, H, W)                     |
| ᾱ_t, ᾱ_{t'}      | ``alpha_bar_t``, ``alpha_bar_prev`` | cumulative signal fractions (ᾱ_{t'} = 1 past the end) |
| α_t, β_t         | ``alpha_t``, ``beta_t`` | ᾱ_t/ᾱ_{t'} and 1 − α_t, the step's own α and β              |
| μ̃_t(x_t, x_0)    | posterior mean     | eq. 7: coef_x0·x_0 + coef_xt·x_t                                 |
| β̃_t              | ``beta_tilde``     | eq. 7 posterior variance (1 − ᾱ_{t'})/(1 − ᾱ_t)·β_t               |
| v                | ``predicted_variance`` | learned_range interpolation weight, Improved DDPM eq. 15     |
| z                | ``noise``          | fresh unit Gaussian noise, (B, C, H, W)                          |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import numpy as np

from difftrt.arrays import namespace
from difftrt.errors import UsageError
from difftrt.schedulers.base import DiscreteScheduler, SchedulerConfig, SchedulerOutput


class VarianceType(str, Enum):
    """The variance of p(x_{t'} | x_t) (diffusers' ``variance_type``)."""

    FIXED_SMALL = "fixed_small"  # β̃_t, the true posterior variance given x_0 (DDPM's lower bound)
    FIXED_SMALL_LOG = "fixed_small_log"  # the same, computed through its log in diffusers
    FIXED_LARGE = "fixed_large"  # β_t (DDPM's upper bound)
    FIXED_LARGE_LOG = "fixed_large_log"  # the same, through its log (GLIDE's "max_log")
    LEARNED = "learned"  # the model's second C channels are the variance itself
    LEARNED_RANGE = "learned_range"  # they are v in [-1, 1]: exp((1+v)/2·log β_t + (1−v)/2·log β̃_t)


LEARNED_TYPES = (VarianceType.LEARNED, VarianceType.LEARNED_RANGE)


def posterior_mean_coefs(alpha_bar_t: float, alpha_bar_prev: float) -> tuple[float, float]:
    """(coef_x0, coef_xt) of eq. 7: μ̃ = sqrt(ᾱ_{t'})·β_t/(1 − ᾱ_t)·x_0 + sqrt(α_t)·(1 − ᾱ_{t'})/(1 − ᾱ_t)·x_t."""
    alpha_t = alpha_bar_t / alpha_bar_prev
    coef_x0 = math.sqrt(alpha_bar_prev) * (1.0 - alpha_t) / (1.0 - alpha_bar_t)
    coef_xt = math.sqrt(alpha_t) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)
    return coef_x0, coef_xt


def step_beta(alpha_bar_t: float, alpha_bar_prev: float) -> float:
    """β_t = 1 − ᾱ_t/ᾱ_{t'} of the (possibly respaced) step: the "fixed_large" variance."""
    return 1.0 - alpha_bar_t / alpha_bar_prev


def posterior_variance(alpha_bar_t: float, alpha_bar_prev: float) -> float:
    """β̃_t = (1 − ᾱ_{t'})/(1 − ᾱ_t)·β_t, the "fixed_small" variance; floored at 1e-20 (as diffusers) for its log."""
    return max((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * step_beta(alpha_bar_t, alpha_bar_prev), 1e-20)


def noise_std(
    variance_type: VarianceType,
    alpha_bar_t: float,
    alpha_bar_prev: float,
    predicted_variance: np.ndarray | None = None,
) -> float | np.ndarray:
    """Std of the noise added to μ̃: a float, or (B, C, H, W) for the learned types.

    ``fixed_large_log`` gives sqrt(β_t), like ``fixed_large``; diffusers 0.42 takes the sqrt of log β_t there
    and returns NaN (diffusers issue #14569).
    """
    if variance_type in (VarianceType.FIXED_SMALL, VarianceType.FIXED_SMALL_LOG):
        return math.sqrt(posterior_variance(alpha_bar_t, alpha_bar_prev))
    if variance_type in (VarianceType.FIXED_LARGE, VarianceType.FIXED_LARGE_LOG):
        return math.sqrt(step_beta(alpha_bar_t, alpha_bar_prev))
    if predicted_variance is None:
        raise UsageError(f"variance_type {variance_type.value!r} needs the model's predicted variance")
    if variance_type is VarianceType.LEARNED:
        return namespace(predicted_variance).sqrt(predicted_variance)
    frac = (predicted_variance + 1.0) / 2.0
    max_log = math.log(step_beta(alpha_bar_t, alpha_bar_prev))
    min_log = math.log(posterior_variance(alpha_bar_t, alpha_bar_prev))
    return namespace(frac).exp(0.5 * (frac * max_log + (1.0 - frac) * min_log))


@dataclass(frozen=True)
class DDPMConfig(SchedulerConfig):
    """diffusers' ``DDPMScheduler`` config: the shared fields plus ``variance_type``."""

    class_name: ClassVar[str] = "DDPMScheduler"

    variance_type: VarianceType = VarianceType.FIXED_SMALL  # variance of each reverse step

    def __post_init__(self) -> None:
        super().__post_init__()
        self._coerce("variance_type", VarianceType)


class DDPMScheduler(DiscreteScheduler):
    """DDPM ancestral sampling with the diffusers protocol; without set_timesteps it walks all T steps."""

    config_class: ClassVar[type[SchedulerConfig]] = DDPMConfig
    config: DDPMConfig

    def previous_timestep(self, timestep: int) -> int:
        """The entry after ``timestep`` in ``.timesteps``, or −1 after the last one."""
        hits = np.flatnonzero(self.timesteps == timestep)
        if hits.size == 0:
            raise UsageError(f"timestep {timestep} is not in this scheduler's .timesteps; iterate over .timesteps")
        i = int(hits[0]) + 1
        return int(self.timesteps[i]) if i < self.timesteps.shape[0] else -1

    def _split_variance(self, model_output: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(prediction, predicted variance) from a (B, 2C, ...) output for the learned types, else (output, None)."""
        channels = sample.shape[1]
        learned = self.config.variance_type in LEARNED_TYPES
        if learned and model_output.shape[1] == 2 * channels:
            return model_output[:, :channels, ...], model_output[:, channels:, ...]
        if learned or model_output.shape != sample.shape:
            want = f"(B, {2 * channels if learned else channels}, ...)"
            raise UsageError(
                f"model output has shape {model_output.shape}, expected {want} for variance_type "
                f"{self.config.variance_type.value!r} and a sample of shape {sample.shape}"
            )
        return model_output, None

    def step(
        self,
        model_output: np.ndarray,
        timestep: int | np.integer,
        sample: np.ndarray,
        generator: np.random.Generator | None = None,
        variance_noise: np.ndarray | None = None,
        eta: float | None = None,
    ) -> SchedulerOutput:
        """x_t -> x_{t'} ~ N(μ̃_t(x_t, x̂_0), σ_t²). sample, variance_noise: (B, C, H, W); model_output: (B, C or
        2C, H, W). Outputs in ``sample``'s dtype. As in diffusers, no noise is added at t = 0 only.
        """
        self._reject_eta(eta)
        t = self._check_timestep(timestep)
        prev_t = self.previous_timestep(t)
        prediction, predicted_variance = self._split_variance(model_output, sample)
        alpha_bar_t = float(self.alphas_cumprod[t])
        alpha_bar_prev = float(self.alphas_cumprod[prev_t]) if prev_t >= 0 else 1.0

        pred_x0, _ = self._predict_x0_eps(prediction, sample, alpha_bar_t)
        coef_x0, coef_xt = posterior_mean_coefs(alpha_bar_t, alpha_bar_prev)
        x_prev = coef_x0 * pred_x0 + coef_xt * sample
        if t > 0:
            std = noise_std(self.config.variance_type, alpha_bar_t, alpha_bar_prev, predicted_variance)
            x_prev += std * self._noise(sample, generator, variance_noise)
        return SchedulerOutput.of(x_prev, pred_x0, sample)

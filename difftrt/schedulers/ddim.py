"""DDIM sampling: Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", arXiv:2010.02502.

Notation (the paper writes α_t for what DDPM and this code call ᾱ_t):

| paper         | code             | meaning                                                          |
|---------------|------------------|------------------------------------------------------------------|
| x_t           | ``x_t``/sample   | the noisy sample at timestep t, (B, C, H, W)                      |
| ε_θ(x_t)      | ``eps``          | predicted unit noise                                             |
| f_θ(x_t)      | ``pred_x0``      | predicted x_0, eq. 9: (x_t − sqrt(1 − ᾱ_t)·ε) / sqrt(ᾱ_t)           |
| α_t           | ``alpha_bar_t``  | cumulative signal fraction ᾱ_t                                   |
| α_{t−1}       | ``alpha_bar_prev`` | ᾱ at the previous inference timestep (past the end: 1 or ᾱ_0)  |
| σ_t           | ``sigma_t``      | std of the fresh noise, eq. 16                                    |
| η             | ``eta``          | 0: deterministic DDIM; 1: the DDPM posterior variance            |
| ε_t           | ``noise``        | fresh unit Gaussian noise, (B, C, H, W)                          |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from difftrt.errors import UsageError
from difftrt.schedulers.base import DiscreteScheduler, SchedulerConfig, SchedulerOutput, from_sample


def ddim_sigma(alpha_bar_t: float, alpha_bar_prev: float, eta: float) -> float:
    """σ_t(η) of eq. 16: η · sqrt((1 − ᾱ_prev)/(1 − ᾱ_t)) · sqrt(1 − ᾱ_t/ᾱ_prev)."""
    return eta * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_prev))


def ddim_step(
    eps: np.ndarray,
    pred_x0: np.ndarray,
    alpha_bar_t: float,
    alpha_bar_prev: float,
    eta: float,
    noise: np.ndarray | None = None,
) -> np.ndarray:
    """One DDIM update, eq. 12: x_{t−1} = sqrt(ᾱ_prev)·x̂_0 + sqrt(1 − ᾱ_prev − σ_t²)·ε + σ_t·ε_t.

    eps, pred_x0, noise: (B, C, H, W). ``noise`` may be None only when σ_t = 0 (η = 0).
    Returns x_{t−1}, (B, C, H, W), in the dtype of ``pred_x0``/``eps``.
    """
    sigma_t = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    x_prev = math.sqrt(alpha_bar_prev) * pred_x0  # "predicted x_0" term
    x_prev += math.sqrt(max(1.0 - alpha_bar_prev - sigma_t**2, 0.0)) * eps  # "direction pointing to x_t"
    if sigma_t > 0.0:
        if noise is None:
            raise UsageError(f"a DDIM step with eta={eta} needs noise")
        x_prev += sigma_t * noise  # "random noise"
    return x_prev


@dataclass(frozen=True)
class DDIMConfig(SchedulerConfig):
    """diffusers' ``DDIMScheduler`` config: the shared fields plus ``set_alpha_to_one``."""

    class_name: ClassVar[str] = "DDIMScheduler"

    set_alpha_to_one: bool = True  # ᾱ past the last step: 1 (True) or ᾱ_0 (False, Stable Diffusion 1.x)


class DDIMScheduler(DiscreteScheduler):
    """DDIM with the diffusers protocol: ``set_timesteps(n)``, loop over ``.timesteps``, ``step(...)``."""

    config_class: ClassVar[type[SchedulerConfig]] = DDIMConfig
    config: DDIMConfig

    def __init__(self, config: DDIMConfig | None = None) -> None:
        super().__init__(config)
        self.final_alpha_cumprod = 1.0 if self.config.set_alpha_to_one else float(self.alphas_cumprod[0])

    def step(
        self,
        model_output: np.ndarray,
        timestep: int | np.integer,
        sample: np.ndarray,
        generator: np.random.Generator | None = None,
        variance_noise: np.ndarray | None = None,
        eta: float | None = None,
        use_clipped_model_output: bool = False,
    ) -> SchedulerOutput:
        """x_t -> x_{t−1}. model_output, sample, variance_noise: (B, C, H, W); outputs in ``sample``'s dtype.

        ``eta`` (default 0) in [0, 1] scales the fresh noise; ``variance_noise`` replaces drawing it from
        ``generator``. ``use_clipped_model_output`` recomputes ε from the clipped x̂_0, as diffusers does.
        """
        if self.num_inference_steps is None:
            raise UsageError("call set_timesteps(num_inference_steps) before DDIMScheduler.step()")
        eta = 0.0 if eta is None else float(eta)
        if not 0.0 <= eta <= 1.0:
            raise UsageError(f"eta must be in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like), got {eta}")
        t = self._check_timestep(timestep)
        # diffusers steps back by T // n whatever the spacing; for "linspace" (and "trailing" when n does not
        # divide T) that is not the next entry of .timesteps (diffusers issue #9261). Kept for parity.
        prev_t = t - self.config.num_train_timesteps // self.num_inference_steps
        alpha_bar_t = float(self.alphas_cumprod[t])
        alpha_bar_prev = float(self.alphas_cumprod[prev_t]) if prev_t >= 0 else self.final_alpha_cumprod

        pred_x0, eps = self._predict_x0_eps(model_output, sample, alpha_bar_t)
        if use_clipped_model_output:
            eps = from_sample(sample, pred_x0, alpha_bar_t)[1]
        noise = self._noise(sample, generator, variance_noise) if eta > 0.0 else None
        x_prev = ddim_step(eps, pred_x0, alpha_bar_t, alpha_bar_prev, eta, noise)
        return SchedulerOutput.of(x_prev, pred_x0, sample)

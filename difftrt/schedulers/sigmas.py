"""What the σ-parametrised samplers share (Euler, Euler-a, LMS, Heun, DPM-Solver++): the σ grid and its Karras /
exponential respacing, the step counter, input scaling, the forward process. Karras, Aittala, Aila & Laine 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models" (EDM), arXiv:2206.00364.

Notation:

| symbol | code          | meaning                                                                           |
|--------|---------------|-----------------------------------------------------------------------------------|
| x      | ``sample``    | the loop's state x = x_0 + σ·eps = x_t / sqrt(ᾱ_t), (B, C, H, W)                  |
| σ_t    | ``sigma``     | its noise level, sqrt((1 − ᾱ_t)/ᾱ_t); σ grids are descending, float64              |
| c_in   | ``c_in``      | 1/sqrt(σ² + 1): the model is fed c_in·x = x_t, the input it was trained on          |
| d      | ``derivative``| (x − x̂_0)/σ = dx/dσ, the probability-flow ODE (EDM eq. 3 with σ(t) = t)           |
| ρ      | ``rho``       | exponent of the Karras grid (EDM eq. 5; 7 in the paper)                            |
| i      | ``step_index``| position in ``.timesteps``; ``.sigmas`` has one more entry, the final σ (0 or σ_0) |
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from difftrt.arrays import like
from difftrt.errors import ConfigError, UsageError
from difftrt.schedulers.base import BaseConfig, DiscreteScheduler, x0_from_sigma_output
from difftrt.schedulers.betas import TimestepSpacing, make_sigma_timesteps

ZERO_SNR_ALPHA_BAR = 2.0**-24  # ᾱ_{T−1} after zero-SNR rescaling, so that σ_max is finite (as diffusers)


class FinalSigmas(str, Enum):
    """The σ after the last step (diffusers' ``final_sigmas_type``)."""

    ZERO = "zero"  # σ = 0: the last step lands on x̂_0
    SIGMA_MIN = "sigma_min"  # σ_0 of the training schedule: the last step leaves that much noise


SIGMA_GRID_RESTRICTED: Mapping[str, tuple[Any, ...]] = {"use_beta_sigmas": (False,)}  # for configs' ``restricted``


@dataclass(frozen=True)
class SigmaGridOptions:
    """diffusers' ``use_*_sigmas``: how the n σ's are respaced. Mixed into the Euler, LMS, Heun and DPM configs,
    whose ``restricted`` includes ``SIGMA_GRID_RESTRICTED``."""

    use_karras_sigmas: bool = False  # EDM eq. 5 with ρ = 7 between the grid's ends
    use_exponential_sigmas: bool = False  # log σ evenly spaced between the grid's ends
    use_beta_sigmas: bool = False  # Lee et al. 2024 beta grid: not supported (needs scipy.stats)


def sigmas_from_alpha_bar(alpha_bar: np.ndarray) -> np.ndarray:
    """σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) for every training timestep: (T,) float64, ascending in t."""
    return np.sqrt((1.0 - alpha_bar) / alpha_bar)


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """EDM eq. 5: σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, i = 0..n−1: (n,) float64, descending."""
    ramp = np.linspace(0.0, 1.0, n)
    max_inv_rho, min_inv_rho = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def exponential_sigmas(sigma_min: float, sigma_max: float, n: int) -> np.ndarray:
    """log σ evenly spaced from log σ_max to log σ_min: (n,) float64, descending."""
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n))


def sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """The fractional training timestep of each σ: t interpolated linearly in log σ over the training grid.

    sigma: (n,); log_sigmas: (T,) log σ_t, ascending. Returns (n,) float64 in [0, T−1] (clamped at the ends).
    """
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    below = log_sigmas[:, None] <= log_sigma  # (T, n); the index of the last True is the lower neighbour
    low = np.cumsum(below, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0.0, 1.0)
    return (1.0 - w) * low + w * (low + 1)


def respace_sigmas(
    config: SigmaGridOptions, sigmas: np.ndarray, n: int, log_sigmas: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """(σ grid, its fractional timesteps) respaced as the config says, or (``sigmas``, None) when it says nothing.

    sigmas: (m,) descending; the new grid runs between its ends, or the config's ``sigma_min`` / ``sigma_max``
    where it has them (Euler). Raises ``ConfigError`` when both respacings are asked for.
    """
    if config.use_karras_sigmas and config.use_exponential_sigmas:
        raise ConfigError("use_karras_sigmas and use_exponential_sigmas are exclusive; set at most one to true")
    if not (config.use_karras_sigmas or config.use_exponential_sigmas):
        return sigmas, None
    sigma_min = getattr(config, "sigma_min", None)
    sigma_max = getattr(config, "sigma_max", None)
    sigma_min = float(sigmas[-1]) if sigma_min is None else sigma_min
    sigma_max = float(sigmas[0]) if sigma_max is None else sigma_max
    respace = karras_sigmas if config.use_karras_sigmas else exponential_sigmas
    new = respace(sigma_min, sigma_max, n)
    return new, sigma_to_t(new, log_sigmas)


def push_history(history: list[np.ndarray], item: np.ndarray, size: int) -> list[np.ndarray]:
    """``history`` with ``item`` appended, keeping the newest ``size`` entries (multistep solvers' memory)."""
    return [*history, item][-size:]


class SigmaScheduler(DiscreteScheduler):
    """The diffusers protocol over a σ grid: a step counter started by the first ``scale_model_input``/``step``
    (at ``set_begin_index``'s index, else where the timestep sits in ``.timesteps``), c_in input scaling, and
    x_0 + σ·noise as the forward process. ``.sigmas``: (len(.timesteps) + 1,) float64."""

    def __init__(self, config: BaseConfig | None = None) -> None:
        super().__init__(config)
        if getattr(self.config, "rescale_betas_zero_snr", False):
            self.alphas_cumprod[-1] = ZERO_SNR_ALPHA_BAR  # close to 0 without being 0: σ_max finite
        self.train_sigmas = sigmas_from_alpha_bar(self.alphas_cumprod)  # σ_t, (T,) float64 ascending
        big_t = self.config.num_train_timesteps
        self._set_grid(np.append(self.train_sigmas[::-1], 0.0), np.arange(big_t - 1, -1, -1, dtype=np.float32))

    @property
    def init_noise_sigma(self) -> float:  # type: ignore[override]
        """Std of x at the first step: σ_max, or sqrt(σ_max² + 1) for "leading" spacing (diffusers' choice)."""
        sigma_max = float(self.sigmas.max())
        if self.config.timestep_spacing in (TimestepSpacing.LINSPACE, TimestepSpacing.TRAILING):
            return sigma_max
        return math.sqrt(sigma_max * sigma_max + 1.0)

    @property
    def step_index(self) -> int | None:
        """Index of the next step in ``.timesteps``, or None before the first call."""
        return self._step_index

    def set_timesteps(self, num_inference_steps: int) -> None:
        """The grid of diffusers' Euler / LMS / Heun: n timesteps, σ interpolated at them (then respaced), final σ."""
        c = self.config
        timesteps = make_sigma_timesteps(c.timestep_spacing, num_inference_steps, c.num_train_timesteps, c.steps_offset)
        sigmas = np.interp(timesteps, np.arange(c.num_train_timesteps), self.train_sigmas)
        if isinstance(c, SigmaGridOptions):
            sigmas, respaced = respace_sigmas(c, sigmas, len(timesteps), np.log(self.train_sigmas))
            timesteps = timesteps if respaced is None else respaced.astype(np.float32)
        self._set_grid(np.append(sigmas, self.final_sigma()), timesteps)
        self.num_inference_steps = int(num_inference_steps)

    def final_sigma(self) -> float:
        """σ after the last step: 0, or σ_0 when the config's ``final_sigmas_type`` is "sigma_min"."""
        final = getattr(self.config, "final_sigmas_type", FinalSigmas.ZERO)
        return float(self.train_sigmas[0]) if final is FinalSigmas.SIGMA_MIN else 0.0

    def _set_grid(self, sigmas: np.ndarray, timesteps: np.ndarray) -> None:
        """Install σ_0..σ_n and the n timesteps; forget the step counter, the begin index and solver history."""
        self.sigmas, self.timesteps = sigmas, timesteps
        self._step_index: int | None = None
        self._begin_index = None

    def index_for_timestep(self, timestep: float | np.floating | np.integer) -> int:
        """Where ``timestep`` sits in ``.timesteps``; of repeated entries (Heun) the second, as diffusers."""
        hits = np.flatnonzero(self.timesteps == timestep)
        if hits.size == 0:
            raise UsageError(f"timestep {timestep} is not in this scheduler's .timesteps; iterate over .timesteps")
        return int(hits[1] if hits.size > 1 else hits[0])

    def _index(self, timestep: float | np.floating | np.integer) -> int:
        """The current step index, started from the begin index or ``timestep`` on the first call."""
        if self._step_index is None:
            start = self._begin_index if self._begin_index is not None else self.index_for_timestep(timestep)
            self._step_index = start
        if self._step_index >= len(self.timesteps):
            raise UsageError(f"all {len(self.timesteps)} steps have run; call set_timesteps() to sample again")
        return self._step_index

    def scale_model_input(self, sample: np.ndarray, timestep: float | np.floating | None = None) -> np.ndarray:
        """c_in·x = x / sqrt(σ² + 1): the model's input at this step. sample: (B, ...) -> same shape and dtype."""
        sigma = float(self.sigmas[self._index(timestep)])
        return sample * (1.0 / math.sqrt(sigma * sigma + 1.0))

    def _predict_x0(self, model_output: np.ndarray, sample: np.ndarray, sigma: float) -> np.ndarray:
        """x̂_0 from the model output at noise level σ, per the config's prediction type: (B, C, H, W)."""
        return x0_from_sigma_output(self.config.prediction_type, sample, model_output, sigma)

    def _noise_sigmas(self, timesteps: float | np.ndarray) -> np.ndarray:
        """σ for each row of ``add_noise``: at the begin index (img2img) or current step if set, else looked up."""
        t = np.atleast_1d(np.asarray(timesteps))
        if self._begin_index is None:
            return self.sigmas[[self.index_for_timestep(v) for v in t]]
        index = self._begin_index if self._step_index is None else self._step_index
        return np.full(t.shape[0], self.sigmas[index])

    def add_noise(self, original_samples: np.ndarray, noise: np.ndarray, timesteps: float | np.ndarray) -> np.ndarray:
        """x = x_0 + σ·noise at ``timesteps`` (values from ``.timesteps``; ignored once ``set_begin_index`` ran).

        original_samples, noise: (B, ...); timesteps: one value or (B,). Returns (B, ...) in x_0's dtype.
        """
        sigma = self._noise_sigmas(timesteps)
        sigma = like(sigma.reshape(sigma.shape + (1,) * (original_samples.ndim - 1)), original_samples)
        return original_samples + noise * sigma

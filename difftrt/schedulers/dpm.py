"""Multistep DPM-Solver++ (2M by default): Lu, Zhou, Bao, Chen, Li & Zhu 2022, "DPM-Solver++: Fast Solver for
Guided Sampling of Diffusion Probabilistic Models", arXiv:2211.01095 (algorithm 2, appendix B for the SDE form).

The solver integrates the data-prediction ODE exactly in λ = log(α_t/σ_t) except for x̂_0, which it
extrapolates from the last k predictions. The update is linear in them, so ``dpmpp_coefficients`` reduces it
to scalars and the arrays are touched once: x_t = a·x_s + Σ_j w_j·x̂_0^{(j)} + c·z.

Notation (the paper's α, σ are the variance-preserving ones; ``.sigmas`` holds the σ-scheduler's σ = σ_t/α_t):

| paper           | code                | meaning                                                                 |
|-----------------|---------------------|-------------------------------------------------------------------------|
| α_t, σ_t        | ``alpha_t``, ``sigma_vp_t`` | 1/sqrt(1 + σ²) and σ/sqrt(1 + σ²) at the target noise level     |
| λ_t             | −log σ              | half log-SNR; h = λ_t − λ_{s0} > 0 is the step, h_0 = λ_{s0} − λ_{s1}    |
| r_0, r_1        | ``r0``, ``r1``      | h_0/h and h_1/h, the previous steps relative to this one                 |
| x̂_0^{(j)}, D_k  | ``model_outputs``   | stored x̂_0 predictions (newest last) and their divided differences      |
| z               | ``noise``           | fresh N(0, I) for "sde-dpmsolver++", (B, C, H, W)                        |
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from difftrt.arrays import like
from difftrt.schedulers.base import PREDICTION_TO_X0_EPS, BaseConfig, Prediction, SchedulerOutput, threshold_sample
from difftrt.schedulers.betas import BetaSchedule, TimestepSpacing, make_dpm_timesteps
from difftrt.schedulers.sigmas import (
    SIGMA_GRID_RESTRICTED,
    FinalSigmas,
    SigmaGridOptions,
    SigmaScheduler,
    push_history,
    respace_sigmas,
)


class AlgorithmType(str, Enum):
    """diffusers' ``algorithm_type``; the deprecated noise-prediction "dpmsolver" forms are not supported."""

    DPMSOLVER_PP = "dpmsolver++"  # the ODE solver (deterministic)
    SDE_DPMSOLVER_PP = "sde-dpmsolver++"  # its SDE variant: adds σ_t·sqrt(1 − e^{−2h})·z each step


class SolverType(str, Enum):
    """How the second-order term is formed (diffusers' ``solver_type``)."""

    MIDPOINT = "midpoint"  # D_1 weighted ½ (algorithm 2 as published)
    HEUN = "heun"  # the exponential-integrator weight (e^{−h} − 1)/h + 1


def dpmpp_coefficients(
    sigma_next: float, sigma_hist: Sequence[float], solver_type: SolverType, stochastic: bool
) -> tuple[float, list[float], float]:
    """(a, w, c) with x_next = a·x + Σ_j w_j·x̂_0^{(j)} + c·z, x̂_0^{(0)} the newest prediction.

    sigma_hist: σ at the current and previous steps, newest first; its length is the order k ∈ {1, 2, 3}.
    """
    if sigma_next == 0.0:  # λ = ∞: every order lands on the newest x̂_0
        return 0.0, [1.0] + [0.0] * (len(sigma_hist) - 1), 0.0
    alpha_t = 1.0 / math.sqrt(1.0 + sigma_next**2)
    s0 = sigma_hist[0]
    a = sigma_next * alpha_t / (s0 / math.sqrt(1.0 + s0**2))  # σ_t/σ_s in the VP parametrisation
    h = math.log(s0 / sigma_next)
    if stochastic:
        phi = -math.expm1(-2.0 * h)  # 1 − e^{−2h}
        a, c = a * math.exp(-h), sigma_next * alpha_t * math.sqrt(phi)
        b1_heun, b2 = alpha_t * (phi / (-2.0 * h) + 1.0), alpha_t * ((phi - 2.0 * h) / (2.0 * h) ** 2 - 0.5)
    else:
        phi = -math.expm1(-h)  # 1 − e^{−h}
        c = 0.0
        b1_heun, b2 = alpha_t * (1.0 - phi / h), -alpha_t * ((h - phi) / h**2 - 0.5)
    b0 = alpha_t * phi
    if len(sigma_hist) == 1:
        return a, [b0], c
    r0 = math.log(sigma_hist[1] / s0) / h
    if len(sigma_hist) == 2:  # D_1 = (x̂0⁽⁰⁾ − x̂0⁽¹⁾)/r0
        b1 = 0.5 * b0 if solver_type is SolverType.MIDPOINT else b1_heun
        return a, [b0 + b1 / r0, -b1 / r0], c
    r1 = math.log(sigma_hist[2] / sigma_hist[1]) / h
    q = 1.0 / (r0 + r1)  # D_1 = (1 + r0·q)·D1_0 − r0·q·D1_1, D_2 = q·(D1_0 − D1_1)
    k0 = b1_heun * (1.0 + r0 * q) + b2 * q  # weight of D1_0 = (x̂0⁽⁰⁾ − x̂0⁽¹⁾)/r0
    k1 = -b1_heun * r0 * q - b2 * q  # weight of D1_1 = (x̂0⁽¹⁾ − x̂0⁽²⁾)/r1
    return a, [b0 + k0 / r0, -k0 / r0 + k1 / r1, -k1 / r1], c


@dataclass(frozen=True)
class DPMSolverConfig(BaseConfig, SigmaGridOptions):
    """diffusers' ``DPMSolverMultistepScheduler`` config; options difftrt lacks accept their defaults only."""

    class_name: ClassVar[str] = "DPMSolverMultistepScheduler"
    restricted: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        **SIGMA_GRID_RESTRICTED,
        "solver_order": (1, 2, 3),
        "use_lu_lambdas": (False,),
        "use_flow_sigmas": (False,),
        "variance_type": (None, "learned", "learned_range"),
        "use_dynamic_shifting": (False,),
        "time_shift_type": ("exponential",),
    }
    ALIASES: ClassVar[Mapping[str, Mapping[str, str]]] = {  # diffusers' register_to_config rewrites
        "algorithm_type": {"deis": "dpmsolver++"},
        "solver_type": {"logrho": "midpoint", "bh1": "midpoint", "bh2": "midpoint"},
    }

    solver_order: int = 2  # k: x̂_0 predictions combined per step (2 = "2M")
    thresholding: bool = False  # Imagen dynamic thresholding of x̂_0 (pixel models)
    dynamic_thresholding_ratio: float = 0.995  # quantile of |x̂_0| taken as the threshold s
    sample_max_value: float = 1.0  # upper bound for s
    algorithm_type: AlgorithmType = AlgorithmType.DPMSOLVER_PP  # ODE or SDE form
    solver_type: SolverType = SolverType.MIDPOINT  # second-order term
    lower_order_final: bool = True  # below 15 steps, drop to orders 1 and 2 on the last two steps
    euler_at_final: bool = False  # first order on the last step whatever the step count
    use_lu_lambdas: bool = False  # Lu et al. λ-uniform grid: not supported
    use_flow_sigmas: bool = False  # flow-matching σ: not supported
    flow_shift: float = 1.0  # used only with flow σ
    final_sigmas_type: FinalSigmas = FinalSigmas.ZERO  # σ after the last step
    lambda_min_clipped: float = -math.inf  # skip timesteps whose λ is below this (cosine schedules)
    variance_type: str | None = None  # "learned"/"learned_range": the model's second C channels are dropped
    timestep_spacing: TimestepSpacing = TimestepSpacing.LINSPACE  # diffusers' default here
    rescale_betas_zero_snr: bool = False  # ᾱ_{T−1} → 2⁻²⁴ after Lin et al. 2023's rescaling
    use_dynamic_shifting: bool = False  # flow-matching resolution shift: not supported
    time_shift_type: str = "exponential"  # ditto

    def __post_init__(self) -> None:
        for field, aliases in self.ALIASES.items():
            value = getattr(self, field)
            object.__setattr__(self, field, aliases.get(value, value) if isinstance(value, str) else value)
        super().__post_init__()
        self._coerce("algorithm_type", AlgorithmType)
        self._coerce("solver_type", SolverType)
        self._coerce("final_sigmas_type", FinalSigmas)


class DPMSolverMultistepScheduler(SigmaScheduler):
    """Multistep DPM-Solver++ with the diffusers protocol; keeps the last ``solver_order`` x̂_0's between steps."""

    config_class: ClassVar[type[BaseConfig]] = DPMSolverConfig
    config: DPMSolverConfig

    @property
    def init_noise_sigma(self) -> float:  # type: ignore[override]
        """1: the loop carries the variance-preserving x_t, as DDIM's does."""
        return 1.0

    def _set_grid(self, sigmas: np.ndarray, timesteps: np.ndarray) -> None:
        super()._set_grid(sigmas, timesteps)
        self.model_outputs: list[np.ndarray] = []  # x̂_0 of the last solver_order steps, newest last
        self.lower_order_nums = 0  # steps taken so far, capped at solver_order

    def set_timesteps(self, num_inference_steps: int) -> None:
        """n integer timesteps (laid out over 0..L−1, L = T less the λ-clipped tail) and their σ (respaced)."""
        c = self.config
        big_t = c.num_train_timesteps
        lambdas = -np.log(self.train_sigmas)  # λ_t, descending in t
        last = big_t - int(np.searchsorted(lambdas[::-1], c.lambda_min_clipped))
        timesteps = make_dpm_timesteps(c.timestep_spacing, num_inference_steps, big_t, c.steps_offset, last)
        n = int(num_inference_steps)
        sigmas, respaced = respace_sigmas(c, self.train_sigmas[::-1], n, np.log(self.train_sigmas))
        if respaced is None:
            sigmas = np.interp(timesteps, np.arange(big_t), self.train_sigmas)
        elif c.use_karras_sigmas and c.beta_schedule is not BetaSchedule.SQUAREDCOS_CAP_V2:
            timesteps = respaced.round().astype(np.int64)
        else:  # diffusers truncates the fractional timesteps here
            timesteps = respaced.astype(np.int64)
        self._set_grid(np.append(sigmas, self.final_sigma()), timesteps)
        self.num_inference_steps = len(timesteps)

    def scale_model_input(self, sample: np.ndarray, timestep: Any = None) -> np.ndarray:  # noqa: ARG002
        """Identity: the model is fed the loop's x_t as is."""
        return sample

    def convert_model_output(self, model_output: np.ndarray, sample: np.ndarray, sigma: float) -> np.ndarray:
        """x̂_0 from the model output at noise level σ (thresholded if configured): (B, C, H, W)."""
        c = self.config
        channels = sample.shape[1]
        if c.variance_type is not None and c.prediction_type is Prediction.EPSILON:
            model_output = model_output[:, :channels, ...]
        pred_x0, _ = PREDICTION_TO_X0_EPS[c.prediction_type](sample, model_output, 1.0 / (1.0 + sigma * sigma))
        if c.thresholding:
            pred_x0 = threshold_sample(pred_x0, c.dynamic_thresholding_ratio, c.sample_max_value)
        return pred_x0

    def _order_now(self, i: int) -> int:
        """The order of step i: ramps up from 1, and drops at the end as diffusers' flags say."""
        c, n = self.config, len(self.timesteps)
        short = c.lower_order_final and n < 15
        final = i == n - 1 and (c.euler_at_final or short or c.final_sigmas_type is FinalSigmas.ZERO)
        if c.solver_order == 1 or self.lower_order_nums < 1 or final:
            return 1
        if c.solver_order == 2 or self.lower_order_nums < 2 or (i == n - 2 and short):
            return 2
        return 3

    def step(
        self,
        model_output: np.ndarray,
        timestep: int | np.integer,
        sample: np.ndarray,
        generator: np.random.Generator | None = None,
        variance_noise: np.ndarray | None = None,
        eta: float | None = None,
    ) -> SchedulerOutput:
        """x_s -> x_t, the next timestep. model_output: (B, C or 2C, H, W); sample, variance_noise (the SDE form's
        z, else drawn from ``generator``): (B, C, H, W). Outputs in ``sample``'s dtype.
        """
        self._reject_eta(eta)
        c = self.config
        i = self._index(timestep)
        pred_x0 = self.convert_model_output(model_output, sample, float(self.sigmas[i]))
        self.model_outputs = push_history(self.model_outputs, pred_x0, c.solver_order)
        order = self._order_now(i)
        sigma_hist = self.sigmas[i - order + 1 : i + 1][::-1].tolist()
        stochastic = c.algorithm_type is AlgorithmType.SDE_DPMSOLVER_PP
        a, weights, noise_std = dpmpp_coefficients(float(self.sigmas[i + 1]), sigma_hist, c.solver_type, stochastic)
        x_next = sample * a
        for w, x0 in zip(weights, reversed(self.model_outputs)):
            x_next += w * x0
        if noise_std > 0.0:
            x_next += self._noise(sample, generator, variance_noise) * noise_std
        self.lower_order_nums = min(self.lower_order_nums + 1, c.solver_order)
        self._step_index = i + 1
        return SchedulerOutput.of(x_next, pred_x0, sample)

    def add_noise(self, original_samples: np.ndarray, noise: np.ndarray, timesteps: int | np.ndarray) -> np.ndarray:
        """x_t = α_t·x_0 + σ_t·noise (variance preserving) at the σ that ``SigmaScheduler.add_noise`` picks."""
        sigma = self._noise_sigmas(timesteps)
        alpha = 1.0 / np.sqrt(1.0 + sigma**2)
        shape = sigma.shape + (1,) * (original_samples.ndim - 1)
        alpha_x, sigma_x = like(alpha.reshape(shape), original_samples), like((sigma * alpha).reshape(shape), original_samples)
        return alpha_x * original_samples + sigma_x * noise

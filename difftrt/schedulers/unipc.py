"""UniPC, the unified predictor–corrector: Zhao, Bai, Rao, Zhou & Lu 2023, "UniPC: A Unified Predictor-Corrector
Framework for Fast Sampling of Diffusion Models", arXiv:2302.04867 (algorithms 1–3, the B(h) variants), in its
data-prediction form (``predict_x0=True``), as diffusers' ``UniPCMultistepScheduler``.

Each step first corrects the sample the last predictor made (UniC, with the model output it now has), then
predicts the next one (UniP), both exactly in λ = log(α/σ) except for x̂_0, which they extrapolate from the
last k predictions through divided differences D_k = (x̂_0^{(k)} − x̂_0^{(0)}) / r_k. Every update is linear in
the stored arrays; ``unipc_terms`` computes its scalars once per step (float64).

| paper          | code          | meaning                                                                   |
|----------------|---------------|---------------------------------------------------------------------------|
| α_t, σ_t       | ``alpha_t``, ``sigma_vp_t`` | 1/sqrt(1 + σ²) and σ/sqrt(1 + σ²) of the σ-scheduler's σ        |
| h              | ``h``         | λ_t − λ_s0 > 0, this step in half log-SNR                                  |
| r_k            | ``r``         | (λ_{s_k} − λ_s0)/h of the k-th earlier step                                |
| B(h)           | ``b_h``       | h (bh1) or e^h − 1 (bh2), with h → −h in the data-prediction form          |
| ρ_k            | ``rhos``      | the weights of the D_k: a k×k solve (R ρ = b); 1/2 for UniP at order 2 and UniC at order 1 |
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from difftrt.schedulers.base import PREDICTION_TO_X0_EPS, BaseConfig, SchedulerOutput, threshold_sample
from difftrt.schedulers.betas import TimestepSpacing, make_dpm_timesteps
from difftrt.schedulers.dpm import DPMSolverMultistepScheduler
from difftrt.schedulers.sigmas import (SIGMA_GRID_RESTRICTED, FinalSigmas, SigmaGridOptions, SigmaScheduler,
                                       push_history, respace_sigmas)


class UniPCSolver(str, Enum):
    BH1 = "bh1"  # B(h) = h: recommended below 10 steps for unconditional sampling
    BH2 = "bh2"  # B(h) = e^h − 1: diffusers' default, for guided sampling


def _alpha_sigma(sigma: float) -> tuple[float, float]:
    alpha = 1.0 / math.sqrt(sigma * sigma + 1.0)
    return alpha, sigma * alpha


def _lam(sigma: float) -> float:
    """λ = log α − log σ_vp, +inf at σ = 0 (the last step's target when ``final_sigmas_type`` is "zero")."""
    alpha, sigma_vp = _alpha_sigma(sigma)
    return math.inf if sigma_vp == 0.0 else math.log(alpha) - math.log(sigma_vp)


@dataclass(frozen=True)
class UniPCTerms:
    """The scalars of one UniP or UniC update, applied as
    x_next = a·x + c0·x̂_0^{(0)} − scale·(Σ_k ρ_k·D_k [+ ρ_new·(x̂_new − x̂_0^{(0)})]), D_k = (x̂_0^{(k)} − x̂_0^{(0)})/r_k,
    in that order (diffusers'): at zero-SNR scales (x ≈ 4096·z) another grouping rounds differently in float32."""

    a: float  # σ_t/σ_s of the variance-preserving σ's
    c0: float  # −α_t·(e^{−h} − 1)
    scale: float  # α_t·B(h)
    rhos: list[float]  # ρ_k of the divided differences
    r: list[float]  # r_k
    rho_new: float | None  # the corrector's weight of the new prediction (None: a predictor)


def unipc_terms(sigma_to: float, sigma_from: float, sigma_hist: Sequence[float], order: int, solver: UniPCSolver,
                corrector: bool) -> UniPCTerms:
    """One UniP (``corrector`` False) or UniC update of ``order`` from σ ``sigma_from`` to ``sigma_to``.

    sigma_hist: σ at the steps of the earlier predictions x̂_0^{(1)}, x̂_0^{(2)}, ..., newest first (order − 1 of
    them). A step to σ = 0 (h = ∞) is computed with IEEE limits: at order 1 it gives x̂_0 for bh1 and bh2 alike
    (the scheduler takes that step at order 1; diffusers' higher orders and bh1 return NaN/inf there).
    """
    alpha_t, sigma_vp_t = _alpha_sigma(sigma_to)
    _, sigma_vp_s = _alpha_sigma(sigma_from)
    lam_s = _lam(sigma_from)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        h = np.float64(_lam(sigma_to) - lam_s)
        r = [float(np.float64(_lam(x) - lam_s) / h) for x in sigma_hist[: order - 1]]
        hh = -h  # the data-prediction form
        h_phi_1 = np.expm1(hh)
        b_h = hh if solver is UniPCSolver.BH1 else np.expm1(hh)
        rows, rhs, h_phi_k, factorial = [], [], h_phi_1 / hh - 1.0, 1
        for i in range(1, order + 1):
            rows.append([x ** (i - 1) for x in [*r, 1.0]])
            rhs.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / factorial
        rho_new = None
        if corrector:
            rhos = [0.5] if order == 1 else np.linalg.solve(np.array(rows), np.array(rhs)).tolist()
            rhos, rho_new = rhos[:-1], float(rhos[-1])
        else:
            rhos = [] if order == 1 else [0.5] if order == 2 else np.linalg.solve(
                np.array(rows)[:-1, :-1], np.array(rhs)[:-1]).tolist()
        return UniPCTerms(sigma_vp_t / sigma_vp_s, float(-alpha_t * h_phi_1), float(alpha_t * b_h), list(rhos), r,
                          rho_new)


@dataclass(frozen=True)
class UniPCConfig(BaseConfig, SigmaGridOptions):
    """diffusers' ``UniPCMultistepScheduler`` config; options difftrt lacks accept their defaults only."""

    class_name: ClassVar[str] = "UniPCMultistepScheduler"
    restricted: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        **SIGMA_GRID_RESTRICTED, "solver_order": (1, 2, 3), "predict_x0": (True,), "use_flow_sigmas": (False,),
        "use_dynamic_shifting": (False,), "solver_p": (None,), "shift_terminal": (None,),
        "time_shift_type": ("exponential",),
    }
    ALIASES: ClassVar[Mapping[str, str]] = {"midpoint": "bh2", "heun": "bh2", "logrho": "bh2"}  # as diffusers maps them

    solver_order: int = 2  # k: x̂_0 predictions combined per step
    thresholding: bool = False  # Imagen dynamic thresholding of x̂_0 (pixel models)
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0
    predict_x0: bool = True  # the data-prediction form (the noise-prediction one is not supported)
    solver_type: UniPCSolver = UniPCSolver.BH2
    lower_order_final: bool = True  # lower the order on the last steps
    disable_corrector: tuple[int, ...] = ()  # step indices whose next step skips the corrector
    solver_p: Any = None  # another scheduler as the predictor: not supported
    use_flow_sigmas: bool = False  # flow matching: not supported, nor its options below
    flow_shift: float = 1.0
    use_dynamic_shifting: bool = False
    time_shift_type: str = "exponential"
    shift_terminal: float | None = None
    final_sigmas_type: FinalSigmas = FinalSigmas.ZERO
    timestep_spacing: TimestepSpacing = TimestepSpacing.LINSPACE
    rescale_betas_zero_snr: bool = False
    sigma_min: float | None = None  # low end of a Karras / exponential grid (None: the schedule's)
    sigma_max: float | None = None  # high end

    def __post_init__(self) -> None:
        if isinstance(self.solver_type, str):
            object.__setattr__(self, "solver_type", self.ALIASES.get(self.solver_type, self.solver_type))
        object.__setattr__(self, "disable_corrector", tuple(int(i) for i in self.disable_corrector or ()))
        super().__post_init__()
        self._coerce("solver_type", UniPCSolver)
        self._coerce("final_sigmas_type", FinalSigmas)


class UniPCMultistepScheduler(SigmaScheduler):
    """UniPC with the diffusers protocol: one model call per step, a corrector and a predictor each time."""

    config_class: ClassVar[type[BaseConfig]] = UniPCConfig
    config: UniPCConfig
    add_noise = DPMSolverMultistepScheduler.add_noise  # variance preserving, as DPM-Solver's
    scale_model_input = DPMSolverMultistepScheduler.scale_model_input  # identity

    @property
    def init_noise_sigma(self) -> float:  # type: ignore[override]
        return 1.0

    def _set_grid(self, sigmas: np.ndarray, timesteps: np.ndarray) -> None:
        super()._set_grid(sigmas, timesteps)
        self.model_outputs: list[Any] = []  # x̂_0 of the last solver_order steps, newest last
        self.lower_order_nums = 0
        self.last_sample: Any = None  # the sample the last predictor started from
        self.this_order = 0

    def set_timesteps(self, num_inference_steps: int) -> None:
        """n integer timesteps and their σ, as diffusers' UniPC lays them out (Karras timesteps rounded)."""
        c, big_t, n = self.config, self.config.num_train_timesteps, int(num_inference_steps)
        timesteps = make_dpm_timesteps(c.timestep_spacing, n, big_t, c.steps_offset, big_t)
        sigmas, respaced = respace_sigmas(c, self.train_sigmas[::-1], n, np.log(self.train_sigmas))
        if respaced is None:
            sigmas = np.interp(timesteps, np.arange(big_t), self.train_sigmas)
        else:
            timesteps = (respaced.round() if c.use_karras_sigmas else respaced).astype(np.int64)
        # diffusers' UniPC ends a respaced grid on its own last σ (which honours a configured sigma_min)
        last = float(sigmas[-1]) if respaced is not None and c.final_sigmas_type is FinalSigmas.SIGMA_MIN \
            else self.final_sigma()
        self._set_grid(np.append(sigmas, last), timesteps)
        self.num_inference_steps = len(timesteps)

    def convert_model_output(self, model_output: Any, sample: Any, sigma: float) -> Any:
        """x̂_0 from the model output at noise level σ (thresholded if configured): (B, C, H, W)."""
        c = self.config
        pred_x0, _ = PREDICTION_TO_X0_EPS[c.prediction_type](sample, model_output, 1.0 / (1.0 + sigma * sigma))
        return threshold_sample(pred_x0, c.dynamic_thresholding_ratio, c.sample_max_value) if c.thresholding else pred_x0

    def _apply(self, x: Any, terms: UniPCTerms, new: Any = None) -> Any:
        """x_next from ``terms`` and the stored x̂_0's (newest last), in diffusers' order of operations."""
        m0 = self.model_outputs[-1]
        out = x * terms.a + terms.c0 * m0
        res = None
        for rho, rk, m in zip(terms.rhos, terms.r, reversed(self.model_outputs[:-1])):
            d = (m - m0) / rk
            res = d * rho if res is None else res + d * rho
        if terms.rho_new is not None:
            new_term = (new - m0) * terms.rho_new
            res = new_term if res is None else res + new_term
        return out if res is None else out - terms.scale * res

    def step(self, model_output: Any, timestep: int | np.integer, sample: Any, generator: Any = None,
             variance_noise: Any = None, eta: float | None = None) -> SchedulerOutput:
        """x_s -> x_t, the next timestep (deterministic). model_output, sample: (B, C, H, W) in any Array API
        library; outputs in ``sample``'s dtype. The returned x̂_0 is this step's own prediction."""
        self._reject_eta(eta)
        c = self.config
        i = self._index(timestep)
        x0 = self.convert_model_output(model_output, sample, float(self.sigmas[i]))
        if i > 0 and (i - 1) not in c.disable_corrector and self.last_sample is not None:  # UniC on last step's x
            hist = self.sigmas[i - self.this_order: i - 1][::-1].tolist()
            terms = unipc_terms(float(self.sigmas[i]), float(self.sigmas[i - 1]), hist, self.this_order,
                                c.solver_type, corrector=True)
            sample = self._apply(self.last_sample, terms, new=x0)
        self.model_outputs = push_history(self.model_outputs, x0, c.solver_order)
        order = min(c.solver_order, len(self.timesteps) - i) if c.lower_order_final else c.solver_order
        if float(self.sigmas[i + 1]) == 0.0:  # to σ = 0 only the first-order step is finite: it lands on x̂_0
            order = 1
        self.this_order = min(order, self.lower_order_nums + 1)
        self.last_sample = sample
        hist = self.sigmas[i - self.this_order + 1: i][::-1].tolist()
        terms = unipc_terms(float(self.sigmas[i + 1]), float(self.sigmas[i]), hist, self.this_order,
                            c.solver_type, corrector=False)
        x_next = self._apply(sample, terms)
        self.lower_order_nums = min(self.lower_order_nums + 1, c.solver_order)
        self._step_index = i + 1
        return SchedulerOutput.of(x_next, x0, sample)

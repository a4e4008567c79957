"""Pseudo numerical methods for diffusion models (PNDM): Liu, Ren, Lin & Zhao 2022, "Pseudo Numerical Methods
for Diffusion Models on Manifolds", ICLR, arXiv:2202.09778.

Each step is DDIM's deterministic update (the paper's "transfer part" φ, which it shows equals DDIM's step)
fed with a combination of past noise predictions (the "gradient part"): pseudo linear multistep (PLMS,
Adams–Bashforth weights over the last 1–4 ε) once enough are stored, pseudo Runge–Kutta (PRK, 4 model
calls per step) for the first three steps unless ``skip_prk_steps`` (Stable Diffusion 1.x ships True:
then a Heun-like pair of calls on the first step replaces them, which is why ``.timesteps`` repeats t_1).

img2img (``set_begin_index(b)``, b > 0) runs plain PLMS from the begin index, the order ramping up from 1;
begun at b = 1, between the pair's two entries, the first call only records the output. diffusers' PNDM has
no begin index and replays its first-step pair on whatever comes first, which lands every later step one
stride off its timestep: with an exact model its img2img does not return x_0 (ours does; see the tests).
With the Runge–Kutta warm-up (``skip_prk_steps=False``) a mid-grid start is refused.

Notation:

| paper          | code              | meaning                                                             |
|----------------|-------------------|---------------------------------------------------------------------|
| x_t            | sample            | the noisy sample at timestep t, (B, C, H, W)                        |
| e_t            | ``ets``           | the model's (ε or v) outputs at past steps, newest last             |
| e'_t           | combined          | the gradient part: PLMS / PRK combination of outputs, (B, C, H, W)   |
| φ(x_t, e', t, t−δ) | ``transfer``  | DDIM step with ε = e', ᾱ from the schedule (ddim.ddim_step, η = 0)  |
| δ              | ``stride``        | T // n, the timestep distance of one step                           |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from difftrt.errors import UsageError
from difftrt.schedulers.base import PREDICTION_TO_X0_EPS, BaseConfig, DiscreteScheduler, Prediction, SchedulerOutput
from difftrt.schedulers.betas import make_timesteps
from difftrt.schedulers.ddim import ddim_step

PLMS_WEIGHTS = {  # Adams–Bashforth weights of e_t, e_{t+δ}, ... (newest first) by how many are stored
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def plms_combination(ets: list[np.ndarray]) -> np.ndarray:
    """The PLMS gradient part from the last 1–4 outputs ``ets`` (newest last): (B, C, H, W), a new array."""
    weights = PLMS_WEIGHTS[len(ets)]
    combined = ets[-1] * weights[0]
    for w, e in zip(weights[1:], reversed(ets[:-1])):
        combined += w * e
    return combined


@dataclass(frozen=True)
class PNDMConfig(BaseConfig):
    """diffusers' ``PNDMScheduler`` config."""

    class_name: ClassVar[str] = "PNDMScheduler"
    restricted: ClassVar[Mapping[str, tuple[Any, ...]]] = {
        "prediction_type": (Prediction.EPSILON, Prediction.V_PREDICTION),  # diffusers' PNDM has no "sample"
    }

    skip_prk_steps: bool = False  # True: PLMS from the first step (Stable Diffusion); False: 3 PRK steps first
    set_alpha_to_one: bool = False  # ᾱ past the last step: 1 (True) or ᾱ_0 (False)


class PNDMScheduler(DiscreteScheduler):
    """PNDM (PLMS, optionally after PRK warm-up) with the diffusers protocol; deterministic."""

    config_class: ClassVar[type[BaseConfig]] = PNDMConfig
    config: PNDMConfig

    def __init__(self, config: PNDMConfig | None = None) -> None:
        super().__init__(config)
        self.final_alpha_cumprod = 1.0 if self.config.set_alpha_to_one else float(self.alphas_cumprod[0])
        self.prk_timesteps = np.zeros(0, dtype=np.int64)
        self._reset()

    def _reset(self) -> None:
        self.ets: list[np.ndarray] = []  # model outputs kept for PLMS (PRK appends the first of each 4)
        self.counter = 0  # step calls since set_timesteps
        self.cur_model_output: np.ndarray | None = None  # PRK's running weighted sum
        self.cur_sample: np.ndarray | None = None  # the sample a PRK / first PLMS pair starts from

    def set_timesteps(self, num_inference_steps: int) -> None:
        """n + 1 PLMS timesteps (the first step's pair repeats t_1), or 12 PRK ones (half strides) then n − 3 PLMS."""
        c = self.config
        ascending = make_timesteps(c.timestep_spacing, num_inference_steps, c.num_train_timesteps, c.steps_offset)[::-1]
        n = int(num_inference_steps)
        if c.skip_prk_steps:
            self.prk_timesteps = np.zeros(0, dtype=np.int64)
            plms = np.concatenate([ascending[:-1], ascending[-2:-1], ascending[-1:]])[::-1]
        else:
            if n < 4:
                raise UsageError(f"PNDM's Runge–Kutta warm-up needs at least 4 steps, got {n}; "
                                 "use more steps or skip_prk_steps=True in the scheduler config")
            half = np.tile([0, c.num_train_timesteps // n // 2], 4)
            self.prk_timesteps = (np.repeat(ascending[-4:], 2) + half)[:-1].repeat(2)[1:-1][::-1].copy()
            plms = ascending[:-3][::-1]
        self.timesteps = np.concatenate([self.prk_timesteps, plms]).astype(np.int64)
        self.num_inference_steps = n
        self._begin_index = None
        self._reset()

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start img2img at ``.timesteps[begin_index]``: plain PLMS from there (see the module doc)."""
        if int(begin_index) > 0 and self.prk_timesteps.size:
            raise UsageError("PNDM with its Runge–Kutta warm-up (skip_prk_steps=False) cannot start mid-schedule "
                             "as img2img needs; use skip_prk_steps=True in the scheduler config or another scheduler")
        super().set_begin_index(begin_index)

    def _transfer(
        self, sample: np.ndarray, timestep: int, prev_timestep: int, combined: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x_{t−δ}, x̂_0): φ, DDIM's deterministic step from t to ``prev_timestep`` with the combined output."""
        alpha_bar_t = float(self.alphas_cumprod[timestep])
        alpha_bar_prev = float(self.alphas_cumprod[prev_timestep]) if prev_timestep >= 0 else self.final_alpha_cumprod
        pred_x0, eps = PREDICTION_TO_X0_EPS[self.config.prediction_type](sample, combined, alpha_bar_t)
        return ddim_step(eps, pred_x0, alpha_bar_t, alpha_bar_prev, 0.0), pred_x0

    def step(
        self,
        model_output: np.ndarray,
        timestep: int | np.integer,
        sample: np.ndarray,
        generator: np.random.Generator | None = None,  # noqa: ARG002 (deterministic; protocol argument)
        variance_noise: np.ndarray | None = None,  # noqa: ARG002
        eta: float | None = None,
    ) -> SchedulerOutput:
        """One PRK or PLMS call. model_output, sample: (B, C, H, W); outputs in ``sample``'s dtype."""
        self._reject_eta(eta)
        if self.num_inference_steps is None:
            raise UsageError("call set_timesteps(num_inference_steps) before PNDMScheduler.step()")
        t = self._check_timestep(timestep)
        prk = self.counter < len(self.prk_timesteps)
        args = self._prk(model_output, t, sample) if prk else self._plms(model_output, t, sample)
        x_prev, pred_x0 = self._transfer(*args)
        if self.counter == 0 and self._begin_index == 1:  # begun between the pair's entries: t_1 comes again
            x_prev, self.ets = sample, []
        self.counter += 1
        return SchedulerOutput.of(x_prev, pred_x0, sample)

    def _prk(self, output: np.ndarray, t: int, sample: np.ndarray) -> tuple[np.ndarray, int, int, np.ndarray]:
        """Runge–Kutta stage ``counter % 4``: weights 1/6, 1/3, 1/3, 1/6; stages 2–3 probe half a stride down."""
        stage = self.counter % 4
        prev_t = t - (0 if self.counter % 2 else self.config.num_train_timesteps // self.num_inference_steps // 2)
        if stage == 0:
            self.cur_model_output, self.cur_sample = output * (1 / 6), sample
            self.ets.append(output)
        elif stage in (1, 2):
            self.cur_model_output += output * (1 / 3)
        else:
            output = self.cur_model_output + output * (1 / 6)
            self.cur_model_output = None
        start = self.cur_sample if self.cur_sample is not None else sample
        return start, int(self.prk_timesteps[self.counter // 4 * 4]), prev_t, output

    def _plms(self, output: np.ndarray, t: int, sample: np.ndarray) -> tuple[np.ndarray, int, int, np.ndarray]:
        """Linear multistep over the stored outputs; from the first entry without PRK, the first step is a
        predictor–corrector pair."""
        stride = self.config.num_train_timesteps // self.num_inference_steps
        pair = not self.prk_timesteps.size and not self._begin_index
        if pair and self.counter == 1:  # the pair's corrector: redo t + δ -> t from the pair's start
            assert self.cur_sample is not None
            start, self.cur_sample = self.cur_sample, None
            return start, t + stride, t, (output + self.ets[-1]) / 2
        self.ets = [*self.ets[-3:], output]
        if pair and self.counter == 0:
            self.cur_sample = sample
        return sample, t, t - stride, plms_combination(self.ets)

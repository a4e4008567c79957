"""Noise schedules and inference timestep grids, as pure NumPy functions (float64 / int64).

Notation: T = ``num_train_timesteps``, n = ``num_inference_steps``, β_t the variance of the noise
added by training step t, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s (``alpha_bar``). Timesteps are
0-based, as in diffusers: t ∈ {0, …, T−1}.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import TypeVar

import numpy as np

from difftrt.errors import ConfigError, UsageError

E = TypeVar("E", bound=Enum)


class BetaSchedule(str, Enum):
    """How β_t is laid out over the T training steps (diffusers' ``beta_schedule``)."""

    LINEAR = "linear"  # DDPM: β linear from beta_start to beta_end
    SCALED_LINEAR = "scaled_linear"  # Stable Diffusion: sqrt(β) linear
    SQUAREDCOS_CAP_V2 = "squaredcos_cap_v2"  # Improved DDPM cosine ᾱ, β capped at 0.999


class TimestepSpacing(str, Enum):
    """How n inference timesteps are picked among the T training ones (Lin et al. 2023, table 2)."""

    LEADING = "leading"  # 0, T//n, 2·T//n, … (+ steps_offset): never reaches T−1
    TRAILING = "trailing"  # T−1, T−1−T/n, …: starts at the noisiest step
    LINSPACE = "linspace"  # round(linspace(0, T−1, n))


def parse_choice(choices: type[E], value: str, field: str) -> E:
    """Return ``choices(value)``; raise ``ConfigError`` naming the supported values otherwise."""
    try:
        return choices(value)
    except ValueError:
        supported = ", ".join(c.value for c in choices)
        raise ConfigError(
            f"unknown {field} {value!r}; supported: {supported} (set {field!r} in the scheduler config to one of these)"
        ) from None


def betas_for_alpha_bar(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """β_t = min(1 − ᾱ(t+1)/ᾱ(t), max_beta) for the cosine ᾱ(τ) = cos²((τ/T + 0.008)/1.008 · π/2).

    Nichol & Dhariwal 2021 ("Improved DDPM"), eq. 17; the cap avoids β = 1 at the end. Returns (T,) float64.
    """
    tau = np.arange(num_train_timesteps + 1, dtype=np.float64) / num_train_timesteps
    alpha_bar = np.cos((tau + 0.008) / 1.008 * np.pi / 2) ** 2
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], max_beta)


def make_betas(
    schedule: str,
    num_train_timesteps: int,
    beta_start: float = 0.0001,
    beta_end: float = 0.02,
    trained_betas: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """β_1..β_T as a (T,) float64 array; ``trained_betas``, when given, wins over the schedule (as in diffusers)."""
    schedule = parse_choice(BetaSchedule, schedule, "beta_schedule")
    if trained_betas is not None:
        betas = np.array(trained_betas, dtype=np.float64)
        if betas.shape != (num_train_timesteps,):
            raise ConfigError(
                f"trained_betas has shape {betas.shape}, expected ({num_train_timesteps},) to match "
                f"num_train_timesteps; fix either value in the scheduler config"
            )
        return betas
    if schedule is BetaSchedule.LINEAR:
        return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    if schedule is BetaSchedule.SCALED_LINEAR:
        return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    return betas_for_alpha_bar(num_train_timesteps)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Rescale β so that ᾱ_{T−1} = 0 while keeping ᾱ_0 (Lin et al. 2023, arXiv:2305.08891, algorithm 1).

    sqrt(ᾱ) is shifted and scaled affinely: its last value becomes 0, its first is unchanged.
    betas: (T,) float64 -> (T,) float64, the last β being exactly 1.
    """
    sqrt_alpha_bar = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_alpha_bar[0], sqrt_alpha_bar[-1]
    sqrt_alpha_bar = (sqrt_alpha_bar - last) * (first / (first - last))
    alpha_bar = sqrt_alpha_bar**2
    alphas = np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1.0 - alphas


def check_steps(num_inference_steps: int, num_train_timesteps: int) -> tuple[int, int]:
    """(n, T) as ints; raises ``UsageError`` unless 1 ≤ n ≤ T."""
    n, big_t = int(num_inference_steps), int(num_train_timesteps)
    if not 1 <= n <= big_t:
        raise UsageError(
            f"num_inference_steps must be between 1 and num_train_timesteps={big_t}, got {num_inference_steps}"
        )
    return n, big_t


def make_timesteps(
    spacing: str, num_inference_steps: int, num_train_timesteps: int, steps_offset: int = 0
) -> np.ndarray:
    """The n inference timesteps, descending, as diffusers' DDIM/DDPM ``set_timesteps`` picks them: (n,) int64.

    ``steps_offset`` only shifts "leading" (diffusers ignores it for the other two spacings).
    """
    spacing = parse_choice(TimestepSpacing, spacing, "timestep_spacing")
    n, big_t = check_steps(num_inference_steps, num_train_timesteps)
    if spacing is TimestepSpacing.LINSPACE:
        timesteps = np.linspace(0, big_t - 1, n).round()[::-1]
    elif spacing is TimestepSpacing.LEADING:
        timesteps = (np.arange(n) * (big_t // n))[::-1] + steps_offset
    else:
        # diffusers' np.arange(T, 0, -T/n) yields n + 1 values (the last one rounding to -1) for some n,
        # e.g. T=1000, n=61; keeping the first n gives the same grid everywhere else.
        timesteps = np.round(np.arange(big_t, 0, -big_t / n))[:n] - 1
    timesteps = timesteps.astype(np.int64)
    if timesteps[0] >= big_t:
        raise UsageError(
            f"steps_offset={steps_offset} with {n} leading steps reaches timestep {timesteps[0]}, "
            f"but the model was trained on 0..{big_t - 1}; use fewer steps or a smaller steps_offset"
        )
    return timesteps


def make_sigma_timesteps(
    spacing: str, num_inference_steps: int, num_train_timesteps: int, steps_offset: int = 0
) -> np.ndarray:
    """The grid of diffusers' Euler / LMS / Heun ``set_timesteps``, descending: (n,) float32.

    As ``make_timesteps`` except "linspace", which is not rounded: linspace(0, T−1, n) in float32.
    """
    spacing = parse_choice(TimestepSpacing, spacing, "timestep_spacing")
    if spacing is not TimestepSpacing.LINSPACE:
        return make_timesteps(spacing, num_inference_steps, num_train_timesteps, steps_offset).astype(np.float32)
    n, big_t = check_steps(num_inference_steps, num_train_timesteps)
    return np.linspace(0, big_t - 1, n, dtype=np.float32)[::-1].copy()


def make_dpm_timesteps(
    spacing: str, num_inference_steps: int, num_train_timesteps: int, steps_offset: int = 0, last_timestep: int = 0
) -> np.ndarray:
    """The grid of diffusers' ``DPMSolverMultistepScheduler.set_timesteps``, descending: (n,) int64.

    "linspace" and "leading" lay n + 1 points over 0..L−1 (L = ``last_timestep``, T unless λ is clipped) and
    drop the last; "trailing" is ``make_timesteps``' grid counted down from L.
    """
    spacing = parse_choice(TimestepSpacing, spacing, "timestep_spacing")
    n, big_t = check_steps(num_inference_steps, num_train_timesteps)
    last = int(last_timestep) or big_t
    if spacing is TimestepSpacing.LINSPACE:
        timesteps = np.linspace(0, last - 1, n + 1).round()[::-1][:-1]
    elif spacing is TimestepSpacing.LEADING:
        timesteps = (np.arange(n + 1) * (last // (n + 1))).round()[::-1][:-1] + steps_offset
    else:  # the first n values, as make_timesteps
        timesteps = np.arange(last, 0, -big_t / n).round()[:n] - 1
    return timesteps.astype(np.int64)

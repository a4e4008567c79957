"""The denoising loop and classifier-free guidance, over any ``denoise(x_t, t)`` callable.

Notation: x_t (B, C, h, w) latents at timestep t; eps the model output (noise, v or x0, as the
scheduler's ``prediction_type`` says); w the guidance scale; c / ∅ the prompt / negative-prompt states.
Nothing here knows which backend computed the model output, nor where the arrays live: they stay in the
namespace (and on the device) of the latents the loop starts from (``difftrt.arrays``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from difftrt.arrays import namespace

Denoise = Callable[[np.ndarray, float], np.ndarray]
ModelCall = Callable[[np.ndarray, float, np.ndarray], np.ndarray]  # unet(x_t, t, context), e.g. a UNetAdapter
StepCallback = Callable[[int, float, np.ndarray, np.ndarray], None]  # (i, t, x_{t-1}, predicted x0)


def guide(out_uncond: np.ndarray, out_cond: np.ndarray, scale: float) -> np.ndarray:
    """Classifier-free guidance (Ho & Salimans 2022): eps = eps(∅) + w · (eps(c) − eps(∅))."""
    return out_uncond + scale * (out_cond - out_uncond)


def unet_denoiser(unet: ModelCall, cond: np.ndarray, uncond: np.ndarray | None, scale: float) -> Denoise:
    """A ``denoise`` that calls the U-Net once per step.

    With guidance (``uncond`` given and ``scale != 1``) that one call has 2B rows, [∅ rows; c rows], and the
    halves are mixed by ``guide``; at ``scale == 1`` the guided result equals eps(c), so only c's B rows run.
    cond, uncond: (B, L, D) text-encoder states.
    """
    guided = uncond is not None and scale != 1.0
    context = namespace(cond).concat([uncond, cond]) if guided else cond

    def denoise(x_t: Any, t: float) -> Any:
        if not guided:
            return unet(x_t, t, context)
        out = unet(namespace(x_t).concat([x_t, x_t]), t, context)
        rows = x_t.shape[0]
        return guide(out[:rows, ...], out[rows:, ...], scale)

    return denoise


def denoise_loop(scheduler: Any, denoise: Denoise, x: np.ndarray, timesteps: np.ndarray, rng: np.random.Generator,
                 step_kwargs: dict[str, Any] | None = None, callback: StepCallback | None = None) -> np.ndarray:
    """Step ``x`` (already scaled: noise × ``init_noise_sigma``, or a noised image) through ``timesteps``."""
    for i, t in enumerate(timesteps):
        out = denoise(scheduler.scale_model_input(x, t), float(t))  # σ-grids have fractional timesteps
        step = scheduler.step(out, t, x, generator=rng, **(step_kwargs or {}))
        x = step.prev_sample
        if callback is not None:
            callback(i, float(t), x, step.pred_original_sample)
    return x

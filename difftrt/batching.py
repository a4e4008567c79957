"""Step-level batching: several requests in flight, merged into one U-Net call per denoising step.

Each request keeps its own ``SamplerState`` — scheduler instance, timesteps and position in them, latents,
prompt states, guidance scale, random generator — and ``batched_step`` advances every state by one step with a
single U-Net call: their rows (both guidance halves of each) concatenated, each row at its own timestep. A
request can join or leave between any two steps. One request alone is today's loop: ``Text2ImagePipeline``
runs exactly this with a single state, so a batched request computes what it would compute alone (up to the
engine's own batch-size-dependent rounding, which on ONNX Runtime's CPU kernels is none).

Notation as in ``difftrt.sampling``: x_t (N, C, h, w) latents, c / ∅ the prompt / negative-prompt states.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from difftrt.arrays import namespace
from difftrt.sampling import ModelCall, StepCallback, guide


@dataclass
class SamplerState:
    """One request's denoising in progress."""

    scheduler: Any
    timesteps: np.ndarray  # the steps still to run from ``index`` on (the whole grid, or img2img's tail)
    x: Any  # (N, C, h, w) current latents, in the U-Net engine's array library
    cond: Any  # (N, L, D) prompt states
    uncond: Any | None  # (N, L, D) negative-prompt states, or None when guidance is off (scale 1)
    guidance: float
    rng: np.random.Generator
    step_kwargs: dict[str, Any] = field(default_factory=dict)
    callback: StepCallback | None = None
    index: int = 0
    encoding: Any = None  # what the tokenizer made of the prompt (truncation, unknown words), for the result

    @property
    def done(self) -> bool:
        return self.index >= len(self.timesteps)

    @property
    def guided(self) -> bool:
        return self.uncond is not None and self.guidance != 1.0

    @property
    def rows(self) -> int:
        """U-Net rows this state adds to a call: 2N guided ([∅; c]), else N."""
        return self.x.shape[0] * (2 if self.guided else 1)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(C, h, w): states batch together only when these agree."""
        return tuple(self.x.shape[1:])

    def unet_inputs(self) -> tuple[Any, np.ndarray, Any]:
        """(x rows, one timestep per row, context rows) for this state's next step."""
        t = self.timesteps[self.index]
        x = self.scheduler.scale_model_input(self.x, t)
        xp = namespace(x)
        timestep = np.full((self.rows,), float(t), dtype=np.float32)  # σ-grids have fractional timesteps
        if not self.guided:
            return x, timestep, self.cond
        return xp.concat([x, x]), timestep, xp.concat([self.uncond, self.cond])

    def advance(self, out: Any) -> None:
        """Take this state's step from its rows of the U-Net output."""
        t = self.timesteps[self.index]
        if self.guided:
            n = self.x.shape[0]
            out = guide(out[:n, ...], out[n:, ...], self.guidance)
        step = self.scheduler.step(out, t, self.x, generator=self.rng, **self.step_kwargs)
        self.x = step.prev_sample
        if self.callback is not None:
            self.callback(self.index, float(t), self.x, step.pred_original_sample)
        self.index += 1


def batched_step(unet: ModelCall, states: Sequence[SamplerState]) -> int:
    """Advance every state (none done, all of one latent shape) by one step with one U-Net call; returns its rows."""
    if not states:
        return 0
    shapes = {s.latent_shape for s in states}
    if len(shapes) != 1:
        raise ValueError(f"states of different latent shapes cannot share a U-Net call: {sorted(shapes)}")
    inputs = [s.unet_inputs() for s in states]
    if len(states) == 1:
        x, t, context = inputs[0]
    else:
        xp = namespace(inputs[0][0])
        x = xp.concat([i[0] for i in inputs])
        t = np.concatenate([i[1] for i in inputs])
        context = namespace(inputs[0][2]).concat([i[2] for i in inputs])
    out = unet(x, t, context)
    offset = 0
    for state in states:
        state.advance(out[offset:offset + state.rows, ...])
        offset += state.rows
    return offset

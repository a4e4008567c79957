"""Component adapters: each exported component as a plain function of arrays, generated from its spec.

An adapter owns what the pipeline must not know: the tensor names, the dtypes of the engine's inputs
(the caller's float32 arrays are cast to what the spec says, e.g. float16 for an fp16 graph), the
engine's lifecycle (``ready`` for the shapes of each call) and the cast of the output back to float32.
Inputs may be host or device arrays (``Engine.asarray`` moves them); outputs are the engine's arrays.

    text_encoder(ids (B, L) int64)                           -> (B, L, D)
    unet(x_t (B, C, h, w), t scalar or (B,), context (B, L, D)) -> (B, C, h, w)
    vae_decoder(z (B, C, h, w))                              -> (B, 3, H, W)
    vae_encoder(image (B, 3, H, W))                          -> (B, 2C, h, w)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from difftrt.arrays import cast, namespace, to_host
from difftrt.backends.base import Engine
from difftrt.errors import ArtifactError


class Adapter:
    """Positional arrays, in the spec's input order -> the component's single output as float32.

    The spec's input order is the exported module's ``forward`` order (the exporter writes it so), which is
    what makes ``unet(x_t, t, context)`` map to sample, timestep, encoder_hidden_states."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.spec = engine, engine.spec
        if len(self.spec.outputs) != 1:
            raise ArtifactError(f"{self.spec.name}: the manifest gives {len(self.spec.outputs)} outputs, expected one")

    def __call__(self, *arrays: Any) -> Any:
        feeds = {t.name: self.engine.asarray(a, t.dtype) for t, a in zip(self.spec.inputs, arrays, strict=True)}
        self.engine.ready({name: tuple(a.shape) for name, a in feeds.items()})
        out = self.engine.infer(feeds)[self.spec.outputs[0].name]
        return cast(out, namespace(out).float32)


class UNetAdapter(Adapter):
    def __call__(self, x_t: Any, t: Any, context: Any) -> Any:
        """The model output at timestep ``t`` (one value for every row, or one per row)."""
        timestep = np.asarray(to_host(t), dtype=self.spec.inputs[1].dtype)  # host: a scalar or (B,) per call
        if timestep.size == 1:
            timestep = np.full((x_t.shape[0],), timestep.reshape(()), dtype=timestep.dtype)
        return super().__call__(x_t, timestep, context)


ADAPTERS: dict[str, type[Adapter]] = {"text_encoder": Adapter, "unet": UNetAdapter, "vae_decoder": Adapter,
                                      "vae_encoder": Adapter}


def adapt(engines: Mapping[str, Engine]) -> dict[str, Adapter]:
    """One adapter per engine, keyed by component name."""
    return {name: ADAPTERS[name](engine) for name, engine in engines.items()}

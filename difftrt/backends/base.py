"""The engine interface every backend implements, and the check that an engine is the component it claims."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from difftrt.errors import ArtifactError
from difftrt.models.specs import ComponentSpec


@dataclass(frozen=True)
class TensorInfo:
    """A named engine input or output; dynamic dimensions are strings (or None when unnamed)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]


class Engine(Protocol):
    """Runs one exported component: named NumPy arrays in, named NumPy arrays out."""

    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def check_engine_matches(engine: Engine, spec: ComponentSpec, source: str) -> None:
    """Raise ``ArtifactError`` unless ``engine`` has exactly the spec's input/output names, ranks and dtypes."""
    got = [(t.name, len(t.shape), t.dtype) for t in engine.inputs]
    want = [(t.name, len(t.shape), t.dtype) for t in spec.inputs]
    got_out = [t.name for t in engine.outputs]
    if sorted(got) != sorted(want) or got_out != list(spec.output_names):
        describe = lambda ts: ", ".join(f"{n}:{d}[rank {r}]" for n, r, d in ts)  # noqa: E731
        raise ArtifactError(
            f"{source} is not a {spec.name}: expected inputs ({describe(want)}) -> {list(spec.output_names)}, "
            f"found ({describe(got)}) -> {got_out}"
        )

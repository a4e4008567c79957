"""The engine every backend implements: one exported component with an explicit lifecycle.

    engine = SomeEngine(spec, ...)   # the component's spec, read from the manifest
    engine.load()                    # read/deserialise the file; its declared I/O is checked against the spec
    engine.activate()                # execution state (session, context, stream)
    engine.allocate(shapes)          # ready for these input shapes (buffers, profile shapes)
    out = engine.infer(feeds)        # many times, with arrays of exactly those shapes and the spec's dtypes

``ready(shapes)`` runs whatever steps are still missing and re-allocates when the shapes change; the
component adapters (``difftrt.adapters``) call it, so the pipeline never sees the lifecycle. Arrays come
from the engine's array module ``xp``: NumPy for host backends; a backend that owns device memory sets
``xp`` to its device array module (CuPy, or torch for the resident torch engine) and takes and returns
device arrays; ``asarray`` brings a host array (or one of the engine's own) to it, so the sampling loop
keeps its latents wherever the U-Net engine's arrays live (``difftrt.arrays``).

The TensorRT backend (``difftrt.backends.tensorrt``) maps onto the same five steps, as TensorRT's demo
``Engine`` does: ``load``: ``trt.Runtime(logger).deserialize_cuda_engine(plan_bytes)``, then the declared I/O from
``engine.num_io_tensors`` / ``get_tensor_name(i)`` / ``get_tensor_mode`` / ``get_tensor_dtype`` /
``get_tensor_shape``; ``activate``: ``create_execution_context()`` and a CUDA stream; ``allocate``:
``context.set_input_shape(name, shape)`` per input (ranges enforced: a plan holds only its profile), then
one device buffer per tensor sized from ``context.get_tensor_shape(name)`` and ``set_tensor_address``;
``infer``: copy feeds into the input buffers, ``execute_async_v3(stream)`` (or replay a captured CUDA
graph for static shapes) and return copies of the output buffers.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from difftrt.arrays import dtype_name, to_host
from difftrt.errors import ArtifactError, ShapeError
from difftrt.models.specs import ComponentSpec, describe_shape

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorInfo:
    """A named input or output as an engine file declares it; dynamic dimensions are strings (or None)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]


class Stage(IntEnum):
    NEW = 0
    LOADED = 1
    ACTIVE = 2
    ALLOCATED = 3


class Engine(ABC):
    """Base of every backend: the lifecycle and its checks live here, the backend work in the ``_`` hooks."""

    backend: ClassVar[str]  # "onnxruntime", "torch", ...
    enforces_ranges: ClassVar[bool] = False  # True where the engine holds only its profile's shapes
    xp: ModuleType = np

    def __init__(self, spec: ComponentSpec, source: str) -> None:
        self.spec, self.source = spec, source
        self.stage = Stage.NEW
        self.shapes: dict[str, tuple[int, ...]] = {}

    @property
    def name(self) -> str:
        return self.spec.name

    def load(self) -> None:
        self._expect(Stage.NEW, "load")
        self._load()
        check_engine_matches(self.declared_io(), self.spec, self.source)
        self.stage = Stage.LOADED

    def activate(self) -> None:
        self._expect(Stage.LOADED, "activate")
        self._activate()
        self.stage = Stage.ACTIVE

    def allocate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        if self.stage < Stage.ACTIVE:
            raise RuntimeError(f"{self.name}: allocate before activate")
        shapes = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
        outside = self.spec.out_of_range(self.spec.bind(shapes))
        if outside and self.enforces_ranges:
            raise ShapeError(f"{self.name}: {', '.join(outside)}: outside what {self.source} was built for; "
                             "rebuild the engine with a profile that holds it")
        if outside:
            log.warning("%s: %s: outside the range validated at export; results there are unchecked",
                        self.name, ", ".join(outside))
        self._allocate(shapes)
        self.shapes, self.stage = shapes, Stage.ALLOCATED

    def infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run once on ``feeds`` (name -> array of the allocated shape and the spec's dtype). The outputs belong to
        the caller: a backend that reuses buffers returns copies (multistep schedulers keep outputs across steps)."""
        if self.stage < Stage.ALLOCATED:
            raise RuntimeError(f"{self.name}: infer before allocate")
        for t in self.spec.inputs:
            array = feeds[t.name]
            if tuple(array.shape) != self.shapes[t.name] or dtype_name(array.dtype) != t.dtype:
                raise ShapeError(f"{self.name}: input {t.name} is {array.dtype} {tuple(array.shape)}, the engine is "
                                 f"allocated for {t.dtype} {self.shapes[t.name]}")
        return self._infer(feeds)

    def asarray(self, array: Any, dtype: str) -> Any:
        """``array`` (host NumPy, or an array of this engine's own ``xp``) as one ``infer`` takes, in ``dtype``
        (a NumPy dtype name); a host engine copies device arrays back, a device engine copies host ones over."""
        if self.xp is np:
            return np.asarray(to_host(array), dtype=dtype)
        return self.xp.asarray(array, dtype=dtype)

    def ready(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Load, activate and allocate as needed, so that ``infer`` takes arrays of ``shapes``."""
        if self.stage == Stage.NEW:
            self.load()
        if self.stage == Stage.LOADED:
            self.activate()
        if self.stage < Stage.ALLOCATED or any(tuple(s) != self.shapes.get(n) for n, s in shapes.items()):
            self.allocate(shapes)

    def close(self) -> None:
        """Release what ``load``/``activate``/``allocate`` took; the engine can be loaded again."""
        self._close()
        self.stage, self.shapes = Stage.NEW, {}

    def _expect(self, stage: Stage, step: str) -> None:
        if self.stage != stage:
            raise RuntimeError(f"{self.name}: {step} called at stage {self.stage.name}")

    @abstractmethod
    def _load(self) -> None: ...

    @abstractmethod
    def declared_io(self) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
        """(inputs, outputs) as the loaded file declares them."""

    def _activate(self) -> None:
        pass

    def _allocate(self, shapes: dict[str, tuple[int, ...]]) -> None:
        pass

    @abstractmethod
    def _infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]: ...

    def _close(self) -> None:
        pass


def check_engine_matches(io: tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]], spec: ComponentSpec,
                         source: str) -> None:
    """Raise ``ArtifactError`` unless the declared (inputs, outputs) have the spec's names, dtypes, ranks and
    fixed sizes; the message names the tensor, what the manifest expects and what the file has."""
    for kind, declared, wanted in (("input", io[0], spec.inputs), ("output", io[1], spec.outputs)):
        got = {t.name: t for t in declared}
        if sorted(got) != sorted(t.name for t in wanted):
            raise ArtifactError(f"{source} is not the {spec.name} its manifest describes: {kind}s "
                                f"{sorted(got)} in the file, {sorted(t.name for t in wanted)} in the manifest")
        for want in wanted:
            have = got[want.name]
            # a fixed size must match; a dynamic one must not be frozen to a number in the file
            sizes_ok = all(h == w if isinstance(w, int) else not isinstance(h, int) for w, h in zip(want.shape, have.shape))
            if have.dtype != want.dtype or len(have.shape) != len(want.shape) or not sizes_ok:
                raise ArtifactError(
                    f"{source} is not the {spec.name} its manifest describes: {kind} {want.name} is {have.dtype} "
                    f"{describe_shape(have.shape)} in the file, {want.dtype} {describe_shape(want.shape)} in the manifest")

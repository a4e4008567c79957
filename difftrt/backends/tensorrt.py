"""TensorRT backend: one plan per component, run on the GPU with CuPy device buffers and one CUDA stream.

    load      trt.Runtime(logger).deserialize_cuda_engine(plan bytes); the declared I/O and the plan's own
              profiles are checked against the engine manifest's spec and profile
    activate  one execution context per optimisation profile (set_optimization_profile_async(i, stream)),
              one non-blocking CuPy stream
    allocate  the profile holding the input shapes (``choose_profile``), set_input_shape per input, output shapes
              from context.get_tensor_shape, one device buffer per tensor (``buffer_plan``), set_tensor_address
    infer     feeds copied into the input buffers on the stream, execute_async_v3 (or a captured CUDA graph's
              replay), synchronise, a copy of each output buffer returned (the buffers serve the next call)

Arrays are CuPy device arrays in and out (``xp`` is cupy once loaded); NumPy inputs are accepted and copied to
the device. Shapes e.g. unet: sample (B, 4, h, w) float16/32, timestep (B,) float32, encoder_hidden_states
(B, L, D) -> out_sample (B, 4, h, w). Torch is never imported; TensorRT and CuPy only when the engine loads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from difftrt.backends.base import Engine, Stage, TensorInfo, check_engine_matches
from difftrt.backends.cuda import import_cupy
from difftrt.errors import ArtifactError, DifftrtError, EngineError, ShapeError, first_line
from difftrt.models.specs import ComponentSpec
from difftrt.trt.binding import (Profile, buffer_plan, check_profiles_match, choose_profile, declared_io,
                                 engine_profiles)
from difftrt.trt.shim import TensorRT, import_tensorrt

log = logging.getLogger(__name__)


def recording_logger(t: Any) -> Any:
    """A ``t.ILogger`` that prints nothing (the CLI's errors are one line) and keeps TensorRT's error messages in
    ``errors`` for the one-line ``EngineError``; warnings go to this module's log at debug level."""

    class RecordingLogger(t.ILogger):
        def __init__(self) -> None:
            t.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(t.ILogger.Severity.ERROR):
                self.errors.append(" ".join(str(msg).split()))
            elif int(severity) == int(t.ILogger.Severity.WARNING):
                log.debug("TensorRT: %s", msg)

        def last(self) -> str:
            return f" ({self.errors[-1][:200]})" if self.errors else ""

    return RecordingLogger()


class TrtEngine(Engine):
    """One TensorRT plan of ``spec``'s component.

    ``profiles``: the plan's optimisation profiles as the engine manifest records them (``manifest_profiles``);
    ``flavour``: "tensorrt" or "tensorrt_rtx" (None: the first that imports), the one the plan was built with;
    ``cuda_graph``: replay a CUDA graph when the chosen profile is static (min = max, ``difftrt build --static``):
    captured after one warm-up ``execute_async_v3``; TensorRT-RTX captures natively (its runtime config's
    ``WHOLE_GRAPH_CAPTURE``) for every shape instead. ``rebuild``: the command that rebuilds the plan, for messages.
    """

    backend = "tensorrt"
    enforces_ranges = True

    def __init__(self, path: Path, spec: ComponentSpec, profiles: Sequence[Profile], flavour: str | None = None,
                 cuda_graph: bool = False, rebuild: str = "difftrt build --export EXPORT --out ENGINES") -> None:
        super().__init__(spec, str(path))
        if not profiles:
            raise ArtifactError(f"{path}: no optimisation profile recorded for it; build it again with `difftrt build`")
        self.path, self.profiles, self.flavour = Path(path), tuple(profiles), flavour
        self.cuda_graph, self.rebuild = cuda_graph, rebuild
        self.trt: TensorRT | None = None
        self.logger: Any = None
        self._reset()

    def _reset(self) -> None:
        self.runtime: Any = None
        self.engine: Any = None
        self.stream: Any = None
        self.contexts: list[Any] = []
        self.context: Any = None  # the chosen profile's
        self.buffers: dict[str, Any] = {}
        self.graph: Any = None  # the captured CUDA graph of the allocated shapes
        self._capture_pending = False
        self._native_graph = False

    # -- load ---------------------------------------------------------------------------------------------------
    def _load(self) -> None:
        self.trt = trt = import_tensorrt(self.flavour)
        t = trt.module
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"cannot read plan {self.path}: {exc.strerror or exc}") from None
        self.logger = recording_logger(t)
        self.runtime = t.Runtime(self.logger)
        try:
            engine = self.runtime.deserialize_cuda_engine(data)
        except (RuntimeError, TypeError, ValueError) as exc:
            engine, self.logger.errors = None, [*self.logger.errors, first_line(exc)]
        if engine is None:
            why = self.logger.errors[0][:240] if self.logger.errors else "no reason given"
            raise EngineError(f"{self.path}: {trt.flavour} {trt.version} cannot deserialise it ({why}); if it was built "
                              f"by another TensorRT version or for another GPU, rebuild: {self.rebuild}")
        self.engine = engine
        check_engine_matches(self.declared_io(), self.spec, self.source)
        check_profiles_match(self.profiles, engine_profiles(engine, self.spec), self.source, self.rebuild)
        self.xp = import_cupy()  # device arrays from here on

    def declared_io(self) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
        assert self.trt is not None and self.engine is not None
        return declared_io(self.trt.module, self.engine)

    # -- activate -----------------------------------------------------------------------------------------------
    def _activate(self) -> None:
        cp = self.xp
        try:
            self.stream = cp.cuda.Stream(non_blocking=True)
            self.contexts = [self._new_context() for _ in self.profiles]
            for i, context in enumerate(self.contexts):
                if context is None:
                    raise EngineError(f"{self.name}: TensorRT could not create an execution context for {self.path}"
                                      f"{self.logger.last() or ' (out of GPU memory?)'}")
                if not context.set_optimization_profile_async(i, self.stream.ptr):
                    raise EngineError(f"{self.name}: TensorRT refused optimisation profile {i} of {self.path}"
                                      f"{self.logger.last()}")
            self.stream.synchronize()
        except DifftrtError:
            raise
        except Exception as exc:  # CuPy's CUDARuntimeError, TensorRT's RuntimeError
            raise EngineError(f"{self.name}: cannot activate {self.path} on the GPU: {first_line(exc)}") from None

    def _new_context(self) -> Any:
        t = self.trt.module if self.trt else None
        if self.cuda_graph and self.trt is not None and self.trt.flavour == "tensorrt_rtx" \
                and hasattr(t, "CudaGraphStrategy"):
            config = self.engine.create_runtime_config()
            config.cuda_graph_strategy = t.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            self._native_graph = True
            return self.engine.create_execution_context(runtime_config=config)
        return self.engine.create_execution_context()

    # -- allocate -----------------------------------------------------------------------------------------------
    def allocate(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """As ``Engine.allocate``; a size outside the plan's profile names the ``difftrt build`` option to rebuild with."""
        if self.stage >= Stage.ACTIVE:
            given = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
            self.spec.bind(given)  # names, ranks and fixed sizes first, with the spec's messages
            choose_profile(self.profiles, given)
        super().allocate(shapes)

    def _allocate(self, shapes: dict[str, tuple[int, ...]]) -> None:
        index = choose_profile(self.profiles, shapes)
        context = self.contexts[index]
        self.logger.errors.clear()  # what TensorRT reports from here on is about these shapes
        # the previous shapes' buffers and graph go now: until this succeeds the engine is allocated for nothing
        self.graph, self.buffers, self.context, self.stage = None, {}, None, Stage.ACTIVE
        try:
            refused = [name for name in self.spec.input_names if not context.set_input_shape(name, shapes[name])]
            outputs = {name: tuple(context.get_tensor_shape(name)) for name in self.spec.output_names}
        except Exception as exc:  # TensorRT's bindings raise RuntimeError/TypeError on a bad shape
            raise EngineError(f"{self.name}: TensorRT cannot take the shapes {shapes}: {first_line(exc)}") from None
        if refused:
            raise ShapeError(f"{self.name}: TensorRT refused input {refused[0]} of shape {shapes[refused[0]]} for profile "
                             f"{index} of {self.path}{self.logger.last()}; rebuild the plans to hold it: {self.rebuild}")
        plan = buffer_plan(self.spec, shapes, outputs)
        try:
            buffers = {b.name: self.xp.empty(b.shape, dtype=b.dtype) for b in plan}
            bound = all(context.set_tensor_address(name, buffer.data.ptr) for name, buffer in buffers.items())
        except Exception as exc:  # cupy.cuda.memory.OutOfMemoryError, CUDARuntimeError
            raise EngineError(f"{self.name}: cannot allocate {sum(b.nbytes for b in plan) / 2**20:.1f} MiB of device "
                              f"buffers for {shapes}: {first_line(exc)}") from None
        if not bound:
            raise EngineError(f"{self.name}: TensorRT refused a device buffer address for {self.path}{self.logger.last()}")
        self.context, self.buffers = context, buffers
        static = self.profiles[index].static
        self._capture_pending = self.cuda_graph and not self._native_graph and static
        if self.cuda_graph and not self._native_graph and not static:
            log.info("%s: no CUDA graph for a dynamic profile (build with `difftrt build --static` for one)", self.name)

    # -- infer --------------------------------------------------------------------------------------------------
    def _infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        cp, stream = self.xp, self.stream
        try:
            sources = {name: np.ascontiguousarray(a) if isinstance(a, np.ndarray) else cp.ascontiguousarray(a)
                       for name, a in ((n, feeds[n]) for n in self.spec.input_names)}
            # feeds made on the caller's stream must be complete before this (non-blocking) stream reads them
            stream.wait_event(cp.cuda.get_current_stream().record())
            for name, src in sources.items():
                dst = self.buffers[name]
                if isinstance(src, np.ndarray):
                    dst.set(src, stream=stream)  # host -> device
                else:
                    dst.data.copy_from_device_async(src.data, dst.nbytes, stream)
            self._execute()
            outputs = {}
            for name in self.spec.output_names:
                buffer = self.buffers[name]
                out = cp.empty_like(buffer)
                out.data.copy_from_device_async(buffer.data, buffer.nbytes, stream)
                outputs[name] = out
            stream.synchronize()
        except DifftrtError:
            raise
        except Exception as exc:  # CuPy's CUDARuntimeError (e.g. an illegal address), out of memory
            raise EngineError(f"{self.name}: TensorRT failed on {dict(self.shapes)}: {first_line(exc)}") from None
        return outputs

    def _execute(self) -> None:
        """One run on the stream: the captured graph's replay, else ``execute_async_v3`` (then, when a capture is
        pending, that run was the warm-up and the graph is captured for the next calls)."""
        if self.graph is not None:
            self.graph.launch(stream=self.stream)
            return
        if not self.context.execute_async_v3(self.stream.ptr):
            raise EngineError(f"{self.name}: TensorRT execute_async_v3 failed on {dict(self.shapes)} for {self.path}"
                              f"{self.logger.last()}")
        if self._capture_pending:
            self._capture_pending = False
            self.graph = self._capture()

    def _capture(self) -> Any:
        """A CUDA graph of one ``execute_async_v3`` on the stream, or None (logged) when capture fails."""
        stream = self.stream
        try:
            if hasattr(self.context, "is_stream_capturable") and not self.context.is_stream_capturable(stream.ptr):
                raise RuntimeError("the execution context says this stream is not capturable")
            stream.begin_capture()
            try:
                ok = self.context.execute_async_v3(stream.ptr)
            finally:
                graph = stream.end_capture()
            if not ok:
                raise RuntimeError("execute_async_v3 returned False during capture")
            return graph
        except Exception as exc:  # CuPy's CUDARuntimeError (capture invalidated), TensorRT's refusal
            log.warning("%s: CUDA graph capture failed (%s); running without it", self.name, first_line(exc))
            return None

    # -- close --------------------------------------------------------------------------------------------------
    def _close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.synchronize()
            except Exception:  # closing after a device error: release anyway
                pass
        self.graph = None
        self.context, self.contexts = None, []
        self.buffers = {}
        self.engine = None
        self.runtime = None
        self._reset()

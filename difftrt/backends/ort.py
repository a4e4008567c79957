"""ONNX Runtime backend (CPU, or CUDA where onnxruntime-gpu is installed).

Plain ``run`` takes and returns host NumPy arrays. With ``io_binding`` the engine owns one buffer per
input and output, allocated once per shape set and bound to the session (``session.io_binding()``), and
``run_with_iobinding`` reads and writes them in place: on CUDA these are CuPy arrays on the GPU (the
engine is then device-resident, ``xp`` = CuPy, and the sampling loop stays on the device), on CPU NumPy
arrays. ``cuda_graph`` adds the CUDA execution provider's graph capture, which needs every buffer address
fixed from the first run on: it applies to components whose output shapes the spec gives (U-Net, text
encoder), one input shape per session.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from difftrt.backends.base import Engine, TensorInfo
from difftrt.errors import ArtifactError, DependencyError, EngineError, UsageError, first_line
from difftrt.models.specs import ComponentSpec
from difftrt.offline import apply_offline_defaults

log = logging.getLogger(__name__)

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
               "tensor(int32)": "int32", "tensor(double)": "float64", "tensor(bfloat16)": "bfloat16"}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
FLAVOURS = ("onnxruntime", "onnxruntime-gpu")  # one per environment, as ONNX Runtime requires
INSTALL_HINT = "pip install 'difftrt[cpu]' (or 'difftrt[cuda]' for onnxruntime-gpu)"


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def check_one_flavour(installed: Callable[[str], bool] = _installed) -> None:
    """Both wheels install the same ``onnxruntime`` module over each other; refuse that environment."""
    if all(installed(d) for d in FLAVOURS):
        raise DependencyError("both onnxruntime and onnxruntime-gpu are installed, and ONNX Runtime supports one "
                              "per environment: pip uninstall -y onnxruntime onnxruntime-gpu, then install one")


def import_onnxruntime() -> Any:
    """Import onnxruntime with telemetry off (unless the user set ``ORT_DISABLE_TELEMETRY`` themselves)."""
    if "onnxruntime" not in sys.modules:
        check_one_flavour()  # once, before the first import
        if "ORT_DISABLE_TELEMETRY" not in os.environ:
            apply_offline_defaults()
    elif "ORT_DISABLE_TELEMETRY" not in os.environ:
        log.warning("onnxruntime was imported before difftrt could set ORT_DISABLE_TELEMETRY=1")
    try:
        import onnxruntime
    except ImportError as exc:
        raise DependencyError(f"onnxruntime is not importable ({exc}); {INSTALL_HINT}") from None
    return onnxruntime


def _info(arg: Any) -> TensorInfo:
    return TensorInfo(arg.name, _ORT_DTYPES.get(arg.type, arg.type), tuple(arg.shape))


class OrtEngine(Engine):
    """One ``InferenceSession`` with all graph optimisations on; ``threads`` 0 lets ORT choose.

    ``load`` builds the session (parse + optimise); ``allocate`` checks shapes (the graph is fully dynamic,
    so ranges are not enforced: the manifest's ranges are the validated ones) and, with ``io_binding``,
    binds the buffers; ``infer`` runs it.
    """

    backend = "onnxruntime"

    def __init__(self, path: Path, spec: ComponentSpec, device: str = "cpu", threads: int = 0,
                 io_binding: bool = False, cuda_graph: bool = False) -> None:
        super().__init__(spec, str(path))
        if device not in PROVIDERS:
            raise UsageError(f"unknown ONNX Runtime device {device!r}; choose one of {sorted(PROVIDERS)}")
        if cuda_graph and (device != "cuda" or not io_binding):
            raise UsageError("ONNX Runtime CUDA graphs need --device cuda with IO binding")
        self.path, self.device, self.threads = Path(path), device, threads
        self.io_binding, self.cuda_graph = io_binding, cuda_graph
        self.session: Any = None
        self._binding: Any = None
        self._buffers: dict[str, Any] = {}
        self._captured: dict[str, tuple[int, ...]] | None = None  # the shapes a CUDA graph was captured for
        self._graph_on = False  # cuda_graph and this component's output shapes are known (set at load)
        if io_binding and device == "cuda":
            from difftrt.backends.cuda import import_cupy

            self.xp = import_cupy("ONNX Runtime IO binding on CUDA")

    def _load(self) -> None:
        ort = import_onnxruntime()
        provider = PROVIDERS[self.device]
        if provider not in ort.get_available_providers():
            raise DependencyError(f"{provider} is not available in this onnxruntime; pip install 'difftrt[cuda]' "
                                  "(onnxruntime-gpu) in an environment without onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        self._graph_on = self.cuda_graph and all(s is not None for s in self._known_outputs({}).values())
        providers: list[Any] = [(provider, {"enable_cuda_graph": "1"}) if self._graph_on else provider]
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/NoSuchFile types
            raise ArtifactError(f"cannot load ONNX file {self.path}: {first_line(exc)}") from None
        if self.session.get_providers()[0] != provider:  # ORT falls back to CPU silently when CUDA cannot load
            raise DependencyError(f"{provider} is installed but could not load (ONNX Runtime fell back to "
                                  f"{self.session.get_providers()[0]}); check that the CUDA and cuDNN versions "
                                  f"onnxruntime-gpu {ort.__version__} was built for are installed")

    def declared_io(self) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
        return (tuple(_info(a) for a in self.session.get_inputs()),
                tuple(_info(a) for a in self.session.get_outputs()))

    def _known_outputs(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...] | None]:
        """Output shapes from the spec; with no shapes, whether they can be known at all (dims bound by inputs)."""
        if shapes:
            return self.spec.output_shapes(shapes)
        bound = {d for t in self.spec.inputs for d in t.shape if isinstance(d, str)}
        return {t.name: () if all(d in bound for d in t.shape if isinstance(d, str)) else None
                for t in self.spec.outputs}

    def _allocate(self, shapes: dict[str, tuple[int, ...]]) -> None:
        if not self.io_binding:
            return
        if self._captured is not None and self._captured != shapes:  # a captured graph holds one shape set
            self._close()
            self._load()
        xp, device = self.xp, self.device
        buffers = {t.name: xp.zeros(shapes[t.name], dtype=t.dtype) for t in self.spec.inputs}
        binding = self.session.io_binding()
        for t in self.spec.inputs:
            binding.bind_input(t.name, device, 0, np.dtype(t.dtype), list(shapes[t.name]), _address(buffers[t.name]))
        known = self._known_outputs(shapes)
        if any(shape is None for shape in known.values()):  # let ORT allocate once to learn them
            for t in self.spec.outputs:
                binding.bind_output(t.name, device)
            self._run(binding, shapes)
            known = {t.name: tuple(v.shape()) for t, v in zip(self.spec.outputs, binding.get_outputs())}
            binding.clear_binding_outputs()
        for t in self.spec.outputs:
            buffers[t.name] = xp.empty(known[t.name], dtype=t.dtype)
            binding.bind_output(t.name, device, 0, np.dtype(t.dtype), list(known[t.name]), _address(buffers[t.name]))
        self._binding, self._buffers = binding, buffers
        if self._graph_on:
            self._captured = shapes

    def _run(self, binding: Any, shapes: Any) -> None:
        try:  # ORT's Run(IOBinding) does not wait for the inputs' writers nor make the outputs' readers wait
            binding.synchronize_inputs()
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
        except Exception as exc:
            raise EngineError(f"{self.name}: ONNX Runtime failed on {dict(shapes)}: {first_line(exc)}") from None

    def _infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        if self._binding is not None:
            for name in self.spec.input_names:  # into the bound buffers: their addresses must not change
                self._buffers[name][...] = feeds[name]
            self._run(self._binding, self.shapes)
            return {name: self._buffers[name].copy() for name in self.spec.output_names}
        names = list(self.spec.output_names)
        try:
            return dict(zip(names, self.session.run(names, {n: feeds[n] for n in self.spec.input_names})))
        except Exception as exc:  # ORT's own Fail/RuntimeException types (e.g. out of memory at a large size)
            raise EngineError(f"{self.name}: ONNX Runtime failed on {dict(self.shapes)}: {first_line(exc)}") from None

    def _close(self) -> None:
        self.session, self._binding, self._buffers, self._captured = None, None, {}, None


def _address(array: Any) -> int:
    """The data pointer of a NumPy or CuPy array, for ``bind_input`` / ``bind_output``."""
    return int(array.ctypes.data) if isinstance(array, np.ndarray) else int(array.data.ptr)

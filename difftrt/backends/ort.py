"""ONNX Runtime backend (CPU, or CUDA where onnxruntime-gpu is installed)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from difftrt.backends.base import TensorInfo
from difftrt.errors import ArtifactError, DependencyError, UsageError
from difftrt.offline import apply_offline_defaults

log = logging.getLogger(__name__)

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
               "tensor(int32)": "int32", "tensor(double)": "float64"}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def import_onnxruntime() -> Any:
    """Import onnxruntime with telemetry off (unless the user set ``ORT_DISABLE_TELEMETRY`` themselves)."""
    if "onnxruntime" not in sys.modules and "ORT_DISABLE_TELEMETRY" not in os.environ:
        apply_offline_defaults()
    elif "onnxruntime" in sys.modules and "ORT_DISABLE_TELEMETRY" not in os.environ:
        log.warning("onnxruntime was imported before difftrt could set ORT_DISABLE_TELEMETRY=1")
    try:
        import onnxruntime
    except ImportError as exc:
        raise DependencyError(f"onnxruntime is not importable ({exc}); pip install onnxruntime") from None
    return onnxruntime


def _info(arg: Any) -> TensorInfo:
    return TensorInfo(arg.name, _ORT_DTYPES.get(arg.type, arg.type), tuple(arg.shape))


class OrtEngine:
    """One ``InferenceSession`` with all graph optimisations on; ``threads`` 0 lets ORT choose."""

    def __init__(self, path: Path, name: str, device: str = "cpu", threads: int = 0) -> None:
        ort = import_onnxruntime()
        if device not in PROVIDERS:
            raise UsageError(f"unknown ONNX Runtime device {device!r}; choose one of {sorted(PROVIDERS)}")
        provider = PROVIDERS[device]
        if provider not in ort.get_available_providers():
            raise DependencyError(f"{provider} is not available in this onnxruntime; pip install onnxruntime-gpu")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=[provider])
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/NoSuchFile types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"cannot load ONNX file {path}: {first[:300]}") from None
        self.name = name
        self.device = device
        self.inputs = tuple(_info(a) for a in self.session.get_inputs())
        self.outputs = tuple(_info(a) for a in self.session.get_outputs())
        self._output_names = [t.name for t in self.outputs]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self._output_names, dict(feeds))
        return dict(zip(self._output_names, values))

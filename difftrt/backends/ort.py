"""ONNX Runtime backend (CPU, or CUDA where onnxruntime-gpu is installed)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from difftrt.backends.base import Engine, TensorInfo
from difftrt.errors import ArtifactError, DependencyError, EngineError, UsageError
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

    ``load`` builds the session (parse + optimise); ``allocate`` only checks shapes (the graph is fully
    dynamic, so ranges are not enforced: the manifest's ranges are the validated ones); ``infer`` runs it.
    """

    backend = "onnxruntime"

    def __init__(self, path: Path, spec: ComponentSpec, device: str = "cpu", threads: int = 0) -> None:
        super().__init__(spec, str(path))
        if device not in PROVIDERS:
            raise UsageError(f"unknown ONNX Runtime device {device!r}; choose one of {sorted(PROVIDERS)}")
        self.path, self.device, self.threads = Path(path), device, threads
        self.session: Any = None

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
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=[provider])
        except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/NoSuchFile types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"cannot load ONNX file {self.path}: {first[:300]}") from None

    def declared_io(self) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
        return (tuple(_info(a) for a in self.session.get_inputs()),
                tuple(_info(a) for a in self.session.get_outputs()))

    def _infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        names = list(self.spec.output_names)
        try:
            return dict(zip(names, self.session.run(names, {n: feeds[n] for n in self.spec.input_names})))
        except Exception as exc:  # ORT's own Fail/RuntimeException types (e.g. out of memory at a large size)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"{self.name}: ONNX Runtime failed on {dict(self.shapes)}: {first[:300]}") from None

    def _close(self) -> None:
        self.session = None

"""CuPy, the device array module of the TensorRT backend and of ONNX Runtime's IO binding on CUDA: imported
on first use, never at import time.

CuPy ships one wheel per CUDA major version (``cupy-cuda12x``, ``cupy-cuda13x``); the one to install is the
one the machine's CUDA driver supports, which ``install_hint`` reads from the driver (``libcuda``) itself.
"""

from __future__ import annotations

import ctypes
from types import ModuleType

from difftrt.errors import DependencyError

WHEELS = {12: "cupy-cuda12x", 13: "cupy-cuda13x"}


def driver_cuda_major() -> int | None:
    """The CUDA major version the installed driver supports (12 for a driver reporting 12040), or None."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return version.value // 1000


def install_hint(major: int | None = None) -> str:
    """``pip install cupy-cudaNNx`` for the driver's CUDA major version (``major``: as ``driver_cuda_major``)."""
    if major in WHEELS:
        return f"pip install {WHEELS[major]} (this CUDA driver supports CUDA {major})"
    newest = max(WHEELS)
    if major is not None and major > newest:
        return f"pip install {WHEELS[newest]} (this CUDA driver supports CUDA {major})"
    return f"pip install {WHEELS[12]} or {WHEELS[13]}, matching the CUDA driver (nvidia-smi shows its CUDA version)"


def cupy_available() -> bool:
    """True when ``import cupy`` would find the package (it is not imported here)."""
    import importlib.util

    return importlib.util.find_spec("cupy") is not None


def import_cupy(purpose: str = "running TensorRT plans") -> ModuleType:
    """The ``cupy`` module; a one-line ``DependencyError`` naming ``purpose`` and the wheel to install when it
    does not import."""
    try:
        import cupy
    except ImportError as exc:
        raise DependencyError(f"{purpose} needs CuPy for device memory and streams ({exc}); "
                              f"{install_hint(driver_cuda_major())}") from None
    return cupy

"""One import for both TensorRT flavours: full TensorRT (``tensorrt``, GPU machines) or TensorRT-RTX
(``tensorrt_rtx``, which also builds plans on a machine without a GPU, for a chosen compute capability)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from difftrt.errors import DependencyError

FLAVOURS = ("tensorrt", "tensorrt_rtx")  # tried in this order
INSTALL_HINT = ("pip install 'difftrt[tensorrt-rtx]' (builds on any machine) or 'difftrt[tensorrt]' "
                "(full TensorRT, on a CUDA GPU machine)")


@dataclass(frozen=True)
class TensorRT:
    module: Any
    flavour: str  # "tensorrt" or "tensorrt_rtx"
    version: str

    @property
    def builds_for_any_arch(self) -> bool:
        """TensorRT-RTX targets a chosen compute capability; full TensorRT builds for the GPU it runs on."""
        return self.flavour == "tensorrt_rtx"

    def arch_choices(self) -> list[str]:
        if not self.builds_for_any_arch:
            return []
        names = [n for n in dir(self.module.ComputeCapability) if n.startswith("SM")]
        return sorted((n.lower() for n in names), key=lambda a: int(a[2:]))


def import_tensorrt(flavour: str | None = None) -> TensorRT:
    """``flavour`` ("tensorrt" or "tensorrt_rtx"), or the first of ``FLAVOURS`` that imports; else a one-line
    ``DependencyError`` naming what to install."""
    if flavour is not None and flavour not in FLAVOURS:
        raise DependencyError(f"unknown TensorRT flavour {flavour!r}; expected one of {list(FLAVOURS)}")
    for name in (flavour,) if flavour else FLAVOURS:
        try:
            module = importlib.import_module(name)
        except (ImportError, OSError):  # OSError: the wheel is there but its native libraries are not
            continue
        return TensorRT(module, name, str(getattr(module, "__version__", "unknown")))
    raise DependencyError(f"{flavour or 'TensorRT'} is not installed: {INSTALL_HINT}")

"""The default model used when no ``--engine`` is given: the bundled ``shapes64`` checkpoint.

Its fp16 safetensors weights ship inside the package (``difftrt/assets/shapes64``, diffusers layout). On first
use they are exported to ONNX and validated into the cache folder (``$DIFFTRT_CACHE``, else
``$XDG_CACHE_HOME/difftrt``, else ``~/.cache/difftrt``), which needs the ``[export]`` extra once; later runs only
read the cached ONNX files. The cache folder's name carries a hash of the bundled files and the export format
version, so new weights or a new difftrt never meet stale engines.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from difftrt.artifact import FORMAT_VERSION, MANIFEST
from difftrt.errors import DependencyError
from difftrt.fileio import sha256_file

NAME = "shapes64"
BUNDLED = Path(__file__).resolve().parent / "assets" / NAME
SOURCE = f"default:{NAME}"  # the manifest's source_checkpoint for exports of this model


def cache_dir() -> Path:
    if os.environ.get("DIFFTRT_CACHE"):
        return Path(os.environ["DIFFTRT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "difftrt"


def bundle_id() -> str:
    """First 12 hex digits of a hash over the bundled files' names and sha256s."""
    digest = hashlib.sha256()
    for path in sorted(p for p in BUNDLED.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(BUNDLED).as_posix()}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()[:12]


def load_checkpoint() -> Any:
    """The bundled checkpoint as torch modules (fp16 weights upcast to fp32). Needs torch."""
    from difftrt.models import checkpoint

    return checkpoint.load(BUNDLED)


def ensure_exported(progress: Callable[[str], None] = lambda _: None, precision: str = "fp32") -> Path:
    """Path of the default model's export folder (fp32, or ``precision`` "fp16": U-Net and text encoder in fp16,
    a folder of its own), exporting it first if needed."""
    suffix = "" if precision == "fp32" else f"-{precision}"
    export_dir = cache_dir() / f"{NAME}-{bundle_id()}-v{FORMAT_VERSION}{suffix}"
    if (export_dir / MANIFEST).is_file():
        return export_dir
    try:
        from difftrt.exporter.onnx import export_checkpoint
    except ImportError as exc:
        raise DependencyError(
            f"the default model is not exported yet and exporting needs torch and onnx ({exc.name} is missing): "
            "pip install 'difftrt[export]', or pass --engine"
        ) from None
    from difftrt.models.specs import Precision

    low = Precision(precision)  # the VAE stays fp32, as `difftrt export --precision fp16` does
    progress(f"exporting the bundled model {NAME} ({precision}) to {export_dir} (first use only)")
    export_checkpoint(load_checkpoint(), export_dir, overwrite=True, source=SOURCE, progress=progress,
                      precision={"text_encoder": low, "unet": low})
    return export_dir

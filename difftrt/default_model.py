"""The default model used when no ``--engine`` is given.

Until a trained model ships with the package, the default is a small *untrained* model created from a
fixed seed (its images are structured noise, not pictures). It is created, exported and validated on first
use into the cache folder (``$DIFFTRT_CACHE``, else ``$XDG_CACHE_HOME/difftrt``, else ``~/.cache/difftrt``),
which needs the ``[export]`` extra once; later runs only read the cached ONNX files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from difftrt.artifact import MANIFEST
from difftrt.config import ModelConfig
from difftrt.errors import DependencyError

NAME = "tiny-untrained-v1"
SEED = 0
CONFIG = ModelConfig()
SOURCE = f"default:{NAME}"  # the manifest's source_checkpoint for exports of this model


def cache_dir() -> Path:
    if os.environ.get("DIFFTRT_CACHE"):
        return Path(os.environ["DIFFTRT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "difftrt"


def ensure_exported(progress: Callable[[str], None] = lambda _: None) -> Path:
    """Path of the default model's export folder, creating it first if needed."""
    root = cache_dir() / NAME
    export_dir = root / "export"
    if (export_dir / MANIFEST).is_file():
        return export_dir
    try:
        from difftrt.exporter.onnx import export_checkpoint
        from difftrt.models import checkpoint
    except ImportError as exc:
        raise DependencyError(
            f"the default model is not exported yet and exporting needs torch and onnx ({exc.name} is missing): "
            "pip install 'difftrt[export]', or pass --engine"
        ) from None
    progress(f"exporting the default model {NAME} (untrained, seed {SEED}) to {export_dir} (first use only)")
    export_checkpoint(checkpoint.create(CONFIG, seed=SEED), export_dir, overwrite=True, source=SOURCE, progress=progress)
    return export_dir

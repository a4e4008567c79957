"""What ``--ckpt`` names: a difftrt checkpoint (its model_index names difftrt's pipeline) or a diffusers Stable
Diffusion folder; both load into something ``export_checkpoint`` and the torch reference take."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from difftrt.models import checkpoint
from difftrt.models.diffusers_folder import is_difftrt_checkpoint


def is_legacy_difftrt(path: Path) -> bool:
    """A difftrt checkpoint folder without model_index.json: its U-Net config is difftrt's ``UNetConfig``."""
    if (path / "model_index.json").exists() or not (path / "unet" / "config.json").is_file():
        return False
    try:
        return json.loads((path / "unet" / "config.json").read_text(encoding="utf-8")).get("_class_name") == "UNetConfig"
    except (OSError, ValueError, AttributeError):
        return False


def load_source(path: Path, available_memory: int | None = -1,
                progress: Callable[[str], None] = lambda _: None) -> Any:
    """The checkpoint at ``path``: ``Checkpoint`` for difftrt's own, ``ImportedPipeline`` for a diffusers folder."""
    path = Path(path)
    if is_difftrt_checkpoint(path) or is_legacy_difftrt(path):
        return checkpoint.load(path)
    from difftrt.exporter.diffusers_import import load_diffusers_folder

    return load_diffusers_folder(path, available_memory, progress)

"""What ``--ckpt`` names: a difftrt checkpoint (its model_index names difftrt's pipeline) or a diffusers Stable
Diffusion folder; both load into something ``export_checkpoint`` and the torch reference take."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from difftrt.models import checkpoint
from difftrt.models.diffusers_folder import is_difftrt_checkpoint


def load_source(path: Path, progress: Callable[[str], None] = lambda _: None, **export: Any) -> Any:
    """The checkpoint at ``path``: ``Checkpoint`` for difftrt's own, ``ImportedPipeline`` for a diffusers folder
    (``export``: the export's max_batch, max_size and min_size, checked with the memory estimate first)."""
    path = Path(path)
    if is_difftrt_checkpoint(path):
        return checkpoint.load(path)
    from difftrt.exporter.diffusers_import import load_diffusers_folder

    return load_diffusers_folder(path, progress=progress, **export)

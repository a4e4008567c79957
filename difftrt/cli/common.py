"""Helpers shared by the commands: messages, the progress bar, optional dependencies, the default model."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from difftrt.errors import ArtifactError, DependencyError


class _WarningLines(logging.Handler):
    """The library's log warnings as ``warning: ...`` lines on the current stderr (click's, under CliRunner)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"warning: {record.getMessage()}", err=True)


def say(quiet: bool) -> Callable[[str], None]:
    """The command's progress and warnings go to stderr, unless ``--quiet``; so do the library's logged
    warnings (``logging.getLogger("difftrt")``), which ``--quiet`` silences too."""
    logger = logging.getLogger("difftrt")
    handler = next((h for h in logger.handlers if isinstance(h, _WarningLines)), None)
    if handler is None:
        handler = _WarningLines()
        logger.addHandler(handler)
    handler.setLevel(logging.ERROR if quiet else logging.WARNING)
    return (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))


def needs_export_extra() -> tuple[Any, Any]:
    """(load_source, export_checkpoint), or a one-line error naming the extra to install."""
    try:
        from difftrt.exporter.onnx import export_checkpoint
        from difftrt.exporter.sources import load_source
    except ImportError as exc:
        raise DependencyError(f"this command needs torch and onnx ({exc.name} is missing): pip install 'difftrt[export]'") from None
    return load_source, export_checkpoint


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def engine_or_default(engine: Path | None, progress: Callable[[str], None]) -> Path:
    """``--engine``, or the default model's export (made on first use)."""
    if engine is not None:
        return engine
    from difftrt import default_model

    return default_model.ensure_exported(progress=progress)


def load_latents(path: Path | None) -> np.ndarray | None:
    if path is None:
        return None
    try:
        latents = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read --latents {path}: {exc}") from None
    if not isinstance(latents, np.ndarray) or latents.dtype.kind not in "fiu":
        raise ArtifactError(f"--latents {path} must be one numeric .npy array (not .npz, strings or objects)")
    return latents


class _NoBar:
    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> bool:
        return False

    def update(self, n: int) -> None:
        pass


def progress_bar(steps: int, quiet: bool, label: str = "denoising") -> Any:
    """click's bar (with ETA) on a terminal; nothing when piped or quiet."""
    if quiet or not sys.stderr.isatty():
        return _NoBar()
    return click.progressbar(length=steps, label=label, file=sys.stderr, show_eta=True)

"""The torch reference for an export: the checkpoint it came from, behind the same pipeline (needs torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from difftrt import default_model
from difftrt.artifact import Artifact
from difftrt.errors import ArtifactError
from difftrt.pipeline import Text2ImagePipeline


def source_checkpoint(artifact: Artifact, ckpt: Path | None = None) -> Any:
    """The checkpoint an export came from: ``ckpt``, the folder its manifest records, or the default model."""
    from difftrt.exporter.sources import load_source

    source = artifact.manifest.get("source_checkpoint")
    if ckpt is not None:
        return load_source(ckpt, available=None)  # a reference, not an export: no export-memory check
    if source == default_model.SOURCE:
        return default_model.load_checkpoint()
    if source and Path(source).is_dir():
        return load_source(Path(source), available=None)
    raise ArtifactError(f"cannot find the checkpoint {source!r} this export came from; pass --ckpt or --no-torch")


def torch_reference(artifact: Artifact, pipe: Text2ImagePipeline, ckpt: Path | None) -> Text2ImagePipeline:
    """The checkpoint the artifact was exported from, in torch eager fp32, behind the same pipeline, with the
    export's batch range (so it warns where the export would)."""
    from difftrt.backends.torch_ref import torch_engines

    max_batch = artifact.specs["text_encoder"].dim_range("batch").max
    return Text2ImagePipeline(torch_engines(source_checkpoint(artifact, ckpt), max_batch=max_batch), pipe.tokenizer,
                              pipe.config)

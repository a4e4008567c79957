"""PyTorch reference backend: the checkpoint's modules behind the same ``Engine`` interface (CPU or CUDA)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from difftrt import default_model
from difftrt.artifact import Artifact
from difftrt.backends.base import TensorInfo
from difftrt.errors import ArtifactError
from difftrt.models import checkpoint
from difftrt.models.checkpoint import Checkpoint
from difftrt.models.specs import ComponentSpec, component_specs


def component_modules(ckpt: Checkpoint) -> dict[str, nn.Module]:
    """Component name (as in the specs) -> the module whose ``forward`` takes the spec's inputs in order."""
    return {"text_encoder": ckpt.text_encoder, "unet": ckpt.unet,
            "vae_decoder": ckpt.vae.decoder, "vae_encoder": ckpt.vae.encoder}


class TorchEngine:
    """Eager PyTorch execution of one component; inputs and outputs are NumPy like every engine's."""

    def __init__(self, module: nn.Module, spec: ComponentSpec, device: str = "cpu") -> None:
        self.name = spec.name
        self.module = module.to(device).eval()
        self.device = device
        self.inputs = tuple(TensorInfo(t.name, t.dtype, t.shape) for t in spec.inputs)
        self.outputs = tuple(TensorInfo(t.name, t.dtype, t.shape) for t in spec.outputs)

    @torch.inference_mode()
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[t.name])).to(self.device) for t in self.inputs]
        out = self.module(*args)
        if self.device != "cpu":
            torch.cuda.synchronize()
        return {self.outputs[0].name: out.float().cpu().numpy()}


def torch_engines(ckpt: Checkpoint, device: str = "cpu") -> dict[str, TorchEngine]:
    specs = component_specs(ckpt.config)
    return {name: TorchEngine(module, specs[name], device) for name, module in component_modules(ckpt).items()}


def source_checkpoint(artifact: Artifact, ckpt: Path | None = None) -> Checkpoint:
    """The checkpoint an export came from: ``ckpt``, the folder its manifest records, or the default model."""
    source = artifact.manifest.get("source_checkpoint")
    if ckpt is not None:
        return checkpoint.load(ckpt)
    if source == default_model.SOURCE:
        return default_model.load_checkpoint()
    if source and Path(source).is_dir():
        return checkpoint.load(Path(source))
    raise ArtifactError(f"cannot find the checkpoint {source!r} this export came from; pass --ckpt or --no-torch")

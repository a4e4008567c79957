"""PyTorch reference backend: the checkpoint's modules behind the same ``Engine`` lifecycle (CPU or CUDA)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from difftrt.backends.base import Engine, TensorInfo
from difftrt.models.checkpoint import Checkpoint
from difftrt.models.specs import DEFAULT_MAX_BATCH, ComponentSpec, component_specs


class TorchEngine(Engine):
    """Eager PyTorch execution of one component; host NumPy in and out like the ONNX Runtime engine."""

    backend = "torch"

    def __init__(self, module: nn.Module, spec: ComponentSpec, device: str = "cpu") -> None:
        super().__init__(spec, f"torch {type(module).__name__}")
        self.module, self.device = module, device

    def _load(self) -> None:
        self.module = self.module.to(self.device).eval()

    def declared_io(self) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
        """A module declares nothing: its ``forward`` takes the spec's inputs in order (``component_modules``),
        so the check at ``load`` passes by construction; the ONNX file is what ``load`` checks elsewhere."""
        info = lambda ts: tuple(TensorInfo(t.name, t.dtype, t.shape) for t in ts)  # noqa: E731
        return info(self.spec.inputs), info(self.spec.outputs)

    @torch.inference_mode()
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[t.name])).to(self.device) for t in self.spec.inputs]
        out = self.module(*args)
        if self.device != "cpu":
            torch.cuda.synchronize()
        output = self.spec.outputs[0]
        return {output.name: out.cpu().numpy().astype(output.dtype, copy=False)}


def torch_engines(ckpt: Checkpoint, device: str = "cpu", max_batch: int = DEFAULT_MAX_BATCH) -> dict[str, TorchEngine]:
    """One fp32 engine per component, with the specs an fp32 export of ``ckpt`` for ``max_batch`` images records
    (the reference stays fp32 whatever the export's precision)."""
    specs = component_specs(ckpt.config, max_batch=max_batch)
    return {name: TorchEngine(module, specs[name], device) for name, module in ckpt.component_modules().items()}

"""Modules at a lower precision for export: fp16 weights and arithmetic, with fp32 islands where fp16 fails.

Kept in fp32 inside an fp16 graph: normalisation statistics (GroupNorm and LayerNorm compute mean and
variance over thousands of values, whose sums overflow or lose every digit in fp16), the attention softmax
(``layers.Attention`` always runs it in fp32, and scales Q before Q·Kᵀ below fp32) and the sinusoidal timestep
embedding (``t·f`` for t up to 1000 needs fp32; ``UNet.forward`` casts it after). Everything else —
convolutions, matmuls, activations — is fp16.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from difftrt.models.specs import Precision

TORCH_DTYPES = {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}


class Fp32GroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics and affine transform run in fp32, returning the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm whose statistics and affine transform run in fp32, returning the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)


def _fp32_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.GroupNorm):
            child.__class__ = Fp32GroupNorm
        elif isinstance(child, nn.LayerNorm):
            child.__class__ = Fp32LayerNorm
        else:
            _fp32_norms(child)


def at_precision(module: nn.Module, precision: Precision) -> nn.Module:
    """A copy of ``module`` at ``precision`` (the original is untouched); fp32 returns ``module`` itself."""
    if precision is Precision.FP32:
        return module
    low = copy.deepcopy(module)
    _fp32_norms(low)
    return low.to(TORCH_DTYPES[precision]).eval()

"""PyTorch backend: the checkpoint's modules behind the same ``Engine`` lifecycle, on CPU or CUDA.

Two roles. With the default ``TorchOptions`` it is the fp32 eager reference every export is validated
against. With options it is the strongest torch a user would run, the honest baseline of ``difftrt bench``
and the GPU fallback: fp16/bf16 weights, bf16 autocast on CPU, channels_last, fused SDPA attention,
``torch.compile`` and CUDA-graph replay. ``resident=True`` takes and returns torch tensors on the engine's
device, so the sampling loop runs there (``difftrt.arrays``) with no latent-sized host copy per step (the
(B,) timestep is still uploaded each call, a small copy that waits for the device).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from difftrt.arrays import to_host
from difftrt.backends.base import Engine, TensorInfo
from difftrt.errors import UsageError
from difftrt.models.checkpoint import Checkpoint
from difftrt.models.layers import Attention
from difftrt.models.specs import DEFAULT_MAX_BATCH, ComponentSpec, component_specs

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class TorchOptions:
    """How the torch backend runs a component: the knobs a user tunes torch with (diffusers' and
    stable-fast's list). The default is the fp32 eager reference."""

    dtype: str = "float32"  # compute dtype: float32, float16 (fast on CUDA; slow but correct on CPU), bfloat16
    autocast: bool = False  # keep fp32 weights and run under torch.autocast(dtype) instead of casting them
    channels_last: bool = False  # NHWC memory format for the weights and 4-D inputs
    fused_attention: bool = False  # F.scaled_dot_product_attention instead of the written-out softmax(QKᵀ/√d)V
    compile: str | None = None  # a torch.compile mode (COMPILE_MODES), or None for eager
    cuda_graph: bool = False  # capture one call per input shape and replay it (CUDA only)

    def check(self, device: str) -> None:
        """``UsageError`` for a combination that cannot run on ``device``."""
        if self.dtype not in DTYPES:
            raise UsageError(f"torch dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.autocast and self.dtype == "float32":
            raise UsageError("autocast needs a lower dtype (bfloat16 on CPU, float16 or bfloat16 on CUDA)")
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise UsageError(f"torch.compile mode must be one of {list(COMPILE_MODES)}, got {self.compile!r}")
        if self.cuda_graph and not device.startswith("cuda"):
            raise UsageError(f"CUDA graphs need a CUDA device, got device {device!r}")

    def label(self) -> str:
        """A short name for tables: "torch fp32", "torch bf16 autocast +channels_last", ..."""
        short = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[self.dtype]
        parts = [f"torch {short}", "autocast" if self.autocast else ""]
        parts += ["+channels_last" if self.channels_last else "", "+sdpa" if self.fused_attention else ""]
        parts += [f"+compile({self.compile})" if self.compile else "", "+cuda_graph" if self.cuda_graph else ""]
        return " ".join(p for p in parts if p)


def prepared(module: nn.Module, options: TorchOptions, device: str) -> nn.Module:
    """``module`` set up as ``options`` say on ``device``: itself for the defaults on its own device, else a
    copy (the caller's module is never moved or changed)."""
    here, there = next(module.parameters(), torch.empty(0)).device, torch.device(device)
    if options == TorchOptions() and here.type == there.type and there.index in (None, here.index):
        return module.eval()
    module = copy.deepcopy(module).to(device).eval()
    if options.dtype != "float32" and not options.autocast:
        module = module.to(DTYPES[options.dtype])
    if options.channels_last:
        module = module.to(memory_format=torch.channels_last)
    for child in module.modules():
        if isinstance(child, Attention):
            child.fused = options.fused_attention
    return module


class TorchEngine(Engine):
    """One component in PyTorch; host NumPy in and out like the ONNX Runtime engine, or (``resident``)
    torch tensors on ``device``. Inputs arrive in the spec's dtypes and outputs leave in them (float32):
    a lower compute dtype is an inside matter of the engine."""

    backend = "torch"

    def __init__(self, module: nn.Module, spec: ComponentSpec, device: str = "cpu",
                 options: TorchOptions = TorchOptions(), resident: bool = False) -> None:
        options.check(device)
        super().__init__(spec, f"torch {type(module).__name__}")
        self.module, self.device, self.options, self.resident = module, device, options, resident
        self._graph: tuple[Any, list[torch.Tensor], torch.Tensor] | None = None
        if resident:
            from array_api_compat import torch as torch_namespace

            self.xp = torch_namespace

    def _load(self) -> None:
        self.module = prepared(self.module, self.options, self.device)
        # dynamic=False: one specialised graph per input shape (inductor's dynamic-shape path failed here on a
        # new latent size; a sampler sees few distinct shapes)
        self.runner = (torch.compile(self.module, mode=self.options.compile, dynamic=False) if self.options.compile
                       else self.module)

    def declared_io(self) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
        """A module declares nothing: its ``forward`` takes the spec's inputs in order (``component_modules``),
        so the check at ``load`` passes by construction; the ONNX file is what ``load`` checks elsewhere."""
        info = lambda ts: tuple(TensorInfo(t.name, t.dtype, t.shape) for t in ts)  # noqa: E731
        return info(self.spec.inputs), info(self.spec.outputs)

    def asarray(self, array: Any, dtype: str) -> Any:
        if not self.resident:
            return super().asarray(array, dtype)
        if isinstance(array, torch.Tensor):
            return array.to(device=self.device, dtype=DTYPES.get(dtype, getattr(torch, dtype)))
        return torch.as_tensor(np.asarray(to_host(array), dtype=dtype), device=self.device)

    def _tensors(self, feeds: Mapping[str, Any]) -> list[torch.Tensor]:
        """The module's positional inputs on the device, floats in the compute dtype, 4-D ones channels_last."""
        low = DTYPES[self.options.dtype] if not self.options.autocast else None
        args = []
        for t in self.spec.inputs:
            x = feeds[t.name]
            x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
            x = x.to(self.device)
            if low is not None and x.is_floating_point() and t.name != "timestep":  # t·f needs fp32
                x = x.to(low)
            if self.options.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            args.append(x)
        return args

    def _run(self, args: list[torch.Tensor]) -> torch.Tensor:
        autocast = (torch.autocast(self.device.split(":")[0], dtype=DTYPES[self.options.dtype])
                    if self.options.autocast else nullcontext())
        with autocast:
            return self.runner(*args)

    def _allocate(self, shapes: dict[str, tuple[int, ...]]) -> None:
        self._graph = None
        if self.options.cuda_graph:
            self._graph = self._capture(shapes)

    @torch.inference_mode()
    def _capture(self, shapes: dict[str, tuple[int, ...]]) -> tuple[Any, list[torch.Tensor], torch.Tensor]:
        """Warm up on a side stream, then record one call into a CUDA graph over static input tensors."""
        feeds = {t.name: torch.zeros(shapes[t.name], dtype=DTYPES.get(t.dtype, getattr(torch, t.dtype)))
                 for t in self.spec.inputs}
        static = self._tensors(feeds)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # cuDNN autotuning, lazy inits and compile happen outside the capture
                self._run(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._run(static)
        return graph, static, out

    @torch.inference_mode()
    def _infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        args = self._tensors(feeds)
        if self._graph is not None:
            graph, static, out = self._graph
            for dst, src in zip(static, args):
                dst.copy_(src)
            graph.replay()
            out = out.clone()  # the graph's output buffer is overwritten by the next replay
        else:
            out = self._run(args)
        output = self.spec.outputs[0]
        out = out.to(DTYPES.get(output.dtype, torch.float32)).contiguous()
        if self.resident:
            return {output.name: out}
        if self.device != "cpu":
            torch.cuda.synchronize()
        return {output.name: out.cpu().numpy()}

    def _close(self) -> None:
        self._graph = None


def torch_engines(ckpt: Checkpoint, device: str = "cpu", max_batch: int = DEFAULT_MAX_BATCH,
                  options: TorchOptions = TorchOptions(), resident: bool = False) -> dict[str, TorchEngine]:
    """One engine per component, with the specs an fp32 export of ``ckpt`` for ``max_batch`` images records
    (the reference stays fp32 whatever the export's precision; ``options`` may lower what runs inside)."""
    specs = component_specs(ckpt.config, max_batch=max_batch)
    return {name: TorchEngine(module, specs[name], device, options, resident)
            for name, module in ckpt.component_modules().items()}

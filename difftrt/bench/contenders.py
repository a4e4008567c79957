"""Who runs in ``difftrt bench``: every backend and precision on this machine, side by side, from the fp32
torch reference to the strongest torch a user would pick here; a contender that cannot run carries the
reason instead (it gets a row that says why, never silence)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difftrt.bench.peak import native_bf16
from difftrt.pipeline import Text2ImagePipeline

REFERENCE = "torch eager fp32"


@dataclass(frozen=True)
class Contender:
    name: str  # the row's label, e.g. "torch bf16 autocast"
    kind: str  # "torch", "onnxruntime" or "tensorrt"
    precision: str  # compute precision: fp32, fp16, bf16
    make: Callable[[], Text2ImagePipeline] | None  # None when it cannot run here
    reason: str = ""  # why not, when ``make`` is None
    peak_dtype: str = "float32"  # the matmul peak its FLOPs are compared with
    note: str = ""


def torch_contenders(artifact: Any, pipe: Text2ImagePipeline, ckpt: Path | None, flags: dict[str, bool],
                     compile_: bool) -> list[Contender]:
    """The torch rows on CPU: the eager fp32 reference and the tunings users reach for (host NumPy loop, as
    ONNX Runtime's, so the engines are what differs)."""
    from difftrt.backends.torch_ref import TorchOptions, torch_engines
    from difftrt.bench.reference import source_checkpoint

    checkpoint = source_checkpoint(artifact, ckpt)
    max_batch = artifact.specs["text_encoder"].dim_range("batch").max

    def maker(options: TorchOptions) -> Callable[[], Text2ImagePipeline]:
        return lambda: Text2ImagePipeline(torch_engines(checkpoint, max_batch=max_batch, options=options),
                                          pipe.tokenizer, pipe.config)

    fast = dict(channels_last=True, fused_attention=True)
    rows = [Contender(REFERENCE, "torch", "fp32", maker(TorchOptions())),
            Contender("torch fp32 +channels_last +sdpa", "torch", "fp32", maker(TorchOptions(**fast)))]
    bf16 = [("torch bf16 autocast", TorchOptions(dtype="bfloat16", autocast=True)),
            ("torch bf16 autocast +channels_last +sdpa", TorchOptions(dtype="bfloat16", autocast=True, **fast))]
    for name, options in bf16:
        if native_bf16(flags):
            rows.append(Contender(name, "torch", "bf16", maker(options), peak_dtype="bfloat16"))
        else:
            rows.append(Contender(name, "torch", "bf16", None, "this CPU has no native bf16 (no AVX-512 BF16 or AMX): "
                                  "torch would emulate it, about 66x slower than fp32"))
    if compile_:
        rows.append(Contender("torch fp32 +compile", "torch", "fp32", maker(TorchOptions(compile="default", **fast)),
                              note="inductor, mode default, +channels_last +sdpa"))
    else:
        rows.append(Contender("torch fp32 +compile", "torch", "fp32", None,
                              "not asked for: pass --compile (inductor compiles each shape for minutes on 2 cores)"))
    return rows


def onnx_contenders(pipe: Text2ImagePipeline, fp16_engine: Path | None, threads: int) -> list[Contender]:
    """``pipe``: the export already opened (fp32), timed as it is."""
    from difftrt.runtime import load_pipeline

    rows = [Contender("onnxruntime fp32", "onnxruntime", "fp32", lambda: pipe)]
    if fp16_engine is None:
        rows.append(Contender("onnxruntime fp16", "onnxruntime", "fp16", None,
                              "no fp16 export given: difftrt export --precision fp16, then --fp16-engine"))
    else:
        rows.append(Contender("onnxruntime fp16", "onnxruntime", "fp16",
                              lambda: load_pipeline(fp16_engine, threads=threads)[0],
                              note="ORT's CPU provider runs most fp16 nodes through fp32 casts"))
    return rows


def tensorrt_contender(trt_engine: Path | None) -> Contender:
    from difftrt.trt.gpu import local_arch

    if local_arch() is None:
        return Contender("tensorrt", "tensorrt", "fp16", None, "no CUDA GPU here: TensorRT plans run only on an "
                         "NVIDIA GPU")
    if trt_engine is None:
        return Contender("tensorrt", "tensorrt", "fp16", None, "no engine folder given: difftrt build, then --trt-engine")
    from difftrt.backends.registry import require
    from difftrt.errors import DifftrtError
    from difftrt.runtime import load_pipeline

    try:
        require("tensorrt", trt_engine)
    except DifftrtError as exc:
        return Contender("tensorrt", "tensorrt", "fp16", None, str(exc))
    return Contender("tensorrt", "tensorrt", "fp16", lambda: load_pipeline(trt_engine)[0], peak_dtype="float16")

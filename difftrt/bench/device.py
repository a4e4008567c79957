"""What a device benchmark needs besides the engines: the device record, synchronised timing, peak memory,
and the torch variants worth comparing on that device (the baselines a user would pick there)."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from difftrt.backends.torch_ref import TorchOptions
from difftrt.bench.timing import machine, stats


def _version(module: str) -> str | None:
    try:
        imported = __import__(module)
    except Exception as exc:  # record why, never fail the record
        return f"not importable: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    return str(getattr(imported, "__version__", "unknown"))


def device_record(device: str) -> dict[str, Any]:
    """The machine, the GPU (name, driver, memory, compute capability) and the versions that matter."""
    import torch

    record: dict[str, Any] = {"machine": machine(), "python": sys.version.split()[0], "platform": platform.platform(),
                              "versions": {m: _version(m) for m in ("numpy", "torch", "cupy", "onnxruntime",
                                                                     "diffusers", "transformers", "array_api_compat",
                                                                     "tensorrt", "tensorrt_rtx", "triton")}}
    record["versions"]["torch_cuda"] = torch.version.cuda
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        record["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "compute_capability": f"sm{props.major}{props.minor}",
                         "multiprocessors": props.multi_processor_count,
                         "cudnn": torch.backends.cudnn.version()}
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            record["gpu"]["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            record["gpu"]["nvidia_smi"] = f"unavailable: {exc}"
    else:
        record["gpu"] = None
    return record


def synchronizer(device: str) -> Callable[[], None]:
    """Waits for the device's queued work (a no-op on CPU)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def time_calls(fn: Callable[[], Any], runs: int, warmup: int, sync: Callable[[], None]) -> dict[str, float]:
    """Median and spread of ``fn`` over ``runs`` calls after ``warmup``, each call synchronised before and after."""
    for _ in range(warmup):
        fn()
    sync()
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - start)
    return stats(seconds)


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def allocated_mib(device: str) -> float | None:
    """What torch holds on the GPU now (None on CPU)."""
    if device.startswith("cuda"):
        import torch

        return round(torch.cuda.memory_allocated() / 2**20, 1)
    return None


def peak_mib(device: str) -> float | None:
    """Peak memory torch allocated on the GPU since ``reset_peak`` (None on CPU, where RSS is process-wide)."""
    if device.startswith("cuda"):
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def strict_fp32(on: bool) -> None:
    """TF32 off (``on``) so that fp32 means fp32 on the GPU, or torch's defaults back."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = not on


def variant_label(options: TorchOptions, resident: bool) -> str:
    """``options.label()``, plus where the loop runs when it is on the host."""
    return options.label() + ("" if resident else ", host loop")


def torch_variants(device: str, compile_: bool, own_attention: bool = True) -> list[tuple[str, TorchOptions, bool]]:
    """(label, options, resident) from the reference to the strongest torch on ``device``. ``own_attention``: the
    modules use difftrt's ``Attention`` (the bundled model), so ``fused_attention`` switches it to SDPA; diffusers'
    modules already use SDPA, and the option (which would change nothing) is left out of their rows."""
    if device.startswith("cuda"):
        fast = dict(dtype="float16", fused_attention=own_attention, channels_last=True)
        rows = [(TorchOptions(), False), (TorchOptions(), True), (TorchOptions(dtype="float16"), True),
                (TorchOptions(**fast), True), (TorchOptions(**fast, cuda_graph=True), True)]
        rows += [(TorchOptions(**fast, compile="default"), True)] if compile_ else []
    else:
        rows = [(TorchOptions(), False), (TorchOptions(), True), (TorchOptions(dtype="bfloat16", autocast=True), True),
                (TorchOptions(channels_last=True, fused_attention=own_attention), True)]
        rows += [(TorchOptions(compile="default"), True)] if compile_ else []
    return [(variant_label(o, r), o, r) for o, r in rows]

"""The machine's side of the roofline: CPU features that decide the fast paths, and a matmul peak measured in
the same run (the most this machine's best GEMM does on large square matrices), so a backend's achieved
GFLOP/s reads as a fraction of what is there."""

from __future__ import annotations

import time
from typing import Any

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_flags(cpuinfo: str | None = None) -> dict[str, bool]:
    """Which of ``FLAGS`` the CPU reports (Linux /proc/cpuinfo; all False elsewhere)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                cpuinfo = fh.read()
        except OSError:
            cpuinfo = ""
    line = next((ln for ln in cpuinfo.splitlines() if ln.startswith("flags")), "")
    present = set(line.split(":", 1)[-1].split())
    return {flag: flag in present for flag in FLAGS}


def native_bf16(flags: dict[str, bool]) -> bool:
    """bf16 arithmetic in hardware (AVX-512 BF16 or AMX); without it torch emulates bf16, ~66× slower here."""
    return flags.get("avx512_bf16", False) or flags.get("amx_bf16", False)


def matmul_peak(dtype: str = "float32", n: int = 2048, runs: int = 5) -> dict[str, Any]:
    """GFLOP/s of torch's n×n matmul in ``dtype`` (2n³ FLOPs each): best and median of ``runs`` after a warm-up.
    Uses torch's current thread count (set it first)."""
    import torch

    t = getattr(torch, dtype)
    a, b = torch.randn(n, n).to(t), torch.randn(n, n).to(t)
    torch.mm(a, b)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        torch.mm(a, b)
        seconds.append(time.perf_counter() - start)
    rates = sorted(2 * n**3 / s / 1e9 for s in seconds)
    return {"dtype": dtype, "n": n, "runs": runs, "best_gflops": rates[-1], "median_gflops": rates[len(rates) // 2],
            "threads": torch.get_num_threads()}

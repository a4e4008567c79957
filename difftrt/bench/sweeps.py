"""Sweeps of ``difftrt bench --sweep``: batch, steps and resolution, one axis at a time around the request,
for the backends that matter most (ONNX Runtime fp32 and the strongest torch), timed round-robin."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from difftrt.bench.e2e import bench_round_robin
from difftrt.pipeline import SampleRequest


def sweep_points(request: SampleRequest, max_batch: int, default_size: int, max_size: int,
                 factor: int) -> list[tuple[str, int, SampleRequest]]:
    """(axis, value, request): batch 1, 2, 4; steps 10, 25, 50; sizes default, 1.5× and 2× the default (multiples
    of ``factor``, inside the engines' range)."""
    points = [("batch", b, replace(request, num_images=b)) for b in (1, 2, 4) if b <= max_batch]
    points += [("steps", s, replace(request, steps=s)) for s in (10, 25, 50)]
    sizes = sorted({default_size, (default_size * 3 // 2) // factor * factor, 2 * default_size})
    points += [("size", s, replace(request, height=s, width=s)) for s in sizes if s <= max_size]
    return points


def run_sweeps(pipes: dict[str, Any], make_scheduler: Callable[[], Any], points: list[tuple[str, int, SampleRequest]],
               runs: int, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    out = []
    for axis, value, request in points:
        progress(f"sweep {axis}={value}")
        measured = bench_round_robin(pipes, make_scheduler, request, runs, 1)
        ok = {n: m for n, m in measured.items() if "error" not in m}
        out.append({"axis": axis, "value": value, "total": {n: m["stages"]["total"] for n, m in ok.items()},
                    "unet_call": {n: m["stages"]["unet_call"] for n, m in ok.items()},
                    "failed": {n: m["error"] for n, m in measured.items() if "error" in m}})
    return {"backends": list(pipes), "runs": runs, "points": out}

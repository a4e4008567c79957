"""End-to-end pipeline benchmark: every stage timed inside real sampling runs, after warm-up.

Several pipelines are timed round-robin (one run of each in turn, the starting backend rotating every round),
so a drift of the machine's speed over the run touches every contender alike, and no backend always runs
right after the same other one (ONNX Runtime's spinning threads slow whoever follows it for a moment).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from difftrt.bench.timing import TimedEngine, TimedScheduler, stats
from difftrt.errors import first_line
from difftrt.pipeline import SampleRequest, SampleResult, Text2ImagePipeline

STAGES = ("text_encoder", "unet", "unet_call", "vae_decoder", "scheduler", "total")


class StageTimer:
    """One pipeline with timed engines and scheduler; ``run`` samples once and returns each stage's seconds."""

    def __init__(self, pipe: Text2ImagePipeline) -> None:
        self.engines = {name: TimedEngine(engine) for name, engine in pipe.engines.items()}
        self.pipe = Text2ImagePipeline(self.engines, pipe.tokenizer, pipe.config)

    def run(self, make_scheduler: Callable[[], Any], request: SampleRequest) -> tuple[dict[str, list[float]], SampleResult]:
        for engine in self.engines.values():
            engine.calls.clear()
        scheduler = TimedScheduler(make_scheduler())
        start = time.perf_counter()
        result = self.pipe(request, scheduler)
        total = time.perf_counter() - start
        calls = {name: list(engine.calls) for name, engine in self.engines.items()}
        return {"text_encoder": [sum(calls["text_encoder"])], "unet": [sum(calls["unet"])], "unet_call": calls["unet"],
                "vae_decoder": [sum(calls["vae_decoder"])], "scheduler": [sum(scheduler.calls)],
                "total": [total]}, result


def bench_round_robin(pipes: Mapping[str, Text2ImagePipeline], make_scheduler: Callable[[], Any],
                      request: SampleRequest, runs: int, warmup: int,
                      progress: Callable[[str], None] = lambda _: None) -> dict[str, dict[str, Any]]:
    """For each pipeline: per-stage stats, every raw sample (ms), images/s, U-Net steps/s and the last result;
    or {"error": reason} for one that raised."""
    timers = {name: StageTimer(pipe) for name, pipe in pipes.items()}
    failed: dict[str, str] = {}

    def attempt(name: str) -> tuple[dict[str, list[float]], SampleResult] | None:
        """One run; a backend that fails (a compiler error, out of memory) leaves the race with its reason."""
        try:
            return timers[name].run(make_scheduler, request)
        except Exception as exc:  # any library's error: recorded, the other backends go on
            failed[name] = f"failed: {type(exc).__name__}: {first_line(exc)}"
            return None

    for name in list(timers):
        for _ in range(warmup):
            if name not in failed:
                attempt(name)
    raw: dict[str, dict[str, list[float]]] = {name: {s: [] for s in STAGES} for name in timers}
    last: dict[str, SampleResult] = {}
    names = list(timers)
    for i in range(runs):
        progress(f"run {i + 1}/{runs}")
        for name in names[i % len(names):] + names[:i % len(names)]:
            if name not in failed and (done := attempt(name)) is not None:
                seconds, last[name] = done
                for stage, values in seconds.items():
                    raw[name][stage].extend(values)
    out: dict[str, dict[str, Any]] = {name: {"error": reason} for name, reason in failed.items()}
    for name in (n for n in timers if n not in failed):
        table = {stage: stats(values) for stage, values in raw[name].items()}
        out[name] = {"stages": table, "raw_ms": {s: [v * 1e3 for v in vs] for s, vs in raw[name].items()},
                     "images_per_s": request.num_images / (table["total"]["median_ms"] / 1e3),
                     "unet_steps_per_s": len(raw[name]["unet_call"]) / runs / (table["unet"]["median_ms"] / 1e3),
                     "result": last[name]}
    return out


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b)))


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 images in dB (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))

"""End-to-end pipeline benchmark: every stage timed inside real sampling runs, after warm-up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from difftrt.bench.timing import TimedEngine, TimedScheduler, stats
from difftrt.pipeline import SampleRequest, Text2ImagePipeline

STAGES = ("text_encoder", "unet", "unet_call", "vae_decoder", "scheduler", "total")


def bench_pipeline(pipe: Text2ImagePipeline, make_scheduler: Callable[[], Any], request: SampleRequest,
                   runs: int, warmup: int) -> dict[str, Any]:
    """Time ``runs`` full samples (after ``warmup`` untimed ones); returns per-stage stats and the last latents.

    Stages per run: text_encoder (all prompt encodings), unet (all steps), unet_call (each call), vae_decoder,
    scheduler (all ``step`` calls), total (wall time of the whole sample).
    """
    timed = {name: TimedEngine(engine) for name, engine in pipe.engines.items()}
    timed_pipe = Text2ImagePipeline(timed, pipe.tokenizer, pipe.config)
    per_run: dict[str, list[float]] = {s: [] for s in STAGES}
    latents = None
    for i in range(warmup + runs):
        for engine in timed.values():
            engine.calls.clear()
        scheduler = TimedScheduler(make_scheduler())
        start = time.perf_counter()
        result = timed_pipe(request, scheduler)
        total = time.perf_counter() - start
        if i < warmup:
            continue
        latents = result.latents
        per_run["text_encoder"].append(sum(timed["text_encoder"].calls))
        per_run["unet"].append(sum(timed["unet"].calls))
        per_run["unet_call"].extend(timed["unet"].calls)
        per_run["vae_decoder"].append(sum(timed["vae_decoder"].calls))
        per_run["scheduler"].append(sum(scheduler.calls))
        per_run["total"].append(total)
    table = {stage: stats(values) for stage, values in per_run.items()}
    table["images_per_s"] = request.num_images / (table["total"]["median_ms"] / 1e3)
    return {"stages": table, "latents": latents}


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> dict[str, float]:
    """Per-stage ratio of medians (e.g. torch / ORT: > 1 means ORT is faster)."""
    return {s: numerator["stages"][s]["median_ms"] / denominator["stages"][s]["median_ms"] for s in STAGES}


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b)))

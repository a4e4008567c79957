"""Single component calls timed round-robin across backends on the same inputs: median and spread per backend,
paired ratios against a reference (per round: reference time / contender time), and each output's distance
from the reference's. What an SD-scale comparison needs when a whole sampling run would take an hour."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from difftrt.bench.timing import stats
from difftrt.errors import first_line


def _ratio_stats(ratios: list[float]) -> dict[str, float]:
    r = np.asarray(ratios, dtype=np.float64)
    return {"median": float(np.median(r)), "min": float(r.min()), "max": float(r.max()), "n": int(r.size)}


def time_component(engines: Mapping[str, Any], feeds: Mapping[str, np.ndarray], reference: str, runs: int,
                   warmup: int, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """``engines``: label -> Engine for one component (``reference`` among them); every engine gets ``feeds``."""
    shapes = {name: array.shape for name, array in feeds.items()}
    failed: dict[str, str] = {}
    outputs: dict[str, np.ndarray] = {}

    def call(label: str) -> float | None:
        try:
            start = time.perf_counter()
            out = engines[label].infer(feeds)
            seconds = time.perf_counter() - start
        except Exception as exc:  # any library's error (out of memory, an unsupported op): recorded, the rest go on
            failed[label] = f"failed: {type(exc).__name__}: {first_line(exc)}"
            return None
        outputs[label] = np.asarray(next(iter(out.values())), dtype=np.float32)
        return seconds

    for label, engine in engines.items():
        try:
            engine.ready(shapes)
        except Exception as exc:
            failed[label] = f"failed: {type(exc).__name__}: {first_line(exc)}"
            continue
        for _ in range(warmup):
            if label not in failed:
                call(label)
    raw: dict[str, list[float]] = {label: [] for label in engines}
    ratios: dict[str, list[float]] = {label: [] for label in engines}
    labels = list(engines)
    for i in range(runs):
        progress(f"run {i + 1}/{runs}")
        this_round: dict[str, float] = {}
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:
            if label not in failed and (seconds := call(label)) is not None:
                this_round[label] = seconds
                raw[label].append(seconds)
        if reference in this_round:
            for label, seconds in this_round.items():
                ratios[label].append(this_round[reference] / seconds)
    rows: dict[str, Any] = {label: {"error": reason} for label, reason in failed.items()}
    want = outputs.get(reference)
    for label in (lab for lab in labels if lab not in failed):
        row: dict[str, Any] = {**stats(raw[label]), "raw_ms": [s * 1e3 for s in raw[label]]}
        if ratios[label]:
            row["speedup_vs_reference"] = _ratio_stats(ratios[label])
        if want is not None:
            err = np.abs(outputs[label].astype(np.float64) - want)
            row["max_abs_diff"] = float(err.max())
            row["max_rel_diff"] = float(err.max() / (np.abs(want).max() + 1e-12))
            row["finite"] = bool(np.isfinite(outputs[label]).all())
        rows[label] = row
    return {"inputs": {name: list(shape) for name, shape in shapes.items()}, "reference": reference, "rows": rows}

"""Timing wrappers (engines, scheduler) and robust statistics; no backend knowledge here."""

from __future__ import annotations

import datetime as dt
import functools
import os
import platform
import resource
import time
from collections.abc import Mapping
from typing import Any

import numpy as np


class TimedEngine:
    """Wraps an ``Engine``; appends each ``infer``'s wall time (seconds) to ``calls``; the rest is delegated."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls: list[float] = []

    def __getattr__(self, name: str) -> Any:  # spec, xp, ready, ... of the wrapped engine
        return getattr(self.engine, name)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self.engine.infer(feeds)
        self.calls.append(time.perf_counter() - start)
        return out


class TimedScheduler:
    """Wraps a scheduler; times ``step`` into ``calls`` and keeps ``step``'s signature visible."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.calls: list[float] = []
        self.set_timesteps = scheduler.set_timesteps
        self.scale_model_input = scheduler.scale_model_input
        self.set_begin_index = scheduler.set_begin_index
        self.add_noise = scheduler.add_noise
        self.order = scheduler.order

        @functools.wraps(scheduler.step)
        def step(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = scheduler.step(*args, **kwargs)
            self.calls.append(time.perf_counter() - start)
            return out

        self.step = step

    @property
    def timesteps(self) -> np.ndarray:
        return self.scheduler.timesteps

    @property
    def init_noise_sigma(self) -> float:
        return self.scheduler.init_noise_sigma


def stats(seconds: list[float]) -> dict[str, float]:
    """Median and spread (p10/p90, min/max) in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {"n": int(ms.size), "median_ms": float(np.median(ms)), "p10_ms": float(np.percentile(ms, 10)),
            "p90_ms": float(np.percentile(ms, 90)), "min_ms": float(ms.min()), "max_ms": float(ms.max())}


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "gpu": None}


def record_header(command: str, versions: Mapping[str, str]) -> dict[str, Any]:
    """The fields every recorded result starts with: the exact command, UTC date, machine and library versions."""
    return {"command": command, "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "versions": dict(versions)}

"""Prometheus-style counters and histograms, rendered by hand in the text exposition format (no dependency).
Each server process keeps its own: with ``--workers N`` a scrape sees the worker that answered it."""

from __future__ import annotations

import bisect
import threading
from collections import Counter


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets, self.counts, self.sum, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.buckets):
            self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            out.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        return out + [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.sum:.6f}", f"{name}_count {self.count}"]


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # by HTTP status
        self.unet_calls = 0
        self.batch_rows = Histogram((1, 2, 4, 8, 16, 32, 64))
        self.batch_requests = Histogram((1, 2, 4, 8, 16, 32))
        self.latency = Histogram((0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.rows_seen: Counter[int] = Counter()  # exact rows per U-Net call, for tests and the load bench
        self.queue_depth = 0
        self.active = 0

    def request(self, status: int, seconds: float | None = None) -> None:
        with self.lock:
            self.requests[str(status)] += 1
            if seconds is not None:
                self.latency.observe(seconds)

    def step(self, rows: int, requests: int) -> None:
        with self.lock:
            self.unet_calls += 1
            self.batch_rows.observe(rows)
            self.batch_requests.observe(requests)
            self.rows_seen[rows] += 1

    def render(self) -> str:
        with self.lock:
            lines = ["# HELP difftrt_requests_total Image requests answered, by HTTP status.",
                     "# TYPE difftrt_requests_total counter"]
            lines += [f'difftrt_requests_total{{status="{s}"}} {n}' for s, n in sorted(self.requests.items())]
            lines += ["# HELP difftrt_queue_depth Requests waiting to join the batch.", "# TYPE difftrt_queue_depth gauge",
                      f"difftrt_queue_depth {self.queue_depth}",
                      "# HELP difftrt_active_requests Requests being denoised.", "# TYPE difftrt_active_requests gauge",
                      f"difftrt_active_requests {self.active}",
                      "# HELP difftrt_unet_calls_total Merged U-Net calls.", "# TYPE difftrt_unet_calls_total counter",
                      f"difftrt_unet_calls_total {self.unet_calls}",
                      "# HELP difftrt_unet_batch_rows U-Net rows per merged call.",
                      "# TYPE difftrt_unet_batch_rows histogram", *self.batch_rows.lines("difftrt_unet_batch_rows"),
                      "# HELP difftrt_unet_batch_requests Requests per merged call.",
                      "# TYPE difftrt_unet_batch_requests histogram",
                      *self.batch_requests.lines("difftrt_unet_batch_requests"),
                      "# HELP difftrt_request_seconds Time from arrival to the answer of successful requests.",
                      "# TYPE difftrt_request_seconds histogram", *self.latency.lines("difftrt_request_seconds")]
            lines += ["# HELP difftrt_unet_rows_seen Merged U-Net calls by their exact row count.",
                      "# TYPE difftrt_unet_rows_seen counter"]
            lines += [f'difftrt_unet_rows_seen{{rows="{r}"}} {n}' for r, n in sorted(self.rows_seen.items())]
            return "\n".join(lines) + "\n"

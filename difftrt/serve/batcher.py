"""The serving loop: one thread owns the engines and merges the requests in flight at every denoising step.

Requests wait in a bounded FIFO queue (full: ``Overloaded``, which the app turns into 503). Between two steps
the loop admits waiting requests in arrival order while they fit — the same latent shape as the running ones,
and at most ``max_batch_rows`` U-Net rows in all — stopping at the first that does not (so a request of
another size is never overtaken forever: the running ones finish, then it starts). It then runs one merged
step (``Text2ImagePipeline.step``), hands finished requests their images and drops requests whose client went
away. An idle loop waits ``batch_wait_ms`` after a first arrival, so requests sent together start together."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from difftrt.errors import DifftrtError, EngineError, first_line
from difftrt.pipeline import SampleRequest, Text2ImagePipeline
from difftrt.schedulers import from_config
from difftrt.serve.limits import FieldError, ServeLimits
from difftrt.serve.metrics import Metrics


class Overloaded(DifftrtError):
    """The queue is full."""


class Cancelled(DifftrtError):
    """The client went away; its work was dropped between steps."""


@dataclass
class Job:
    request: SampleRequest
    scheduler: Any
    shape: tuple[int, ...]  # (N, C, h, w) latents
    rows: int  # U-Net rows per step
    future: Future = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    timings: dict[str, float] = field(default_factory=dict)
    arrived: float = field(default_factory=time.perf_counter)
    state: Any = None


class Batcher:
    def __init__(self, pipe: Text2ImagePipeline, scheduler_config: dict[str, Any], limits: ServeLimits,
                 metrics: Metrics) -> None:
        self.pipe, self.scheduler_config, self.limits, self.metrics = pipe, scheduler_config, limits, metrics
        unet_rows = pipe.engines["unet"].spec.dim_range("batch").max
        self.max_rows = min(limits.max_batch_rows, unet_rows)
        self._pending: deque[Job] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="difftrt-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish every admitted and waiting request, then end the loop."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def cancel(self, job: Job) -> None:
        """The client went away: the job is dropped at the next step boundary (or from the queue)."""
        with self._cv:
            job.cancelled.set()
            self._cv.notify_all()

    def job(self, request: SampleRequest, scheduler_name: str | None) -> Job:
        """A checked job (size, scheduler and rows are validated here, so a bad one never reaches the loop)."""
        request.check()
        shape = self.pipe.latent_shape(request)
        rows = shape[0] * (2 if request.guidance != 1.0 else 1)
        if rows > self.max_rows:
            raise FieldError("num_images", f"{shape[0]} image(s) make {rows} U-Net rows a step; this server merges "
                                           f"at most {self.max_rows}")
        try:
            scheduler = from_config(self.scheduler_config, scheduler_name)
        except DifftrtError as exc:
            raise FieldError("scheduler", str(exc)) from None
        return Job(request, scheduler, shape, rows)

    def submit(self, job: Job) -> Future:
        with self._cv:
            if self._stopping:
                raise Overloaded("the server is shutting down")
            if len(self._pending) >= self.limits.max_queue:
                raise Overloaded(f"{len(self._pending)} requests are waiting (the limit is {self.limits.max_queue})")
            self._pending.append(job)
            self.metrics.queue_depth = len(self._pending)
            self._cv.notify_all()
        return job.future

    def _admit(self, active: list[Job]) -> list[Job]:
        """Waiting jobs that fit beside ``active``, in arrival order (called with the lock held)."""
        for job in [j for j in self._pending if j.cancelled.is_set()]:  # anywhere in the queue, not only its head
            self._pending.remove(job)
            _fail(job, Cancelled("the client disconnected"))
        rows = sum(j.rows for j in active)
        shape = active[0].shape[1:] if active else None
        taken = []
        while self._pending:
            job = self._pending[0]
            fits = (shape is None or job.shape[1:] == shape) and rows + job.rows <= self.max_rows
            if not fits:
                break
            taken.append(self._pending.popleft())
            rows, shape = rows + job.rows, job.shape[1:]
        self.metrics.queue_depth = len(self._pending)
        return taken

    def _run(self) -> None:
        active: list[Job] = []
        while True:
            with self._cv:
                while not self._pending and not active and not self._stopping:
                    self._cv.wait()
                if not self._pending and not active:
                    return  # stopping, and nothing left
                if not active and not self._stopping:  # idle: let companions sent at the same moment arrive
                    self._cv.wait_for(lambda: sum(j.rows for j in self._pending) >= self.max_rows,
                                      timeout=self.limits.batch_wait_ms / 1e3)
                taken = self._admit(active)
            for job in taken:
                job.timings["queue_s"] = time.perf_counter() - job.arrived
                start = time.perf_counter()
                try:
                    job.state = self.pipe.start(job.request, job.scheduler)
                except DifftrtError as exc:
                    _fail(job, exc)
                    continue
                except Exception as exc:  # the text encoder failed: this request's error, not the loop's end
                    _fail(job, EngineError(f"the text encoder failed: {type(exc).__name__}: {first_line(exc)}"))
                    continue
                job.timings["encode_s"] = time.perf_counter() - start
                job.timings["denoise_start"] = time.perf_counter()
                active.append(job)
            for job in [j for j in active if j.cancelled.is_set()]:
                _fail(job, Cancelled("the client disconnected"))
            active = [j for j in active if not j.cancelled.is_set()]
            self.metrics.active = len(active)
            if not active:
                continue
            try:
                rows = self.pipe.step([j.state for j in active])
            except Exception as exc:  # an engine failure fails the requests it was serving, not the server
                error = EngineError(f"the U-Net failed: {type(exc).__name__}: {first_line(exc)}")
                for job in active:
                    _fail(job, error)
                active = []
                continue
            self.metrics.step(rows, len(active))
            for job in [j for j in active if j.state.done]:
                job.timings["denoise_s"] = time.perf_counter() - job.timings.pop("denoise_start")
                start = time.perf_counter()
                try:
                    result = self.pipe.finish(job.state)
                except Exception as exc:
                    _fail(job, EngineError(f"the VAE decoder failed: {first_line(exc)}"))
                    continue
                job.timings["decode_s"] = time.perf_counter() - start
                if not job.future.done():
                    job.future.set_result(result)
            active = [j for j in active if not j.state.done]
            self.metrics.active = len(active)


def _fail(job: Job, error: BaseException) -> None:
    if not job.future.done():  # a future someone cancelled must not end the loop with InvalidStateError
        job.future.set_exception(error)

"""Batch rendering on a Dask distributed cluster (``difftrt sample --prompts F --scheduler-address tcp://H:P``).

A worker plugin, named after the export, loads its engines once per worker and is removed when the run ends;
items go in tasks of a few each, keyed by a hash of the export and the items (so two runs sharing a cluster
never share a task); results (records and PNG bytes) stream back as tasks finish, are released on the workers,
and the client writes the files. A task on a worker that dies is re-run elsewhere by the scheduler (and after
``retries``, its items are recorded as failed); a hung worker is noticed only after the scheduler's
``distributed.scheduler.worker-ttl``, so lower it when starting the scheduler (README)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from distributed import Client, WorkerPlugin
from distributed import as_completed as dask_completed

from difftrt import render
from difftrt.errors import ArtifactError, first_line


class EnginePlugin(WorkerPlugin):
    """Loads an export's engines once per worker: difftrt must be installed there, the export folder readable
    at the same path."""

    def __init__(self, engine: str, threads: int) -> None:
        self.engine, self.threads = engine, threads

    def setup(self, worker: Any) -> None:
        render.load_worker(self.engine, self.threads)

    def teardown(self, worker: Any) -> None:
        render.WORKER.pop(self.engine, None)


def render_chunk(items: list[render.Item], factor: int, engine: str, identity: str,
                 threads: int) -> list[tuple[dict[str, Any], bytes | None]]:
    """One task: several items on this worker's engines for ``engine`` (loaded here if the plugin has not)."""
    render.load_worker(engine, threads)
    return [render.render_item(item, factor, engine, identity) for item in items]


def render_on_dask(items: list[render.Item], engine: str, identity: str, factor: int, address: str, threads: int,
                   chunk: int) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise ArtifactError(f"cannot reach the Dask scheduler at {address}: {first_line(exc)}") from None
    name = f"difftrt-engine-{identity[:16]}"
    try:
        client.register_plugin(EnginePlugin(engine, threads or 1), name=name)
        chunks = {}
        for i in range(0, len(items), chunk):
            part = items[i:i + chunk]
            digest = hashlib.sha256(json.dumps([identity, factor, [(it.index, it.params) for it in part]],
                                               sort_keys=True).encode()).hexdigest()[:24]
            future = client.submit(render_chunk, part, factor, engine, identity, threads or 1,
                                   key=f"difftrt-render-{digest}", retries=2)
            chunks[future] = part
        for future in dask_completed(list(chunks)):
            part = chunks.pop(future)
            try:
                results = future.result()  # streamed as each task ends
            except Exception as exc:  # its worker died more than ``retries`` times (KilledWorker), or it raised
                results = [(render.failure(item, exc), None) for item in part]
            future.release()  # the PNG bytes leave the workers' memory
            yield from results
    finally:
        try:
            client.unregister_worker_plugin(name)
        except Exception:  # the cluster may be gone already; nothing to clean then
            pass
        client.close()

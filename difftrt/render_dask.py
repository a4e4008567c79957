"""Batch rendering on a Dask distributed cluster (``difftrt sample --prompts F --scheduler-address tcp://H:P``).

A worker plugin loads the engines once per worker; items go in tasks of a few each; results (records and PNG
bytes) stream back as tasks finish and the client writes the files. A task on a worker that dies is re-run
elsewhere by the scheduler (``retries`` covers tasks that raise); a hung worker is noticed only after the
scheduler's ``distributed.scheduler.worker-ttl``, so lower it when starting the scheduler (README)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distributed import Client, WorkerPlugin, get_worker
from distributed import as_completed as dask_completed

from difftrt import render
from difftrt.errors import ArtifactError, first_line

PLUGIN = "difftrt-engine"


class EnginePlugin(WorkerPlugin):
    """Loads the engines once per worker: difftrt must be installed there, the engine folder readable at the
    same path."""

    def __init__(self, engine: str, threads: int) -> None:
        self.engine, self.threads = engine, threads

    def setup(self, worker: Any) -> None:
        render.load_worker(self.engine, self.threads)

    def teardown(self, worker: Any) -> None:
        render.WORKER.clear()


def render_chunk(items: list[render.Item], factor: int) -> list[tuple[dict[str, Any], bytes | None]]:
    """One task: several items on this worker's engines."""
    if "pipe" not in render.WORKER:  # a worker that joined after the plugin ran
        plugin = get_worker().plugins[PLUGIN]
        render.load_worker(plugin.engine, plugin.threads)
    return [render.render_item(item, factor) for item in items]


def render_on_dask(items: list[render.Item], engine: Path, factor: int, address: str, threads: int,
                   chunk: int) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise ArtifactError(f"cannot reach the Dask scheduler at {address}: {first_line(exc)}") from None
    try:
        client.register_plugin(EnginePlugin(str(Path(engine).resolve()), threads or 1), name=PLUGIN)
        chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
        futures = [client.submit(render_chunk, c, factor, key=f"difftrt-render-{c[0].index}-{c[-1].index}",
                                 retries=2) for c in chunks]
        for future in dask_completed(futures):
            yield from future.result()  # streamed as each task ends
    finally:
        client.close()

"""Where batch-rendered items run: this process, a spawn process pool, or a Dask cluster (``render_dask``); and
the one place their PNGs are written (``difftrt.render`` reads the items and renders one)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from difftrt.render import Item, engine_id, failure, load_worker, render_item


def _results(items: list[Item], engine: Path, factor: int, workers: int, threads: int, address: str | None,
             chunk: int) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    identity, folder = engine_id(engine), str(Path(engine).resolve())
    if address is not None:
        try:
            from difftrt.render_dask import render_on_dask
        except ImportError:
            from difftrt.errors import DependencyError

            raise DependencyError("--scheduler-address needs Dask: pip install 'difftrt[dask]'") from None
        yield from render_on_dask(items, folder, identity, factor, address, threads, chunk)
        return
    if workers <= 1:
        load_worker(folder, threads)
        for item in items:
            yield render_item(item, factor, folder, identity)
        return
    import multiprocessing

    per_worker = threads or max(1, (os.cpu_count() or 1) // workers)
    # spawn: a fresh interpreter per worker, never a fork of a process holding ONNX Runtime's threads
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=load_worker,
                               initargs=(folder, per_worker))
    try:
        futures = {pool.submit(render_item, item, factor, folder, identity): item for item in items}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as exc:  # a worker died (BrokenProcessPool): its items fail, the record says why
                yield failure(futures[future], exc), None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error here, queued items are not rendered for nobody


def render_items(items: list[Item], engine: Path, out_dir: Path, factor: int, workers: int = 1, threads: int = 0,
                 address: str | None = None, chunk: int = 4,
                 stats: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """Render ``items`` (none finished yet) locally (``workers`` processes) or on the Dask scheduler at
    ``address``, yielding each one's record as it completes. This process writes every PNG, atomically and once,
    so the workers need no shared output folder and a retried task cannot write an image twice (``stats``
    counts the results that arrived again: ``duplicates``)."""
    from difftrt.fileio import write_bytes_atomic

    written: set[int] = set()
    for record, png in _results(items, engine, factor, workers, threads, address, chunk):
        if record["index"] in written:
            if stats is not None:
                stats["duplicates"] = stats.get("duplicates", 0) + 1
            continue
        if png is not None:
            write_bytes_atomic(Path(out_dir) / record["file"], png)
        written.add(record["index"])
        yield record

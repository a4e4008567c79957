"""Batch rendering: a JSONL file of prompts -> one PNG per line, on a process pool (one engine load per worker).

    PROMPTS.jsonl   {"prompt": "a red circle", "seed": 7, "steps": 25, ...} per line (the HTTP API's fields)
    OUT/00007-seed7.png   line 8's image (index from 0), its parameters in the PNG's "difftrt" text chunk
    OUT/results.jsonl     one line per item and run: index, line, seed, file, seconds, or the error

Each PNG is written atomically, so a crash leaves whole images only, and a re-run skips every item whose PNG
exists with the same parameters: rendering resumes. A bad line is reported with its line number and the
others still render. A line without a seed gets ``default seed + index``, so a file renders the same
anywhere, with any number of workers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difftrt.errors import ArtifactError, DifftrtError, first_line

META_KEY = "difftrt"  # PNG text chunks: the request's parameters, and the export that rendered it
ENGINE_KEY = "difftrt-engine"
OPEN_LIMITS = {"max_steps": 10**6, "max_images": 64, "max_size": 1 << 16, "max_prompt_chars": 1 << 20}  # a local file


def check(params: dict[str, Any], factor: int) -> tuple[Any, str | None]:
    """A line's fields as a request (the HTTP API's fields and checks, without a network service's caps)."""
    from difftrt.serve.limits import ServeLimits, parse_request

    return parse_request(params, ServeLimits(**OPEN_LIMITS), factor)


@dataclass(frozen=True)
class Item:
    index: int  # position among the file's lines, from 0
    line: int  # line number, from 1
    params: dict[str, Any]  # the request's fields, seed included

    @property
    def file(self) -> str:
        return f"{self.index:05d}-seed{self.params['seed']}.png"


def read_items(path: Path, defaults: dict[str, Any], parse: Callable[[dict[str, Any]], Any],
               ) -> tuple[list[Item], list[dict]]:
    """Items, and one error record per bad line. ``parse`` checks a line's fields (raising ``DifftrtError``)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"cannot read --prompts {path}: {exc}") from None
    items, bad, index = [], [], 0
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            try:
                fields = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"not JSON ({exc})") from None
            if not isinstance(fields, dict):
                raise ValueError(f"expected a JSON object, got {type(fields).__name__}")
            fields = {k: v for k, v in fields.items() if v is not None}  # null: the default
            params = {**defaults, "seed": defaults.get("seed", 0) + index, **fields}
            parse(params)
        except (ValueError, DifftrtError) as exc:
            bad.append({"line": number, "index": index, "status": "error", "error": first_line(exc)})
        else:
            items.append(Item(index, number, params))
        index += 1
    return items, bad


def finished(out_dir: Path, item: Item, engine_id: str) -> bool:
    """The item's PNG is there, whole, with the same parameters, made by the same export."""
    from difftrt.images import png_text

    text = png_text(out_dir / item.file)
    return (text is not None and text.get(META_KEY) == json.dumps(item.params, sort_keys=True)
            and text.get(ENGINE_KEY) == engine_id)


def engine_id(folder: Path) -> str:
    """What names an export for resuming: its manifest's sha256 (the manifest holds every file's hash)."""
    from difftrt.artifact import manifest_digest

    return manifest_digest(folder)


WORKER: dict[str, Any] = {}  # engine folder -> (pipeline, artifact), loaded once per process
WORKER_LOCK = threading.Lock()  # one item at a time per process: an engine holds its allocated shapes


def load_worker(engine: str, threads: int) -> None:
    from difftrt.runtime import load_pipeline

    with WORKER_LOCK:
        if engine not in WORKER:
            WORKER[engine] = load_pipeline(Path(engine), threads=threads)


def failure(item: Item, exc: BaseException) -> dict[str, Any]:
    what = first_line(exc) if isinstance(exc, DifftrtError) else f"{type(exc).__name__}: {first_line(exc)}"
    return {"index": item.index, "line": item.line, "seed": item.params.get("seed"), "status": "error", "error": what}


def render_item(item: Item, factor: int, engine: str, identity: str) -> tuple[dict[str, Any], bytes | None]:
    """One item on this process's pipeline for ``engine`` -> (its record, its PNG with the parameters and the
    export's identity, or None on failure). One item's failure (a bad size, an engine error) is its record."""
    from difftrt.images import images_png
    from difftrt.schedulers import from_config

    start = time.perf_counter()
    try:
        with WORKER_LOCK:
            pipe, artifact = WORKER[engine]
            request, scheduler = check(item.params, factor)
            result = pipe(request, from_config(artifact.scheduler_config, scheduler))
    except Exception as exc:  # any failure is reported for its item
        return failure(item, exc), None
    text = {META_KEY: json.dumps(item.params, sort_keys=True), ENGINE_KEY: identity, "prompt": request.prompt}
    return {"index": item.index, "line": item.line, "seed": item.params["seed"], "file": item.file, "status": "ok",
            "seconds": round(time.perf_counter() - start, 3), "truncated": result.truncated}, images_png(result.images, text)

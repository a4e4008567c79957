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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from difftrt.errors import ArtifactError, DifftrtError, first_line

META_KEY = "difftrt"
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
            params = {**defaults, "seed": defaults.get("seed", 0) + index, **fields}
            parse(params)
        except (ValueError, DifftrtError) as exc:
            bad.append({"line": number, "index": index, "status": "error", "error": first_line(exc)})
        else:
            items.append(Item(index, number, params))
        index += 1
    return items, bad


def finished(out_dir: Path, item: Item) -> bool:
    """The item's PNG is there, whole, with the same parameters."""
    from difftrt.images import png_text

    text = png_text(out_dir / item.file)
    return text is not None and text.get(META_KEY) == json.dumps(item.params, sort_keys=True)


WORKER: dict[str, Any] = {}


def load_worker(engine: str, threads: int) -> None:
    from difftrt.runtime import load_pipeline

    WORKER["pipe"], WORKER["artifact"] = load_pipeline(Path(engine), threads=threads)


def render_item(item: Item, factor: int) -> tuple[dict[str, Any], bytes | None]:
    """One item in this process's pipeline -> (its record, its PNG with the parameters, or None on failure).
    One item's failure (a bad size, an engine error) is its record, not the end of the run."""
    from difftrt.images import images_png
    from difftrt.schedulers import from_config

    start = time.perf_counter()
    base = {"index": item.index, "line": item.line, "seed": item.params.get("seed")}
    try:
        pipe, artifact = WORKER["pipe"], WORKER["artifact"]
        request, scheduler = check(item.params, factor)
        result = pipe(request, from_config(artifact.scheduler_config, scheduler))
    except Exception as exc:  # any failure is reported for its item
        what = first_line(exc) if isinstance(exc, DifftrtError) else f"{type(exc).__name__}: {first_line(exc)}"
        return {**base, "status": "error", "error": what}, None
    png = images_png(result.images, {META_KEY: json.dumps(item.params, sort_keys=True), "prompt": request.prompt})
    return {**base, "file": item.file, "status": "ok", "seconds": round(time.perf_counter() - start, 3),
            "truncated": result.truncated}, png

"""``difftrt sample --prompts FILE.jsonl --out-dir DIR``: batch rendering (difftrt.render), resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from difftrt.cli.common import engine_or_default, progress_bar, say
from difftrt.errors import DifftrtError, OutputError, UsageError


class RenderFailed(DifftrtError):
    """Some items did not render (each is in results.jsonl with its reason)."""


def render_file(prompts: Path, out_dir: Path | None, workers: int, engine: Path | None, defaults: dict[str, Any],
                threads: int, quiet: bool, as_json: bool, address: str | None = None, verify: bool = False) -> None:
    from difftrt.artifact import Verify, open_artifact
    from difftrt.render import check, engine_id, finished, read_items
    from difftrt.render_run import render_items

    if out_dir is None:
        raise UsageError("--prompts needs --out-dir DIR (one PNG per line goes there)")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out-dir {out_dir} exists and is not a folder")
    tell = say(quiet)
    artifact = open_artifact(engine_or_default(engine, tell), verify=Verify.FULL if verify else Verify.QUICK)
    factor = artifact.config.latent_factor
    items, bad = read_items(prompts, defaults, lambda params: check(params, factor))
    for record in bad:
        click.echo(f"error: {prompts}:{record['line']}: {record['error']}", err=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    identity = engine_id(artifact.folder)
    todo = [item for item in items if not finished(out_dir, item, identity)]
    tell(f"{len(items) + len(bad)} lines: {len(items) - len(todo)} already rendered, {len(bad)} bad, "
         f"{len(todo)} to render " + (f"on the Dask cluster at {address}" if address else f"on {workers} worker(s)"))
    failed = list(bad)
    with open(out_dir / "results.jsonl", "a", encoding="utf-8") as results, \
            progress_bar(len(todo), quiet, "rendering") as bar:
        for record in bad:
            results.write(json.dumps(record) + "\n")
        for record in (render_items(todo, artifact.folder, out_dir, factor, workers, threads, address) if todo else ()):
            results.write(json.dumps(record) + "\n")
            results.flush()  # a line per finished item, even if the run is killed next
            bar.update(1)
            if record["status"] != "ok":
                failed.append(record)
                click.echo(f"error: {prompts}:{record['line']}: {record['error']}", err=True)
    summary = {"out_dir": str(out_dir), "lines": len(items) + len(bad), "rendered": len(todo) - len(failed) + len(bad),
               "skipped": len(items) - len(todo), "failed": len(failed)}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        tell(f"rendered {summary['rendered']}, skipped {summary['skipped']} already done, {len(failed)} failed")
    if failed:
        raise RenderFailed(f"{len(failed)} of {summary['lines']} lines failed (first: line {failed[0]['line']}: "
                           f"{failed[0]['error']}); see {out_dir / 'results.jsonl'}")

"""``difftrt serve``: the HTTP API over an export, with step-level batching (difftrt.serve)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import click

from difftrt.cli.common import engine_or_default, say
from difftrt.errors import DependencyError, UsageError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@click.command()
@click.option("--engine", type=click.Path(path_type=Path), default=None,
              help="Export folder. Default: the built-in default model.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on. Anything but loopback is reachable from other machines: add --token, "
                   "and TLS in front.")
@click.option("--port", type=int, default=8000, show_default=True, help="0: a free port (printed at start).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Server processes, each loading the engines once and batching its own requests.")
@click.option("--token", envvar="DIFFTRT_TOKEN", default=None,
              help="Require 'Authorization: Bearer TOKEN' on /v1/* (or set DIFFTRT_TOKEN).")
@click.option("--threads", type=int, default=0, help="ONNX Runtime threads per worker (0: cores / workers).")
@click.option("--max-steps", type=int, default=100, show_default=True)
@click.option("--max-images", type=int, default=4, show_default=True, help="num_images per request.")
@click.option("--max-size", type=int, default=1024, show_default=True, help="Pixels per side.")
@click.option("--max-queue", type=int, default=32, show_default=True,
              help="Requests waiting; beyond it: 503 with Retry-After.")
@click.option("--max-batch-rows", type=int, default=16, show_default=True,
              help="U-Net rows per merged step (a guided image is 2); capped by the export's range.")
@click.option("--batch-wait-ms", type=float, default=20.0, show_default=True,
              help="How long an idle server waits for companions before the first step.")
@click.option("--max-body-bytes", type=int, default=64 * 1024, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No access log or startup messages.")
def serve(engine, host, port, workers, token, threads, max_steps, max_images, max_size, max_queue, max_batch_rows,
          batch_wait_ms, max_body_bytes, quiet) -> None:
    """Serve an export over HTTP: POST /v1/images, GET /v1/models, /healthz, /metrics.

    Concurrent requests of one size are merged at every denoising step into one U-Net call; each keeps its own
    scheduler, steps, guidance and seed, and gets the image it would get alone.

    \b
      difftrt serve --engine export/shapes64 --port 8000
      curl -s localhost:8000/v1/images -d '{"prompt": "a red circle on the left", "seed": 1}' -o out.png
    """
    try:
        import starlette  # noqa: F401
        import uvicorn
        from uvicorn.supervisors import Multiprocess
    except ImportError as exc:
        raise DependencyError(f"serve needs starlette and uvicorn ({exc.name} is missing): "
                              "pip install 'difftrt[serve]'") from None
    from difftrt.artifact import open_artifact
    from difftrt.serve.factory import SETTINGS
    from difftrt.serve.limits import ServeLimits

    for name, value in (("--workers", workers), ("--max-steps", max_steps), ("--max-images", max_images),
                        ("--max-size", max_size), ("--max-queue", max_queue), ("--max-batch-rows", max_batch_rows),
                        ("--max-body-bytes", max_body_bytes)):
        if value < 1:
            raise UsageError(f"{name} must be >= 1, got {value}")
    if token is not None and not token.strip():
        raise UsageError("--token (or DIFFTRT_TOKEN) is empty: give a real token, or none to serve without one")
    if not 0 <= port <= 65535 or batch_wait_ms < 0 or threads < 0:
        raise UsageError("--port must be in 0-65535, --batch-wait-ms and --threads >= 0")
    tell = say(quiet)
    folder = open_artifact(engine_or_default(engine, tell)).folder  # a bad export fails here, before binding
    if host not in LOOPBACK:
        click.echo(f"warning: listening on {host}, reachable from other machines"
                   f"{'' if token else ' with no --token'}; put TLS in front", err=True)
    limits = ServeLimits(max_steps, max_images, max_size, max_body_bytes=max_body_bytes, max_queue=max_queue,
                         max_batch_rows=max_batch_rows, batch_wait_ms=batch_wait_ms)
    per_worker = threads or max(1, (os.cpu_count() or 1) // workers)
    os.environ[SETTINGS] = json.dumps({"engine": str(folder), "threads": per_worker, "token": token,
                                       "limits": dataclasses.asdict(limits)})
    config = uvicorn.Config("difftrt.serve.factory:app_from_env", factory=True, host=host, port=port, workers=workers,
                            log_level="warning" if quiet else "info", access_log=not quiet,
                            timeout_graceful_shutdown=120, lifespan="on")
    sock = config.bind_socket()
    bound = sock.getsockname()
    click.echo(f"difftrt serve: {folder.name} on http://{bound[0]}:{bound[1]} ({workers} worker(s), "
               f"{per_worker} thread(s) each)", err=True)
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler it found: make that one a no-op,
    # so a drained server exits 0 instead of dying of the signal it already handled
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    if workers > 1:
        import inspect

        older = "target" in inspect.signature(Multiprocess).parameters  # uvicorn < 0.30 wanted the server's run
        (Multiprocess(config, target=server.run, sockets=[sock]) if older else Multiprocess(config, sockets=[sock])).run()
    else:
        server.run(sockets=[sock])


COMMANDS = (serve,)

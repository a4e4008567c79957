"""The HTTP API (Starlette, an ASGI app served by uvicorn).

    POST /v1/images   JSON body (prompt, negative_prompt, steps, guidance, seed, scheduler, height, width,
                      num_images, eta) -> image/png (several images: one grid), or with ``Accept:
                      application/json`` {"images": [base64 PNG...], "seed", "timings": {...}, "truncated", ...}
    GET  /v1/models   what the manifest says the model is
    GET  /healthz     {"status": "ok"} once the engines are loaded
    GET  /metrics     Prometheus text

Every error is JSON {"error": {"status", "field" (for a bad field), "message"}} with a 4xx status for the
client's mistakes, 503 + Retry-After when the queue is full, 500 only when an engine fails — never a
traceback. With a token, /v1/* needs ``Authorization: Bearer TOKEN``."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from difftrt.errors import DifftrtError, EngineError
from difftrt.images import images_png, png_bytes
from difftrt.serve.batcher import Batcher, Cancelled, Overloaded
from difftrt.serve.limits import FieldError, ServeLimits, parse_request
from difftrt.serve.metrics import Metrics


def error(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"status": status, "message": message}
    if field is not None:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def validated_size(artifact: Any, pipe: Any) -> int:
    """The largest image side the export was validated at."""
    return artifact.specs["unet"].dim_range("latent_height").max * pipe.config.vae.downsample_factor


def model_card(artifact: Any, pipe: Any) -> dict[str, Any]:
    manifest = artifact.manifest
    return {"object": "list", "data": [{
        "id": artifact.folder.name, "object": "model", "source": manifest.get("source_checkpoint"),
        "default_size": pipe.config.vae.sample_size, "size_multiple": pipe.config.latent_factor,
        "scheduler": manifest["scheduler_config"].get("_class_name"),
        "prompt_tokens": pipe.tokenizer.max_length,
        "max_size": validated_size(artifact, pipe),
        "components": {n: {"precision": c["precision"], "dim_ranges": c["dim_ranges"]}
                       for n, c in manifest["components"].items()}}]}


def create_app(pipe: Any, artifact: Any, limits: ServeLimits = ServeLimits(), token: str | None = None) -> Starlette:
    """``limits.max_size`` is lowered to the largest side the export was validated at (a U-Net call beyond it
    is untested, and its memory unbounded), as the row cap is to the U-Net's batch range (``Batcher``)."""
    limits = replace(limits, max_size=min(limits.max_size, validated_size(artifact, pipe)))
    metrics = Metrics()
    batcher = Batcher(pipe, artifact.scheduler_config, limits, metrics)
    card = model_card(artifact, pipe)

    def authorised(request: Request) -> bool:
        if not token:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

    async def images(request: Request) -> Response:
        arrived = time.perf_counter()
        response = await _images(request)
        metrics.request(response.status_code, time.perf_counter() - arrived if response.status_code == 200 else None)
        return response

    def unauthorised() -> Response:
        return error(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def _images(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            return error(413, f"the body is over {limits.max_body_bytes} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                return error(413, f"the body is over {limits.max_body_bytes} bytes")
        try:
            parsed = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, f"the body is not JSON: {exc}")
        except RecursionError:
            return error(400, "the body is not JSON this server reads: nested too deeply")
        try:
            req, scheduler = parse_request(parsed, limits, pipe.config.latent_factor)
            job = batcher.job(req, scheduler)
        except FieldError as exc:
            return error(422, exc.message, exc.field)
        except DifftrtError as exc:
            return error(422, str(exc))
        try:
            future = batcher.submit(job)
        except Overloaded as exc:
            return error(503, f"overloaded: {exc}; retry later", headers={"Retry-After": "1"})
        waiting = asyncio.wrap_future(future)
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=0.05)
                if done:
                    break
                if await request.is_disconnected():
                    batcher.cancel(job)
                    await asyncio.wait({waiting})  # dropped at the next step boundary
                    return error(499, "the client disconnected")
        except asyncio.CancelledError:  # uvicorn gave up on this request (shutdown grace period over)
            batcher.cancel(job)
            raise
        try:
            result = waiting.result()
        except Cancelled as exc:
            return error(499, str(exc))
        except EngineError as exc:
            return error(500, str(exc))
        except DifftrtError as exc:
            return error(422, str(exc))
        timings = {k: round(v, 4) for k, v in job.timings.items()}
        if "application/json" in request.headers.get("accept", ""):
            encoded = [base64.b64encode(png_bytes(image)).decode() for image in result.images]
            return JSONResponse({"images": encoded, "seed": req.seed, "timings": timings,
                                 "truncated": result.truncated, "dropped": result.dropped,
                                 "unknown_words": list(result.unknown_words)})
        headers = {"X-Difftrt-Seed": str(req.seed), "X-Difftrt-Timings": json.dumps(timings)}
        return Response(images_png(result.images), media_type="image/png", headers=headers)

    async def models(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        return JSONResponse(card)

    async def healthz(request: Request) -> Response:
        if not batcher.alive:
            return error(503, "the batching loop is not running")
        return JSONResponse({"status": "ok"})

    async def metrics_text(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, str(exc.detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        return error(500, f"internal error: {type(exc).__name__}")

    @asynccontextmanager
    async def lifespan(app: Starlette):
        batcher.start()
        yield
        await asyncio.to_thread(batcher.stop)  # after uvicorn has drained the connections: nothing is cut short

    app = Starlette(routes=[Route("/v1/images", images, methods=["POST"]), Route("/v1/models", models),
                            Route("/healthz", healthz), Route("/metrics", metrics_text)],
                    exception_handlers={HTTPException: http_error, Exception: server_error}, lifespan=lifespan)
    app.state.metrics, app.state.batcher = metrics, batcher
    return app

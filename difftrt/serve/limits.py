"""What a request may ask for, and its JSON body turned into a ``SampleRequest`` (or a ``FieldError`` naming the
field): a network service caps every size a client controls."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from difftrt.errors import DifftrtError
from difftrt.pipeline import SampleRequest


@dataclass(frozen=True)
class ServeLimits:
    max_steps: int = 100
    max_images: int = 4  # per request
    max_size: int = 1024  # pixels per side
    max_prompt_chars: int = 2000
    max_body_bytes: int = 64 * 1024
    max_queue: int = 32  # requests waiting; beyond it a request gets 503 with Retry-After
    max_batch_rows: int = 16  # U-Net rows per merged call (a guided image is 2 rows); at most the export's range
    batch_wait_ms: float = 20.0  # an idle server waits this long for companions before the first step


class FieldError(DifftrtError):
    """A request field is missing, of the wrong type or out of bounds."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


FIELDS = ("prompt", "negative_prompt", "steps", "guidance", "seed", "scheduler", "height", "width", "num_images", "eta")


def _int(body: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(name, f"must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise FieldError(name, f"must be in [{lo}, {hi}], got {value}")
    return value


def _float(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FieldError(name, f"must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise FieldError(name, f"must be in [{lo:g}, {hi:g}], got {value:g}")
    return float(value)


def _str(body: dict[str, Any], name: str, default: str | None, limit: int) -> str:
    value = body.get(name, default)
    if value is None:
        raise FieldError(name, "is required")
    if not isinstance(value, str):
        raise FieldError(name, f"must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise FieldError(name, f"is {len(value)} characters; the limit is {limit}")
    return value


def parse_request(body: Any, limits: ServeLimits, factor: int) -> tuple[SampleRequest, str | None]:
    """A JSON body -> (request, scheduler name or None for the model's own); ``factor``: the size multiple."""
    if not isinstance(body, dict):
        raise FieldError("body", f"must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise FieldError(unknown[0], f"is not a field; known: {', '.join(FIELDS)}")
    scheduler = body.get("scheduler")
    if scheduler is not None and not isinstance(scheduler, str):
        raise FieldError("scheduler", f"must be a string, got {type(scheduler).__name__}")
    sizes = {}
    for name in ("height", "width"):
        sizes[name] = _int(body, name, None, factor, limits.max_size)
        if sizes[name] is not None and sizes[name] % factor:
            raise FieldError(name, f"must be a multiple of {factor}, got {sizes[name]}")
    request = SampleRequest(
        prompt=_str(body, "prompt", None, limits.max_prompt_chars),
        negative_prompt=_str(body, "negative_prompt", "", limits.max_prompt_chars),
        steps=_int(body, "steps", 25, 1, limits.max_steps) or 25,
        guidance=_float(body, "guidance", 5.0, 0.0, 50.0),
        seed=_int(body, "seed", 0, 0, 2**63 - 1) or 0,
        num_images=_int(body, "num_images", 1, 1, limits.max_images) or 1,
        eta=_float(body, "eta", 0.0, 0.0, 1.0), **sizes)
    return request, scheduler

"""Keep difftrt offline: no telemetry, no hub downloads.

onnxruntime's Linux wheel starts native telemetry threads (DNS lookups of a telemetry host, files under
``~/.cache/Microsoft``) unless ``ORT_DISABLE_TELEMETRY=1`` is in the environment before it loads.
Hugging Face libraries try to download unless told they are offline. These defaults apply only where the
user has not set the variable: ``ORT_DISABLE_TELEMETRY=0`` opts back in.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

OFFLINE_DEFAULTS = {
    "ORT_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
}


def apply_offline_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Set each offline variable the user has not set. Call before onnxruntime (or a hub library) loads."""
    environ = os.environ if environ is None else environ
    for key, value in OFFLINE_DEFAULTS.items():
        environ.setdefault(key, value)

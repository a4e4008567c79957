"""The app uvicorn starts in each worker process: ``difftrt serve`` passes its settings in the environment
(``DIFFTRT_SERVE_SETTINGS``, JSON), and every worker loads the engines once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SETTINGS = "DIFFTRT_SERVE_SETTINGS"


def app_from_env() -> Any:
    from difftrt.runtime import load_pipeline
    from difftrt.serve.app import create_app
    from difftrt.serve.limits import ServeLimits

    settings = json.loads(os.environ[SETTINGS])
    pipe, artifact = load_pipeline(Path(settings["engine"]), threads=settings["threads"])
    return create_app(pipe, artifact, ServeLimits(**settings["limits"]), settings.get("token"))

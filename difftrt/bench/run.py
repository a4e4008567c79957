"""``difftrt bench``: the ONNX Runtime pipeline, and (when torch is installed) the same model in torch eager on
the same request in the same process, with per-stage ratios and the latent difference between the two."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Any

from difftrt.artifact import Artifact, library_versions
from difftrt.bench.e2e import bench_pipeline, max_abs_diff, ratio
from difftrt.bench.timing import machine, peak_rss_mib
from difftrt.errors import ArtifactError
from difftrt.pipeline import SampleRequest, Text2ImagePipeline
from difftrt.runtime import load_pipeline
from difftrt.schedulers import from_config

log = logging.getLogger(__name__)


def _torch_checkpoint(artifact: Artifact, ckpt: Path | None) -> Any:
    """The checkpoint the artifact was exported from: ``ckpt``, its recorded folder, or the default model."""
    from difftrt import default_model
    from difftrt.models import checkpoint

    source = artifact.manifest.get("source_checkpoint")
    if ckpt is not None:
        return checkpoint.load(ckpt)
    if source == default_model.SOURCE:
        return checkpoint.create(default_model.CONFIG, seed=default_model.SEED)
    if source and Path(source).is_dir():
        return checkpoint.load(Path(source))
    raise ArtifactError(f"cannot find the checkpoint {source!r} this export came from; pass --ckpt or --no-torch")


def run_bench(engine: Path, request: SampleRequest, runs: int, warmup: int, threads: int = 0,
              with_torch: bool = True, ckpt: Path | None = None, scheduler: str | None = None) -> dict[str, Any]:
    pipe, artifact = load_pipeline(engine, threads=threads)
    make_scheduler = lambda: from_config(artifact.scheduler_config, scheduler)  # noqa: E731
    result: dict[str, Any] = {
        "command": " ".join(["difftrt"] + sys.argv[1:]),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "versions": library_versions(), "engine": str(artifact.folder),
        "scheduler": type(make_scheduler()).__name__,
        "request": {"prompt": request.prompt, "steps": request.steps, "guidance": request.guidance,
                    "num_images": request.num_images, "seed": request.seed, "runs": runs, "warmup": warmup,
                    "ort_threads": threads or "default"},
        "backends": {},
    }
    ort = bench_pipeline(pipe, make_scheduler, request, runs, warmup)
    result["backends"]["onnxruntime-cpu"] = {"stages": ort["stages"], "peak_rss_mib_after": peak_rss_mib()}
    if with_torch:
        import torch

        from difftrt.backends.torch_ref import torch_engines

        reference = Text2ImagePipeline(torch_engines(_torch_checkpoint(artifact, ckpt)), pipe.tokenizer, pipe.config)
        ref = bench_pipeline(reference, make_scheduler, request, runs, warmup)
        result["backends"]["torch-eager-cpu"] = {"stages": ref["stages"], "peak_rss_mib_after": peak_rss_mib(),
                                                 "torch_threads": torch.get_num_threads()}
        result["ratio"] = {"label": "torch/ORT", "stages": ratio(ref, ort)}
        result["fidelity"] = {"max_abs_latent_diff_ort_vs_torch": max_abs_diff(ort["latents"], ref["latents"])}
    return result

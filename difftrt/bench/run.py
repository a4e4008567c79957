"""``difftrt bench`` and ``difftrt eval``: the ONNX Runtime pipeline and, on request, the same checkpoint in torch
on the same inputs in the same process; every record says what ran where, when and with which versions."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from difftrt.artifact import library_versions
from difftrt.bench.e2e import bench_pipeline, max_abs_diff, ratio
from difftrt.bench.reference import torch_reference
from difftrt.bench.timing import peak_rss_mib, record_header
from difftrt.pipeline import SampleRequest
from difftrt.runtime import load_pipeline
from difftrt.schedulers import from_config

log = logging.getLogger(__name__)


def provenance(artifact: Any, scheduler_name: str) -> dict[str, Any]:
    """The fields every recorded result starts with: command, date, machine, versions, engine, scheduler."""
    return {**record_header(" ".join(["difftrt"] + sys.argv[1:]), library_versions()),
            "engine": str(artifact.folder), "scheduler": scheduler_name}


def run_bench(engine: Path, request: SampleRequest, runs: int, warmup: int, threads: int = 0,
              with_torch: bool = True, ckpt: Path | None = None, scheduler: str | None = None) -> dict[str, Any]:
    pipe, artifact = load_pipeline(engine, threads=threads)
    make_scheduler = lambda: from_config(artifact.scheduler_config, scheduler)  # noqa: E731
    result: dict[str, Any] = {
        **provenance(artifact, type(make_scheduler()).__name__),
        "request": {"prompt": request.prompt, "steps": request.steps, "guidance": request.guidance,
                    "num_images": request.num_images, "seed": request.seed, "runs": runs, "warmup": warmup,
                    "ort_threads": threads or "default"},
        "backends": {},
    }
    ort = bench_pipeline(pipe, make_scheduler, request, runs, warmup)
    result["backends"]["onnxruntime-cpu"] = {"stages": ort["stages"], "peak_rss_mib_after": peak_rss_mib()}
    if with_torch:
        import torch

        ref = bench_pipeline(torch_reference(artifact, pipe, ckpt), make_scheduler, request, runs, warmup)
        result["backends"]["torch-eager-cpu"] = {"stages": ref["stages"], "peak_rss_mib_after": peak_rss_mib(),
                                                 "torch_threads": torch.get_num_threads()}
        result["ratio"] = {"label": "torch/ORT", "stages": ratio(ref, ort)}
        result["fidelity"] = {"max_abs_latent_diff_ort_vs_torch": max_abs_diff(ort["latents"], ref["latents"])}
    return result


def evaluation_record(engine: Path, n_prompts: int, prompt_seed: int, steps: int, guidance: float, seed: int,
                      scheduler: str | None, with_torch: bool, ckpt: Path | None) -> tuple[dict, Any]:
    """``difftrt eval``: fidelity of the ONNX Runtime engines (and the torch checkpoint) on grammar prompts."""
    from difftrt.data.shapes import eval_prompts
    from difftrt.evaluate import agreement, evaluate, format_table

    pipe, artifact = load_pipeline(engine)
    make_scheduler = lambda: from_config(artifact.scheduler_config, scheduler)  # noqa: E731
    prompts = eval_prompts(prompt_seed, n_prompts)
    ort = evaluate(pipe, make_scheduler, prompts, steps, guidance, seed)
    record: dict[str, Any] = {
        **provenance(artifact, type(make_scheduler()).__name__), "prompt_seed": prompt_seed, **ort["settings"],
        "accuracy": {"onnxruntime-cpu": ort["accuracy"]}, "table": format_table(ort),
        "verdicts": ort["verdicts"],
    }
    if with_torch:
        ref = evaluate(torch_reference(artifact, pipe, ckpt), make_scheduler, prompts, steps, guidance, seed)
        record["accuracy"]["torch-fp32-cpu"] = ref["accuracy"]
        record["agreement_ort_vs_torch"] = agreement(ort["verdicts"], ref["verdicts"])
        record["max_abs_pixel_diff_ort_vs_torch"] = int(abs(ort["images"].astype(int) - ref["images"]).max())
    return record, ort["images"]

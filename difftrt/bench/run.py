"""``difftrt bench`` and ``difftrt eval``: every backend on the same inputs in the same process, fidelity next to
speed, the distance to the machine's matmul peak; every record says what ran where, when and with which versions."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from difftrt.artifact import library_versions
from difftrt.bench.contenders import REFERENCE, Contender, onnx_contenders, tensorrt_contender, torch_contenders
from difftrt.bench.e2e import bench_round_robin, max_abs_diff, psnr_db
from difftrt.bench.peak import cpu_flags, matmul_peak, native_bf16
from difftrt.bench.reference import torch_reference
from difftrt.bench.timing import peak_rss_mib, record_header
from difftrt.errors import DifftrtError, first_line
from difftrt.pipeline import SampleRequest
from difftrt.runtime import load_pipeline
from difftrt.schedulers import from_config

log = logging.getLogger(__name__)
SCHEMA, SCHEMA_VERSION = "difftrt-bench", 2


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance(artifact: Any, scheduler_name: str) -> dict[str, Any]:
    """The fields every recorded result starts with: command, date, machine, versions, engine, scheduler."""
    header = record_header(" ".join(["difftrt"] + sys.argv[1:]), library_versions())
    header["machine"]["cpu_flags"] = cpu_flags()
    return {**header, "commit": git_commit(), "engine": str(artifact.folder), "scheduler": scheduler_name}


def unet_shapes(pipe: Any, request: SampleRequest) -> dict[str, tuple[int, ...]]:
    """The U-Net's input shapes for one call of ``request`` (2N rows when guided)."""
    n, _, h, w = pipe.latent_shape(request)
    dims = {"batch": n * (2 if request.guidance != 1.0 else 1), "latent_height": h, "latent_width": w}
    return {t.name: tuple(dims[d] if isinstance(d, str) else d for d in t.shape) for t in pipe.engines["unet"].spec.inputs}


def roofline(artifact: Any, pipe: Any, request: SampleRequest, flags: dict[str, bool]) -> dict[str, Any]:
    """FLOPs of one U-Net call from the ONNX graph and the matmul peaks measured now (fp32; bf16 if native)."""
    out: dict[str, Any] = {}
    try:
        from difftrt.bench.flops import graph_flops

        out["unet_call"] = graph_flops(artifact.path("unet"), unet_shapes(pipe, request))
    except ImportError as exc:
        out["unet_call"] = {"unavailable": f"counting FLOPs needs onnx ({exc.name} missing): pip install 'difftrt[export]'"}
    try:
        out["peak"] = {"float32": matmul_peak("float32")}
        out["peak"]["bfloat16"] = (matmul_peak("bfloat16") if native_bf16(flags)
                                   else {"unavailable": "no native bf16 on this CPU"})
    except ImportError:
        out["peak"] = {"unavailable": "measuring the matmul peak needs torch: pip install 'difftrt[export]'"}
    return out


def row_of(contender: Contender, measured: dict[str, Any] | None, reference: dict[str, Any] | None,
           threads: dict[str, Any], roof: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"name": contender.name, "kind": contender.kind, "precision": contender.precision,
                           "note": contender.note}
    if measured is None or "error" in measured:
        return {**row, "ran": False, "reason": contender.reason if measured is None else measured["error"]}
    result = measured["result"]
    row.update(ran=True, threads=threads[contender.kind], stages=measured["stages"], raw_ms=measured["raw_ms"],
               images_per_s=measured["images_per_s"], unet_steps_per_s=measured["unet_steps_per_s"],
               finite=bool((abs(result.latents) < float("inf")).all()))
    if reference is not None and reference is not measured:
        ref = reference["result"]
        row["fidelity"] = {"max_abs_latents_vs_reference": max_abs_diff(result.latents, ref.latents),
                           "psnr_db_vs_reference": psnr_db(result.images, ref.images)}
    flops, peak = roof.get("unet_call", {}).get("total"), roof.get("peak", {}).get(contender.peak_dtype, {})
    if flops:
        achieved = flops / (measured["stages"]["unet_call"]["median_ms"] / 1e3) / 1e9
        row["roofline"] = {"unet_call_gflops": achieved, "peak_dtype": contender.peak_dtype,
                           "fraction_of_peak": achieved / peak["best_gflops"] if "best_gflops" in peak else None}
    return row


def prompt_fidelity(rows: list[dict[str, Any]], pipes: dict[str, Any], make_scheduler: Callable[[], Any],
                    request: SampleRequest, n_prompts: int, progress: Callable[[str], None]) -> None:
    """``difftrt eval``'s attribute accuracy per precision (one row of each precision, the reference first), on
    the same held-apart prompts and seeds; added to those rows as ``prompt_fidelity``."""
    from difftrt.data.shapes import eval_prompts
    from difftrt.evaluate import evaluate

    prompts = eval_prompts(2026, n_prompts)
    seen: set[tuple[str, str]] = set()
    for row in sorted((r for r in rows if r["ran"]), key=lambda r: r["name"] != REFERENCE):
        key = (row["kind"], row["precision"])
        if key in seen:
            continue
        seen.add(key)
        progress(f"prompt fidelity of {row['name']}: {n_prompts} prompts")
        result = evaluate(pipes[row["name"]], make_scheduler, prompts, request.steps, request.guidance, request.seed)
        row["prompt_fidelity"] = {"prompts": n_prompts, "prompt_seed": 2026, "accuracy": result["accuracy"]}


def paired(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Median and p10/p90 of the per-round ratios numerator[r] / denominator[r] (round-robin rounds)."""
    ratios = np.asarray(numerator, dtype=np.float64) / np.asarray(denominator, dtype=np.float64)
    return {"median": float(np.median(ratios)), "p10": float(np.percentile(ratios, 10)),
            "p90": float(np.percentile(ratios, 90)), "n": int(ratios.size)}


def headline(rows: list[dict[str, Any]], reference: str | None) -> dict[str, Any]:
    """End-to-end speed-ups against the reference and against the strongest torch: paired per round (median and
    p10/p90 of reference_total[r] / row_total[r]) and, for ``--compare``, as ratios of medians."""
    ran = {r["name"]: r for r in rows if r["ran"]}
    total = {n: r["stages"]["total"]["median_ms"] for n, r in ran.items()}
    rounds = {n: r["raw_ms"]["total"] for n, r in ran.items()}
    torch_rows = [n for n, r in ran.items() if r["kind"] == "torch"]
    strongest = min(torch_rows, key=total.__getitem__) if torch_rows else None
    out: dict[str, Any] = {"reference": reference, "strongest_torch": strongest}
    for key, base in (("reference", reference), ("strongest_torch", strongest)):
        out[f"speedup_vs_{key}"] = {n: total[base] / t for n, t in total.items()} if base else {}
        out[f"paired_vs_{key}"] = {n: paired(rounds[base], rounds[n]) for n in ran} if base else {}
    return out


def run_bench(engine: Path, request: SampleRequest, runs: int, warmup: int, threads: int = 0,
              with_torch: bool = True, ckpt: Path | None = None, scheduler: str | None = None,
              fp16_engine: Path | None = None, trt_engine: Path | None = None, compile_: bool = False,
              eval_prompts: int = 0, sweep: bool = False, cold_runs: int = 0,
              progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    threads = threads or os.cpu_count() or 1
    pipe, artifact = load_pipeline(engine, threads=threads)
    make_scheduler = lambda: from_config(artifact.scheduler_config, scheduler)  # noqa: E731
    flags = cpu_flags()
    options = pipe.engines["unet"].session.get_session_options()  # read back: what ONNX Runtime was given
    used = {"onnxruntime": {"intra_op": options.intra_op_num_threads}, "tensorrt": None}
    contenders = onnx_contenders(pipe, fp16_engine, threads)
    if with_torch:
        import torch

        torch.set_num_threads(threads)
        used["torch"] = {"intra_op": torch.get_num_threads()}
        contenders += torch_contenders(artifact, pipe, ckpt, flags, compile_)
    contenders.append(tensorrt_contender(trt_engine))
    pipes = {}
    for c in contenders:
        if c.make is not None:
            try:
                pipes[c.name] = c.make()
            except Exception as exc:  # as at run time (e2e): the row says why, the others are still timed
                reason = str(exc) if isinstance(exc, DifftrtError) else f"failed: {type(exc).__name__}: {first_line(exc)}"
                contenders[contenders.index(c)] = Contender(c.name, c.kind, c.precision, None, reason)
    progress(f"timing {len(pipes)} backends round-robin: {runs} runs after {warmup} warm-up")
    measured = bench_round_robin(pipes, make_scheduler, request, runs, warmup, progress)
    progress("counting U-Net FLOPs and measuring the matmul peak")
    roof = roofline(artifact, pipe, request, flags)
    usable = {name: m for name, m in measured.items() if "error" not in m}
    reference_name = next((n for n in (REFERENCE, "onnxruntime fp32", *usable) if n in usable), None)
    reference = usable.get(reference_name) if reference_name else None
    rows = [row_of(c, measured.get(c.name), reference, used, roof) for c in contenders]
    if eval_prompts:
        prompt_fidelity(rows, pipes, make_scheduler, request, eval_prompts, progress)
    record = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION,
              **provenance(artifact, type(make_scheduler()).__name__),
              "request": {"prompt": request.prompt, "steps": request.steps, "guidance": request.guidance,
                          "num_images": request.num_images, "seed": request.seed, "height": request.height,
                          "width": request.width, "runs": runs, "warmup": warmup},
              "threads": used, "roofline": roof, "rows": rows, "headline": headline(rows, reference_name),
              "peak_rss_mib_process": peak_rss_mib()}
    if sweep:
        record["sweeps"] = sweeps(pipe, pipes, record["headline"], make_scheduler, request, runs, progress)
    if cold_runs:
        progress(f"cold starts: {cold_runs} fresh processes per path")
        record["cold_start"] = cold(artifact, engine, ckpt, with_torch, request, threads, cold_runs)
    return record


def sweeps(pipe: Any, pipes: dict[str, Any], head: dict[str, Any], make_scheduler: Callable[[], Any],
           request: SampleRequest, runs: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Batch, steps and size around ``request`` for ONNX Runtime fp32 and the strongest torch."""
    from difftrt.bench.sweeps import run_sweeps, sweep_points

    names = [n for n in ("onnxruntime fp32", head["strongest_torch"]) if n in pipes]
    cfg, spec = pipe.config, pipe.engines["vae_decoder"].spec
    points = sweep_points(request, spec.dim_range("batch").max, cfg.vae.sample_size,
                          spec.dim_range("latent_height").max * cfg.vae.downsample_factor, cfg.latent_factor)
    return run_sweeps({n: pipes[n] for n in names}, make_scheduler, points, max(2, runs // 3), progress)


def cold(artifact: Any, engine: Path, ckpt: Path | None, with_torch: bool, request: SampleRequest, threads: int,
         runs: int) -> dict[str, Any]:
    import tempfile

    from difftrt import default_model
    from difftrt.bench.coldstart import cold_starts

    source = artifact.manifest.get("source_checkpoint")
    torch_source = str(ckpt) if ckpt else "default" if source == default_model.SOURCE else source
    with tempfile.TemporaryDirectory(prefix="difftrt-cold-") as folder:
        return cold_starts(engine, torch_source if with_torch else None, request.steps, request.guidance,
                           request.prompt, threads, runs, Path(folder))


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

"""One command that measures every GPU path difftrt has, for the few sessions lent a GPU (benchmarks/README.md).

    python benchmarks/gpu_check.py --out $OUT --commit SHA                  # the lent H200: about 5 minutes
    python benchmarks/gpu_check.py --device cpu --tiny --runs 1 --out DIR   # the same flow on CPU at test size

Sections, each recorded even when it fails (the exact error is the result then):
  environment   the device, driver and versions
  bundled       the shapes64 model through difftrt's pipeline: every torch variant, resident loop vs host loop,
                per-module latency, end to end, peak memory, PSNR against the CPU fp32 image
  scheduler     the scheduler loop on device arrays (CuPy, torch) against the host NumPy loop: time and parity
  sd15          the SD-1.5 U-Net / VAE / CLIP architecture with random weights (512², 25 steps, guidance 7.5):
                per-module latency per variant, end to end, peak memory, PSNR against strict fp32, and one
                U-Net call on the CPU in fp32 against the GPU's strict fp32
  tensorrt      whether TensorRT or TensorRT-RTX imports here, and what a plan does (result or exact failure)
  onnxruntime   whether the CUDA execution provider exists; if so the bundled model through IO binding
Writes gpu-<device>-<date>.json (every number) and .md (the tables) into --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain copy of the tree

from difftrt.offline import apply_offline_defaults  # noqa: E402

apply_offline_defaults()

from difftrt.arrays import namespace, to_host  # noqa: E402
from difftrt.bench.device import (allocated_mib, device_record, peak_mib, reset_peak, strict_fp32,  # noqa: E402
                                  synchronizer, time_calls, torch_variants)

PROMPT = "a large red circle on the left on a white background"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


class Budget:
    """Stops starting new work once the command's time budget is spent (what was skipped says so)."""

    def __init__(self, seconds: float) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def check(self, what: str) -> None:
        if self.left() <= 0:
            raise TimeoutError(f"skipped {what}: the {self.seconds:.0f} s budget is spent")


def pipeline_rows(label: str, engines: dict[str, Any], tokenizer: Any, cfg: Any, scheduler_config: dict,
                  request: Any, device: str, runs: int, reference: Any | None) -> dict[str, Any]:
    """End-to-end and per-module numbers of one variant through difftrt's pipeline; ``reference``: the reference
    row's ``SampleResult`` (PSNR of the image, relative error of the final latents)."""
    from difftrt.pipeline import Text2ImagePipeline
    from difftrt.schedulers import from_config

    sync = synchronizer(device)
    reset_peak(device)
    baseline = allocated_mib(device)  # what earlier rows (and the original weights) still hold
    pipe = Text2ImagePipeline(engines, tokenizer, cfg)
    first = pipe(request, from_config(scheduler_config, "ddim"))  # warm-up: allocation, capture, compile
    e2e = time_calls(lambda: pipe(request, from_config(scheduler_config, "ddim")), runs, 0, sync)
    result = pipe(request, from_config(scheduler_config, "ddim"))
    peak = peak_mib(device)
    row: dict[str, Any] = {"variant": label, "end_to_end": e2e, "peak_gpu_mib": peak,
                           "peak_gpu_mib_above_baseline": None if peak is None else round(peak - baseline, 1),
                           "finite": bool(np.isfinite(result.latents).all()),
                           "deterministic": bool(np.array_equal(first.images, result.images)),
                           "images_per_s": request.num_images / (e2e["median_ms"] / 1e3)}
    if reference is not None:
        row["psnr_db_vs_reference"] = psnr(result.images, reference.images)
        scale = float(np.abs(reference.latents).max())
        row["latents_rel_err_vs_reference"] = float(np.abs(result.latents - reference.latents).max()) / scale
    row["modules"] = module_latency(pipe, request, runs, sync)
    row["unet_steps_per_s"] = 1e3 / row["modules"]["unet_guided_call"]["median_ms"]
    row["result"] = result
    return row


def module_latency(pipe: Any, request: Any, runs: int, sync: Any) -> dict[str, Any]:
    """Each component alone on the request's shapes, synchronised per call (TensorRT demo's per-module table)."""
    shape = pipe.latent_shape(request)
    x = pipe.engines["unet"].asarray(np.random.default_rng(0).standard_normal(shape, dtype=np.float32), "float32")
    cond, _ = pipe.encode_prompt([request.prompt] * request.num_images)
    context = namespace(cond).concat([cond, cond])
    xx = namespace(x).concat([x, x])
    unet, decoder = pipe.components["unet"], pipe.components["vae_decoder"]
    return {"text_encoder": time_calls(lambda: pipe.encode_prompt([request.prompt] * request.num_images), runs, 2, sync),
            "unet_guided_call": time_calls(lambda: unet(xx, 500.0, context), runs, 2, sync),
            "vae_decoder": time_calls(lambda: decoder(x), runs, 2, sync)}


def bundled(args: argparse.Namespace, budget: Budget) -> dict[str, Any]:
    from difftrt.backends.torch_ref import torch_engines
    from difftrt.default_model import load_checkpoint
    from difftrt.pipeline import SampleRequest

    ckpt = load_checkpoint()
    request = SampleRequest(PROMPT, steps=args.steps, guidance=5.0, seed=0)
    cpu_ref = pipeline_rows("torch fp32 CPU (reference)", torch_engines(ckpt), ckpt.tokenizer, ckpt.config,
                            ckpt.scheduler_config, request, "cpu", max(1, args.runs // 2), None)
    rows, reference = [cpu_ref], cpu_ref["result"]
    strict_fp32(True)  # fp32 rows are fp32: no TF32 convolutions
    try:
        for label, options, resident in torch_variants(args.device, args.compile):
            rows.append(guarded(label, budget, lambda o=options, r=resident, lab=label: pipeline_rows(
                lab, torch_engines(ckpt, args.device, options=o, resident=r), ckpt.tokenizer, ckpt.config,
                ckpt.scheduler_config, request, args.device, args.runs, reference)))
    finally:
        strict_fp32(False)
    return {"model": "shapes64 (bundled)", "request": {"steps": args.steps, "guidance": 5.0, "size": 64,
                                                       "scheduler": "ddim", "fp32": "strict (TF32 off)"}, "rows": rows}


def scheduler_loop(args: argparse.Namespace, budget: Budget) -> dict[str, Any]:
    """The loop with a closed-form stand-in for the U-Net, so only the loop's own cost and placement count."""
    from difftrt.bench.sd15 import SD15_SCHEDULER
    from difftrt.sampling import denoise_loop
    from difftrt.schedulers import from_config

    def model(x: Any, t: float) -> Any:
        return namespace(x).tanh(x) * 0.7

    libraries: dict[str, Any] = {"numpy (host)": lambda a: a}
    if args.device.startswith("cuda"):
        import torch

        libraries["torch (cuda)"] = lambda a: torch.as_tensor(a, device="cuda")
        try:
            import cupy

            libraries["cupy (cuda)"] = cupy.asarray
        except ImportError as exc:
            libraries["cupy (cuda)"] = exc
    else:
        import torch

        libraries["torch (cpu)"] = torch.from_numpy
    sync = synchronizer(args.device)
    rows = []
    for name in ("ddim", "euler-a", "dpm++2m"):
        for batch in (1, 8):
            x0 = np.random.default_rng(batch).standard_normal((batch, 4, 64, 64), dtype=np.float32)
            results: dict[str, np.ndarray] = {}
            for lib, to_lib in libraries.items():
                if isinstance(to_lib, Exception):
                    rows.append({"scheduler": name, "batch": batch, "library": lib, "error": str(to_lib)})
                    continue

                def loop(to_lib: Any = to_lib) -> Any:
                    sched = from_config(SD15_SCHEDULER, name)
                    sched.set_timesteps(args.sd_steps)
                    x = to_lib(x0 * sched.init_noise_sigma)
                    return denoise_loop(sched, model, x, sched.timesteps, np.random.default_rng(0))

                results[lib] = to_host(loop())
                row = {"scheduler": name, "batch": batch, "library": lib, "steps": args.sd_steps,
                       "loop": time_calls(loop, args.runs, 1, sync)}
                row["max_abs_vs_numpy"] = float(np.abs(results[lib] - results["numpy (host)"]).max())
                rows.append(row)
    return {"latents": "(batch, 4, 64, 64)", "rows": rows}


def sd15(args: argparse.Namespace, budget: Budget) -> dict[str, Any]:
    import torch

    from difftrt.backends.torch_ref import TorchEngine
    from difftrt.bench.sd15 import SD15, TINY, model_config, random_modules
    from difftrt.models.specs import component_specs
    from difftrt.models.tokenizer import Tokenizer
    from difftrt.pipeline import SampleRequest

    arch = TINY if args.tiny else SD15
    cfg = model_config(arch)
    specs = component_specs(cfg, max_batch=1)
    tokenizer = Tokenizer.default(cfg.text_encoder.max_length)
    build_start = time.perf_counter()
    modules = {n: m for n, m in random_modules(arch, seed=0, device=args.device).items() if n != "vae_encoder"}
    built_s = time.perf_counter() - build_start
    size = cfg.vae.sample_size
    request = SampleRequest(PROMPT, steps=args.sd_steps, guidance=7.5, seed=0, height=size, width=size)
    strict_fp32(True)
    try:
        reference = pipeline_rows("torch fp32 strict (reference)", {n: TorchEngine(m, specs[n], args.device,
                                  resident=True) for n, m in modules.items()}, tokenizer, cfg, arch.scheduler,
                                  request, args.device, max(1, args.runs // 2), None)
        cpu_check = unet_on_cpu(modules["unet"], specs["unet"], args.device)
    finally:
        strict_fp32(False)
    rows = [reference]
    for label, options, resident in torch_variants(args.device, args.compile, own_attention=False):
        if not resident or options.dtype == "float32" and not options.autocast and not options.channels_last:
            continue  # the strict fp32 reference stands for plain fp32
        rows.append(guarded(label, budget, lambda o=options, r=resident, lab=label: pipeline_rows(
            lab, {n: TorchEngine(m, specs[n], args.device, o, r) for n, m in modules.items()}, tokenizer, cfg,
            arch.scheduler, request, args.device, args.runs, reference["result"])))
    modules.clear()  # free the GPU copies before the next section
    torch.cuda.empty_cache() if args.device.startswith("cuda") else None
    return {"model": f"{arch.name} random weights (diffusers UNet2DConditionModel, AutoencoderKL; transformers "
                     "CLIPTextModel; diffusers' default SDPA attention in every row)",
            "request": {"steps": args.sd_steps, "guidance": 7.5, "size": size, "scheduler": "ddim"},
            "build_s": built_s, "cpu_fp32_check": cpu_check, "rows": rows}


def unet_on_cpu(unet: Any, spec: Any, device: str) -> dict[str, Any]:
    """One U-Net call in fp32 on the CPU against the same call on the run's device (strict fp32 there)."""
    import copy

    from difftrt.backends.torch_ref import TorchEngine

    feeds = spec.sample_inputs(spec.profile("opt"), 0)
    here = TorchEngine(unet, spec, device)
    here.ready({k: v.shape for k, v in feeds.items()})
    want = here.infer(feeds)["out_sample"]
    start = time.perf_counter()
    cpu = TorchEngine(copy.deepcopy(unet).cpu(), spec, "cpu")
    cpu.ready({k: v.shape for k, v in feeds.items()})
    got = cpu.infer(feeds)["out_sample"]
    return {"max_abs": float(np.abs(got - want).max()), "max_abs_output": float(np.abs(want).max()),
            "cpu_call_s": time.perf_counter() - start, "same_device": device == "cpu"}


def tensorrt(args: argparse.Namespace, budget: Budget) -> dict[str, Any]:
    from difftrt.trt.shim import FLAVOURS, import_tensorrt

    out: dict[str, Any] = {}
    for flavour in FLAVOURS:
        try:
            trt = import_tensorrt(flavour)
        except Exception as exc:
            out[flavour] = {"imports": False, "error": f"{type(exc).__name__}: {exc}"}
            continue
        out[flavour] = {"imports": True, "version": trt.version, "targets": trt.arch_choices()}
    out["note"] = ("TensorRT-RTX has no SM90 target and its libs wheel (228 MiB) is over what the device tool "
                   "carries (64 MiB); full TensorRT is not installable here: no TensorRT number can come from "
                   "this machine unless one of the rows above imports")
    return out


def onnxruntime_cuda(args: argparse.Namespace, budget: Budget) -> dict[str, Any]:
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    out: dict[str, Any] = {"version": onnxruntime.__version__, "providers": providers}
    if "CUDAExecutionProvider" not in providers:
        out["result"] = "not run: this onnxruntime has no CUDAExecutionProvider (the CPU wheel)"
    return out


def guarded(label: str, budget: Budget, fn: Any) -> dict[str, Any]:
    try:
        budget.check(label)
        return fn()
    except Exception as exc:
        return {"variant": label, "error": f"{type(exc).__name__}: {str(exc)[:400]}",
                "trace": traceback.format_exc(limit=3)[-800:]}


SECTIONS = {"bundled": bundled, "scheduler": scheduler_loop, "sd15": sd15, "tensorrt": tensorrt,
            "onnxruntime": onnxruntime_cuda}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON and Markdown records")
    parser.add_argument("--device", default="cuda", help="cuda (the GPU check) or cpu (the flow, for tests)")
    parser.add_argument("--tiny", action="store_true", help="SD layout at test size instead of SD-1.5")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (after warm-up)")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps, bundled model")
    parser.add_argument("--sd-steps", type=int, default=25, help="denoising steps, SD-1.5 architecture")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows (minutes of compiling)")
    parser.add_argument("--budget-s", type=float, default=330.0, help="stop starting new rows after this long")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ",".join(SECTIONS))
    parser.add_argument("--commit", default="unknown", help="the git commit the tree is at (the tree has no .git)")
    args = parser.parse_args(argv)
    budget = Budget(args.budget_s)
    record: dict[str, Any] = {"command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
                              "commit": args.commit, "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              "environment": device_record(args.device), "sections": {}}
    for name in args.sections.split(","):
        start = time.perf_counter()
        try:
            budget.check(name)
            result = SECTIONS[name](args, budget)
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {str(exc)[:400]}", "trace": traceback.format_exc(limit=4)[-1200:]}
        result["section_s"] = round(time.perf_counter() - start, 1)
        record["sections"][name] = result
        print(f"{name}: {result['section_s']} s{' (error)' if 'error' in result else ''}", flush=True)
        write(record, args.out)  # after every section: a run cut short keeps what it measured
    return 0


def strip_images(value: Any) -> Any:
    """The record without the ``SampleResult`` objects kept for comparisons."""
    if isinstance(value, dict):
        return {k: strip_images(v) for k, v in value.items() if k != "result"}
    if isinstance(value, list):
        return [strip_images(v) for v in value]
    return value


def write(record: dict[str, Any], out: Path) -> None:
    from difftrt.bench.gpu_report import markdown

    gpu = record["environment"].get("gpu") or {}
    slug = re.sub(r"[^a-z0-9]+", "-", (gpu.get("name") or "cpu").lower()).strip("-")
    stem = f"gpu-{slug}-{record['date_utc'][:10]}"
    out.mkdir(parents=True, exist_ok=True)
    record = strip_images(record)
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(markdown(record), encoding="utf-8")
    print(f"wrote {out / stem}.json and .md")


if __name__ == "__main__":
    sys.exit(main())

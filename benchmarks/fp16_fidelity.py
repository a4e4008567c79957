"""Image-level fidelity of an fp16 export against the fp32 one: same prompts, same seeds, ONNX Runtime CPU.

    python benchmarks/fp16_fidelity.py --prompts 200 --json benchmarks/results/2026-12-01-fp16-fidelity-shapes64-cpu.json

The bundled model is exported twice (fp32: the default cache; fp16 U-Net + text encoder, fp32 VAE: into
--fp16-export, made if missing), each of ``difftrt eval``'s prompts is sampled with both (25 DDIM steps,
guidance 5, seed 0 + i), and the record gives the PSNR of every fp16 image against its fp32 twin (min,
median, fraction >= 35 dB), the max pixel difference, both exports' prompt-fidelity scores, and the share
of prompts whose four verdicts agree. ONNX Runtime's CPU provider runs some fp16 nodes through inserted
fp32 casts, so this measures the fp16 graph (its fp16 weights, I/O and casts) as ORT CPU executes it; a GPU
backend executes more of it in fp16.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from difftrt import default_model
from difftrt.artifact import library_versions
from difftrt.bench.timing import record_header
from difftrt.data.shapes import eval_prompts
from difftrt.evaluate import agreement, evaluate
from difftrt.fileio import write_bytes_atomic
from difftrt.runtime import load_pipeline
from difftrt.schedulers import from_config


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=200)
    p.add_argument("--prompt-seed", type=int, default=2026)
    p.add_argument("--fp16-export", type=Path, default=Path("export/shapes64-fp16"))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    fp32 = default_model.ensure_exported()
    if not (args.fp16_export / "manifest.json").is_file():
        from difftrt.exporter.onnx import export_checkpoint
        from difftrt.models.specs import Precision

        export_checkpoint(default_model.load_checkpoint(), args.fp16_export, source=default_model.SOURCE,
                          precision={"unet": Precision.FP16, "text_encoder": Precision.FP16})
    prompts = eval_prompts(args.prompt_seed, args.prompts)
    runs = {}
    for name, folder in (("fp32", fp32), ("fp16", args.fp16_export)):
        pipe, artifact = load_pipeline(folder)
        start = time.perf_counter()
        runs[name] = evaluate(pipe, lambda: from_config(artifact.scheduler_config), prompts)
        runs[name]["seconds"] = time.perf_counter() - start
    values = np.array([psnr(a, b) for a, b in zip(runs["fp16"]["images"], runs["fp32"]["images"])])
    finite = values[np.isfinite(values)]
    record = {
        **record_header(" ".join(["python", *sys.argv]), library_versions()),
        "exports": {"fp32": str(fp32), "fp16": str(args.fp16_export)},
        "settings": runs["fp32"]["settings"], "prompt_seed": args.prompt_seed,
        "psnr_db": {"min": float(values.min()), "median": float(np.median(values)),
                    "identical_images": int(np.sum(~np.isfinite(values))),
                    "share_at_least_35db": float(np.mean(values >= 35)),
                    "mean_of_finite": float(finite.mean()) if finite.size else None},
        "max_abs_pixel_diff": int(np.abs(runs["fp16"]["images"].astype(int) - runs["fp32"]["images"]).max()),
        "accuracy": {name: run["accuracy"] for name, run in runs.items()},
        "verdict_agreement_fp16_vs_fp32": agreement(runs["fp16"]["verdicts"], runs["fp32"]["verdicts"]),
        "seconds": {name: run["seconds"] for name, run in runs.items()},
    }
    text = json.dumps(record, indent=2) + "\n"
    if args.json:
        write_bytes_atomic(args.json, text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-step cost of every difftrt NumPy scheduler next to the same diffusers scheduler on torch CPU, same run.

    python benchmarks/scheduler_cost.py --json benchmarks/results/scheduler-cost-cpu.json \\
        --markdown benchmarks/results/scheduler-cost-cpu.md

Both libraries run whole sampling loops on a (2, 4, 64, 64) float32 latent (Stable Diffusion 1.5's scheduler
config, ``--steps`` steps) with a cheap fake model, alternating loop by loop so drift hits both alike. Each
``step`` and ``scale_model_input`` call is timed alone with ``time.perf_counter``; ``set_timesteps`` and the
model are not timed. Stochastic schedulers draw their noise inside the timed call in both libraries (ours from
a ``np.random.Generator``, diffusers' from a ``torch.Generator``). Reported: median and p10/p90 over all calls
after ``--warmup`` untimed loops, and diffusers/ours (above 1: the NumPy step is faster).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from difftrt.artifact import library_versions
from difftrt.bench.timing import record_header, stats
from difftrt.schedulers import SCHEDULERS, from_config

SHAPE = (2, 4, 64, 64)
SD15_SCHEDULER_CONFIG = {  # runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None, "clip_sample": False,
}  # fmt: skip
DIFFUSERS_CLASS = {short: cls.config_class.class_name for short, cls in SCHEDULERS.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="inference steps per loop (default 50)")
    parser.add_argument("--runs", type=int, default=20, help="timed loops per scheduler and library (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed loops first (default 3)")
    parser.add_argument("--schedulers", default=",".join(SCHEDULERS), help="comma-separated short names")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    return parser.parse_args(argv)


def run_loop(scheduler: Any, steps: int, x: np.ndarray, timed: dict[str, list[float]] | None) -> None:
    """One sampling loop; appends each call's seconds to ``timed["step"]`` / ``timed["scale"]`` when given."""
    import torch

    theirs = isinstance(scheduler, torch.nn.Module) or not hasattr(scheduler, "config_class")
    wrap = torch.from_numpy if theirs else (lambda a: a)
    kwargs: dict[str, Any] = {}
    if not theirs:
        kwargs["generator"] = np.random.default_rng(0)
    elif "generator" in inspect.signature(scheduler.step).parameters:
        kwargs["generator"] = torch.Generator().manual_seed(0)
    scheduler.set_timesteps(steps)
    state = wrap(x * np.float32(scheduler.init_noise_sigma))
    for t in scheduler.timesteps:
        start = time.perf_counter()
        model_in = scheduler.scale_model_input(state, t)
        middle = time.perf_counter()
        out = model_in * 0.3 + 0.01  # the fake model: untimed
        before = time.perf_counter()
        state = scheduler.step(out, t, state, **kwargs).prev_sample
        end = time.perf_counter()
        if timed is not None:
            timed["scale"].append(middle - start)
            timed["step"].append(end - before)


def bench_one(short: str, args: argparse.Namespace) -> dict[str, Any]:
    import diffusers

    ours = from_config(SD15_SCHEDULER_CONFIG, short)
    theirs = getattr(diffusers, DIFFUSERS_CLASS[short]).from_config(SD15_SCHEDULER_CONFIG)
    x = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
    timed: dict[str, dict[str, list[float]]] = {name: {"step": [], "scale": []} for name in ("ours", "diffusers")}
    for run in range(args.warmup + args.runs):
        for name, scheduler in (("ours", ours), ("diffusers", theirs)):
            run_loop(scheduler, args.steps, x, timed[name] if run >= args.warmup else None)
    result: dict[str, Any] = {"scheduler": short, "class": DIFFUSERS_CLASS[short], 
                              "calls_per_loop": len(ours.timesteps)}
    for name in ("ours", "diffusers"):
        result[name] = {metric: stats(seconds) for metric, seconds in timed[name].items()}
    result["ratio_diffusers_over_ours"] = {
        metric: result["diffusers"][metric]["median_ms"] / result["ours"][metric]["median_ms"]
        for metric in ("step", "scale")
    }
    return result


def markdown(report: dict[str, Any]) -> str:
    m, v = report["machine"], report["versions"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores. Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Latent {tuple(report['shape'])} float32, {report['steps']} steps, {report['runs']} timed loops after "
        f"{report['warmup']} warm-up loops, torch threads {report['torch_threads']}. Per call, microseconds.",
        "",
        "| Scheduler | ours step median [p10-p90] | diffusers step median [p10-p90] | diffusers/ours "
        "| ours scale_model_input | diffusers scale_model_input |",
        "|---|---|---|---|---|---|",
    ]

    def us(s: dict[str, float]) -> str:
        return f"{s['median_ms'] * 1e3:.1f} [{s['p10_ms'] * 1e3:.1f}-{s['p90_ms'] * 1e3:.1f}]"

    for r in report["results"]:
        ours, theirs = r["ours"], r["diffusers"]
        lines.append(f"| {r['scheduler']} ({r['class']}) | {us(ours['step'])} | {us(theirs['step'])} "
                     f"| {r['ratio_diffusers_over_ours']['step']:.2f}x | {us(ours['scale'])} | {us(theirs['scale'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import diffusers
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    names = [s.strip() for s in args.schedulers.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SCHEDULERS))
    if unknown:
        sys.exit(f"error: unknown scheduler(s) {', '.join(unknown)}; choose from {', '.join(SCHEDULERS)}")
    report = {
        **record_header(" ".join(["python", "benchmarks/scheduler_cost.py", *(argv if argv is not None else sys.argv[1:])]),
                        {**library_versions(("difftrt", "numpy", "torch")), "diffusers": diffusers.__version__}),
        "shape": list(SHAPE), "steps": args.steps, "runs": args.runs, "warmup": args.warmup,
        "torch_threads": torch.get_num_threads(), "scheduler_config": SD15_SCHEDULER_CONFIG,
        "results": [bench_one(short, args) for short in names],
    }  # fmt: skip
    table = markdown(report)
    print(table, end="")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")


if __name__ == "__main__":
    main()

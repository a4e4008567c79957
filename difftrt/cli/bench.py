"""``difftrt bench`` (per-stage latency) and ``difftrt eval`` (prompt fidelity) on an export."""

from __future__ import annotations

import json
from pathlib import Path

import click

from difftrt.cli.common import engine_or_default, say, torch_available
from difftrt.errors import DependencyError, UsageError


@click.command()
@click.option("--engine", type=click.Path(path_type=Path), default=None,
              help="Export folder or one of its component files. Default: the built-in default model.")
@click.option("--fp16-engine", type=click.Path(path_type=Path), default=None,
              help="An fp16 export of the same model, for the ONNX Runtime fp16 row. Default model: made on first use.")
@click.option("--trt-engine", type=click.Path(path_type=Path), default=None,
              help="An engine folder (difftrt build) for the TensorRT row; runs only on a CUDA GPU.")
@click.option("--prompt", default="a red circle on the left", show_default=True)
@click.option("--steps", type=int, default=25, show_default=True)
@click.option("--guidance", type=float, default=5.0, show_default=True)
@click.option("--num-images", type=int, default=1, show_default=True, help="Images per sample (batch).")
@click.option("--runs", type=int, default=10, show_default=True, help="Timed runs per backend (round-robin).")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed runs first, per backend.")
@click.option("--threads", type=int, default=0, help="Intra-op threads for every backend (0: all cores).")
@click.option("--scheduler", default=None, help="As for sample: a short name or a diffusers class name.")
@click.option("--torch/--no-torch", "with_torch", default=None,
              help="Also time the torch rows (eager fp32 reference and tuned). Default: when torch is installed.")
@click.option("--compile", "compile_", is_flag=True, help="Add a torch.compile row (compiling takes minutes).")
@click.option("--ckpt", type=click.Path(path_type=Path), default=None,
              help="Checkpoint for the torch rows. Default: the one recorded in the manifest.")
@click.option("--sweep", is_flag=True, help="Also sweep batch (1, 2, 4), steps (10, 25, 50) and resolution.")
@click.option("--cold-runs", type=int, default=0, show_default=True,
              help="Cold starts (process start to PNG, fresh processes) per path; 0 skips them.")
@click.option("--eval-prompts", type=int, default=0, show_default=True,
              help="Prompt fidelity (difftrt eval) per precision on this many prompts; 0 skips it.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="Write the record, with every raw sample, as JSON here.")
@click.option("--markdown", "md_path", type=click.Path(path_type=Path), default=None, help="Write the tables here.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Write a PNG: latency by stage and backend, and the sweeps (needs difftrt[plot]).")
@click.option("--compare", "compare_paths", type=click.Path(path_type=Path), nargs=2, default=None,
              help="OLD.json NEW.json: print the change per figure, flagging only changes beyond the spread.")
@click.option("--arch", type=click.Choice(["sd15", "sd-tiny"]), default=None,
              help="Instead: one call per component of this architecture at its real size (sd15: Stable Diffusion "
                   "1.5, 512x512), exported and timed in ONNX Runtime, torch fp32 and torch bf16; needs --random-weights.")
@click.option("--random-weights", is_flag=True, help="With --arch: random weights (nothing is downloaded).")
@click.option("--cache", type=click.Path(path_type=Path), default=Path("export"), show_default=True,
              help="With --arch: where the random-weight folder and its export are kept between runs.")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the tables or progress.")
def bench(engine, fp16_engine, trt_engine, prompt, steps, guidance, num_images, runs, warmup, threads, scheduler,
          with_torch, compile_, ckpt, sweep, cold_runs, eval_prompts, json_path, md_path, plot_path, compare_paths,
          arch, random_weights, cache, quiet) -> None:
    """Time every backend side by side on the same inputs: per-stage latency (median and spread of N runs
    after warm-up), ratios against the torch fp32 reference and the strongest torch, fidelity, roofline.

    \b
      difftrt bench --runs 10 --json bench.json --markdown bench.md
      difftrt bench --engine export/tiny --fp16-engine export/tiny-fp16 --sweep --cold-runs 3 --plot bench.png
      difftrt bench --compare old.json new.json
      difftrt bench --arch sd15 --random-weights --runs 5 --json sd15.json --markdown sd15.md
    """
    from difftrt.fileio import check_writable_file, write_bytes_atomic

    if compare_paths:
        from difftrt.bench.compare import compare, format_compare
        from difftrt.config import read_json

        old, new = (read_json(p) for p in compare_paths)
        click.echo(format_compare(compare(old, new, *map(str, compare_paths))))
        return
    if arch or random_weights:
        return _arch_bench(arch, random_weights, cache, runs, warmup, threads, json_path, md_path, quiet)
    from difftrt.bench.report import format_record
    from difftrt.bench.run import run_bench
    from difftrt.pipeline import SampleRequest

    if runs < 1 or warmup < 0 or cold_runs < 0 or eval_prompts < 0:
        raise UsageError(f"--runs must be >= 1 and --warmup, --cold-runs, --eval-prompts >= 0, got {runs}, {warmup}, "
                         f"{cold_runs}, {eval_prompts}")
    request = SampleRequest(prompt, steps=steps, guidance=guidance, num_images=num_images)
    request.check()
    for path in (json_path, md_path, plot_path):
        if path is not None:
            check_writable_file(path)
    if with_torch and not torch_available():
        raise DependencyError("--torch needs torch: pip install 'difftrt[export]'")
    with_torch = torch_available() if with_torch is None else with_torch
    tell = say(quiet)
    if engine is None and fp16_engine is None and torch_available():
        from difftrt import default_model

        fp16_engine = default_model.ensure_exported(progress=tell, precision="fp16")
    result = run_bench(engine_or_default(engine, tell), request, runs, warmup, threads, with_torch, ckpt, scheduler,
                       fp16_engine, trt_engine, compile_, eval_prompts, sweep, cold_runs, progress=tell)
    if json_path:
        write_bytes_atomic(json_path, (json.dumps(result, indent=2, default=str) + "\n").encode())
    if md_path:
        write_bytes_atomic(md_path, (format_record(result, markdown=True) + "\n").encode())
    if plot_path:
        from difftrt.bench.plot import plot_record

        plot_record(result, plot_path)
    if not quiet:
        click.echo(format_record(result))


def _arch_bench(arch, random_weights, cache, runs, warmup, threads, json_path, md_path, quiet) -> None:
    import sys

    from difftrt.artifact import library_versions
    from difftrt.bench.arch import format_arch_record, run_arch_bench
    from difftrt.bench.sd15 import ARCHITECTURES
    from difftrt.bench.timing import record_header
    from difftrt.fileio import check_writable_file, write_bytes_atomic

    if not (arch and random_weights):
        raise UsageError("--arch builds the architecture with random weights: pass both --arch and --random-weights "
                         "(for your own weights: difftrt export --ckpt DIR, then difftrt bench --engine export/NAME)")
    if runs < 1 or warmup < 0:
        raise UsageError(f"--runs must be >= 1 and --warmup >= 0, got {runs}, {warmup}")
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("torch", "diffusers", "transformers")):
        raise DependencyError("--arch needs torch, diffusers and transformers: pip install 'difftrt[export]'")
    for path in (json_path, md_path):
        if path is not None:
            check_writable_file(path)
    record = {**record_header(" ".join(["difftrt"] + sys.argv[1:]), library_versions()),
              **run_arch_bench(ARCHITECTURES[arch], cache, runs, warmup,
                               threads, progress=say(quiet))}
    if json_path:
        write_bytes_atomic(json_path, (json.dumps(record, indent=2, default=str) + "\n").encode())
    if md_path:
        write_bytes_atomic(md_path, (format_arch_record(record, markdown=True) + "\n").encode())
    if not quiet:
        click.echo(format_arch_record(record))


@click.command("eval")
@click.option("--engine", type=click.Path(path_type=Path), default=None,
              help="Export folder or one of its component files. Default: the built-in default model.")
@click.option("--prompts", "n_prompts", type=int, default=200, show_default=True,
              help="Number of prompts generated from the caption grammar.")
@click.option("--prompt-seed", type=int, default=2026, show_default=True, help="Seed of the held-apart prompt stream.")
@click.option("--steps", type=int, default=25, show_default=True)
@click.option("--guidance", type=float, default=5.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Prompt i is sampled with seed + i.")
@click.option("--scheduler", default=None, help="As for sample: a short name or a diffusers class name.")
@click.option("--torch/--no-torch", "with_torch", default=False, show_default=True,
              help="Also evaluate the fp32 torch checkpoint on the same seeds and report agreement.")
@click.option("--ckpt", type=click.Path(path_type=Path), default=None, help="Checkpoint for --torch.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write results as JSON here.")
@click.option("--grid", "grid_path", type=click.Path(path_type=Path), default=None,
              help="Write the first 16 images as a 4x4 grid PNG here.")
@click.option("--quiet", "-q", is_flag=True)
def eval_cmd(engine, n_prompts, prompt_seed, steps, guidance, seed, scheduler, with_torch, ckpt, json_path, grid_path,
             quiet) -> None:
    """Measure prompt fidelity: sample grammar prompts and read shape, colour, position and background back.

    \b
      difftrt eval --engine export/shapes64 --prompts 200 --json eval.json
      difftrt eval --torch --prompts 200        # ONNX Runtime vs fp32 torch on the same seeds
    """
    from difftrt.bench.run import evaluation_record
    from difftrt.fileio import check_writable_file, write_bytes_atomic
    from difftrt.images import save_png

    if n_prompts < 1:
        raise UsageError(f"--prompts must be >= 1, got {n_prompts}")
    for path in (json_path, grid_path):
        if path is not None:
            check_writable_file(path)
    record, images = evaluation_record(engine_or_default(engine, say(quiet)), n_prompts, prompt_seed, steps,
                                       guidance, seed, scheduler, with_torch, ckpt)
    if json_path:
        write_bytes_atomic(json_path, (json.dumps(record, indent=2) + "\n").encode())
    if grid_path:
        save_png(images[:16], grid_path, columns=4)
    if not quiet:
        click.echo(record["table"])
        if "agreement_ort_vs_torch" in record:
            click.echo(f"ORT vs torch: identical verdicts on {record['agreement_ort_vs_torch']:.1%} of prompts")


COMMANDS = (bench, eval_cmd)

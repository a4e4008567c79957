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
@click.option("--prompt", default="a red circle on the left", show_default=True)
@click.option("--steps", type=int, default=25, show_default=True)
@click.option("--guidance", type=float, default=5.0, show_default=True)
@click.option("--num-images", type=int, default=1, show_default=True, help="Images per sample (batch).")
@click.option("--runs", type=int, default=10, show_default=True, help="Timed runs per backend.")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default).")
@click.option("--scheduler", default=None, help="As for sample: a short name or a diffusers class name.")
@click.option("--torch/--no-torch", "with_torch", default=None,
              help="Also time the torch eager model on the same inputs. Default: when torch is installed.")
@click.option("--ckpt", type=click.Path(path_type=Path), default=None,
              help="Checkpoint for the torch run. Default: the one recorded in the manifest.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write results as JSON here.")
@click.option("--markdown", "md_path", type=click.Path(path_type=Path), default=None, help="Write a Markdown table here.")
@click.option("--quiet", "-q", is_flag=True, help="Do not print the table.")
def bench(engine, prompt, steps, guidance, num_images, runs, warmup, threads, scheduler, with_torch, ckpt,
          json_path, md_path, quiet) -> None:
    """Time every stage of sampling (median and spread of N runs after warm-up).

    \b
      difftrt bench --engine export/tiny --runs 10 --json bench.json
    """
    from difftrt.bench.report import table
    from difftrt.bench.run import run_bench
    from difftrt.fileio import check_writable_file, write_bytes_atomic
    from difftrt.pipeline import SampleRequest

    if runs < 1 or warmup < 0:
        raise UsageError(f"--runs must be >= 1 and --warmup >= 0, got {runs} and {warmup}")
    request = SampleRequest(prompt, steps=steps, guidance=guidance, num_images=num_images)
    request.check()
    for path in (json_path, md_path):
        if path is not None:
            check_writable_file(path)
    if with_torch and not torch_available():
        raise DependencyError("--torch needs torch: pip install 'difftrt[export]'")
    with_torch = torch_available() if with_torch is None else with_torch
    result = run_bench(engine_or_default(engine, say(quiet)), request, runs, warmup, threads, with_torch, ckpt, scheduler)
    text = table(result)
    if json_path:
        write_bytes_atomic(json_path, (json.dumps(result, indent=2) + "\n").encode())
    if md_path:
        m = result["machine"]
        header = (f"Machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}. Versions: "
                  + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + f".\n\nCommand: `{result['command']}`\n\n")
        write_bytes_atomic(md_path, (header + table(result, markdown=True) + "\n").encode())
    if not quiet:
        click.echo(text)
        if "fidelity" in result:
            click.echo(f"max |latent ORT - latent torch| = {result['fidelity']['max_abs_latent_diff_ort_vs_torch']:.2e}")


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

"""The ``difftrt`` command line. Thin wrappers: library errors become one-line messages and exit codes here."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import click
import numpy as np

from difftrt import __version__
from difftrt.errors import ArtifactError, DependencyError, DifftrtError, UsageError
from difftrt.offline import apply_offline_defaults


class _Group(click.Group):
    """Turns ``DifftrtError`` into ``error: message`` on stderr and its exit code, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DifftrtError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


def _say(quiet: bool):
    return (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))


def _needs_export_extra():
    try:
        from difftrt.exporter.onnx import export_checkpoint
        from difftrt.models import checkpoint
    except ImportError as exc:
        raise DependencyError(f"this command needs torch and onnx ({exc.name} is missing): pip install 'difftrt[export]'") from None
    return checkpoint, export_checkpoint


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="difftrt")
def main() -> None:
    """Fast diffusion sampling on exported engines.

    \b
      difftrt init-checkpoint --out ckpt/tiny
      difftrt export --ckpt ckpt/tiny --out export/tiny
      difftrt sample --engine export/tiny/unet.onnx --prompt "a red circle" --out out.png
      difftrt bench --engine export/tiny
    """
    apply_offline_defaults()  # before anything loads onnxruntime or a hub library


@main.command("init-checkpoint")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Checkpoint folder to create.")
@click.option("--preset", default="shapes64", show_default=True, help="Architecture (see `difftrt train --help`).")
@click.option("--seed", type=int, default=0, show_default=True, help="Weight-initialisation seed.")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder.")
def init_checkpoint(out: Path, preset: str, seed: int, overwrite: bool) -> None:
    """Create an untrained checkpoint (diffusers folder layout), e.g. to test an export.

    \b
      difftrt init-checkpoint --out ckpt/tiny --preset tiny --seed 0
    """
    checkpoint, _ = _needs_export_extra()
    from difftrt.train.presets import preset_config

    checkpoint.save(checkpoint.create(preset_config(preset), seed=seed), out, overwrite=overwrite)
    click.echo(str(out))


@main.command()
@click.option("--ckpt", type=click.Path(path_type=Path), default=None,
              help="Checkpoint folder (diffusers layout). Default: the built-in default model.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Export folder. Default: export/NAME.")
@click.option("--overwrite", is_flag=True, help="Replace an existing export folder.")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Validation: absolute tolerance.")
@click.option("--rtol", type=float, default=1e-3, show_default=True, help="Validation: relative tolerance.")
@click.option("--quiet", "-q", is_flag=True, help="No progress messages.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's validation summary as JSON.")
def export(ckpt: Path | None, out: Path | None, overwrite: bool, atol: float, rtol: float, quiet: bool, as_json: bool) -> None:
    """Export a checkpoint to ONNX and validate every file against PyTorch.

    Writes text_encoder/unet/vae_decoder/vae_encoder .onnx and manifest.json (hashes, I/O, configs, max
    abs/rel errors at two batch sizes). Fails, leaving nothing behind, when ONNX disagrees with torch.

    \b
      difftrt export --ckpt ckpt/tiny --out export/tiny
    """
    from difftrt import default_model

    checkpoint, export_checkpoint = _needs_export_extra()
    from difftrt.exporter.onnx import Tolerance

    if ckpt is None:
        loaded, name = default_model.load_checkpoint(), default_model.NAME
    else:
        loaded, name = checkpoint.load(ckpt), ckpt.resolve().name
    out = out or Path("export") / name
    say = _say(quiet)
    manifest = export_checkpoint(loaded, out, overwrite=overwrite, tol=Tolerance(atol, rtol),
                                 source=str(ckpt.resolve()) if ckpt else default_model.SOURCE, progress=say)
    summary = {name: {k: c["validation"][k] for k in ("max_abs_err", "max_rel_err")}
               for name, c in manifest["components"].items()}
    if as_json:
        click.echo(json.dumps({"out": str(out), "validation": summary}, indent=2))
        return
    for comp, errs in summary.items():
        say(f"  {comp:<13} max abs err {errs['max_abs_err']:.2e}  max rel err {errs['max_rel_err']:.2e}")
    click.echo(str(out))


def _load_latents(path: Path | None) -> np.ndarray | None:
    if path is None:
        return None
    try:
        latents = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read --latents {path}: {exc}") from None
    if not isinstance(latents, np.ndarray) or latents.dtype.kind not in "fiu":
        raise ArtifactError(f"--latents {path} must be one numeric .npy array (not .npz, strings or objects)")
    return latents


def _engine_or_default(engine: Path | None, say) -> Path:
    if engine is not None:
        return engine
    from difftrt import default_model

    return default_model.ensure_exported(progress=say)


@main.command()
@click.option("--engine", type=click.Path(path_type=Path), default=None,
              help="Export folder or its unet.onnx. Default: the built-in default model (exported on first use).")
@click.option("--prompt", default="a large red circle on the left on a white background", show_default=True)
@click.option("--negative-prompt", default="", help="Prompt to steer away from (the unconditional half of guidance).")
@click.option("--steps", type=int, default=25, show_default=True)
@click.option("--guidance", type=float, default=5.0, show_default=True, help="Classifier-free guidance scale; 1 disables it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--scheduler", default=None, help="ddim, ddpm, euler, euler-a, dpm++2m, lms, pndm, heun or a diffusers "
              "class name (overrides the model's scheduler_config.json class).")
@click.option("--eta", type=float, default=0.0, show_default=True, help="DDIM η (0 = deterministic).")
@click.option("--num-images", type=int, default=1, show_default=True, help="More than one writes a grid PNG.")
@click.option("--height", type=int, default=None, help="Image height in pixels (a multiple of the model's factor).")
@click.option("--width", type=int, default=None, help="Image width in pixels.")
@click.option("--latents", "latents_path", type=click.Path(path_type=Path), default=None,
              help="Initial noise (N, C, h, w) float .npy, unit variance: multiplied by init_noise_sigma here.")
@click.option("--save-intermediates", type=click.Path(path_type=Path), default=None,
              help="Folder for per-step latents (.npy) and a grid of predicted-x0 previews.")
@click.option("--init-image", type=click.Path(path_type=Path), default=None,
              help="img2img: start from this image (resized to the output size) instead of pure noise.")
@click.option("--strength", type=float, default=0.8, show_default=True,
              help="img2img: how much noise is added, in (0, 1]; runs about strength x steps steps.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("out.png"), show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="ONNX Runtime device.")
@click.option("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or messages.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def sample(engine, prompt, negative_prompt, steps, guidance, seed, scheduler, eta, num_images, height, width,
           latents_path, save_intermediates, init_image, strength, out, device, threads, quiet, as_json) -> None:
    """Generate images from a prompt with an exported model (torch not needed).

    \b
      difftrt sample --prompt "a large red circle on the left on a white background" --out out.png
      difftrt sample --engine export/tiny/unet.onnx --steps 25 --guidance 5 --seed 0 --out out.png
      difftrt sample --init-image in.png --strength 0.6 --prompt "a blue square" --out out.png
    """
    from dataclasses import replace

    from difftrt.fileio import check_new_folder, check_writable_file
    from difftrt.images import load_image, save_png
    from difftrt.intermediates import IntermediateRecorder
    from difftrt.pipeline import SampleRequest
    from difftrt.runtime import load_pipeline
    from difftrt.schedulers import from_config

    say = _say(quiet)
    request = SampleRequest(prompt, negative_prompt, steps, guidance, seed, num_images, height, width, eta,
                            _load_latents(latents_path), strength=strength)
    request.check()
    check_writable_file(out)
    if save_intermediates is not None:
        check_new_folder(save_intermediates, "--save-intermediates")
    pipe, artifact = load_pipeline(_engine_or_default(engine, say), device=device, threads=threads,
                                   img2img=init_image is not None)
    sched = from_config(artifact.scheduler_config, scheduler)
    _, _, h, w = pipe.latent_shape(request)
    if init_image is not None:
        f = pipe.config.vae.downsample_factor
        request = replace(request, init_image=load_image(init_image, w * f, h * f))
    recorder = IntermediateRecorder() if save_intermediates else None
    start = time.perf_counter()
    n_steps = len(pipe.timesteps(request, sched))  # fewer than --steps for img2img
    with _progress(n_steps, quiet) as bar:
        def on_step(i, t, x, x0):
            bar.update(1)
            if recorder:
                recorder(i, t, x, x0)

        result = pipe(request, sched, callback=on_step)
    elapsed = time.perf_counter() - start
    if result.truncated:
        say(f"warning: prompt truncated to {pipe.tokenizer.max_length} tokens")
    if result.unknown_words:
        say(f"warning: words not in the vocabulary: {', '.join(result.unknown_words)}")
    if recorder:
        recorder.write(save_intermediates, pipe.decode)
    save_png(result.images, out)
    if as_json:
        click.echo(json.dumps({"out": str(out), "engine": str(artifact.folder), "scheduler": type(sched).__name__,
                               "steps": steps, "steps_run": n_steps, "guidance": guidance, "seed": seed, "seconds": elapsed,
                               "truncated": result.truncated, "unknown_words": list(result.unknown_words)}))
    else:
        say(f"wrote {out} ({elapsed:.2f} s)")


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int) -> None:
        pass


def _progress(steps: int, quiet: bool):
    """click's bar (with ETA) on a terminal; nothing when piped or quiet."""
    if quiet or not sys.stderr.isatty():
        return _NoBar()
    return click.progressbar(length=steps, label="denoising", file=sys.stderr, show_eta=True)



def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


@main.command()
@click.option("--engine", type=click.Path(path_type=Path), default=None,
              help="Export folder or its unet.onnx. Default: the built-in default model.")
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
    if with_torch and not _torch_available():
        raise DependencyError("--torch needs torch: pip install 'difftrt[export]'")
    with_torch = _torch_available() if with_torch is None else with_torch
    result = run_bench(_engine_or_default(engine, _say(quiet)), request, runs, warmup, threads, with_torch, ckpt, scheduler)
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


@main.command("eval")
@click.option("--engine", type=click.Path(path_type=Path), default=None,
              help="Export folder or its unet.onnx. Default: the built-in default model.")
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
    record, images = evaluation_record(_engine_or_default(engine, _say(quiet)), n_prompts, prompt_seed, steps,
                                       guidance, seed, scheduler, with_torch, ckpt)
    if json_path:
        write_bytes_atomic(json_path, (json.dumps(record, indent=2) + "\n").encode())
    if grid_path:
        save_png(images[:16], grid_path, columns=4)
    if not quiet:
        click.echo(record["table"])
        if "agreement_ort_vs_torch" in record:
            click.echo(f"ORT vs torch: identical verdicts on {record['agreement_ort_vs_torch']:.1%} of prompts")


@main.command()
@click.argument("stage", type=click.Choice(["vae", "unet"]))
@click.option("--run", "run_dir", type=click.Path(path_type=Path), required=True,
              help="Run folder: state per stage, the assembled checkpoint in RUN/model, sample grids.")
@click.option("--preset", default="shapes64", show_default=True, help="Model configuration (see difftrt/train/presets.py).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Folder of images with captions.jsonl or .txt files. Default: the procedural shapes dataset.")
@click.option("--steps", type=int, default=2000, show_default=True, help="Total optimizer steps of this stage.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cond-drop", type=float, default=0.1, show_default=True, help="U-Net: caption dropout for guidance.")
@click.option("--ema-decay", type=float, default=0.999, show_default=True)
@click.option("--cache-size", type=int, default=50_000, show_default=True,
              help="U-Net: dataset images encoded to latents once and sampled from.")
@click.option("--checkpoint-every", type=int, default=250, show_default=True)
@click.option("--sample-every", type=int, default=500, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Checkpoint and stop after this long (resume later).")
@click.option("--resume", is_flag=True, help="Continue the stage's saved state in RUN.")
@click.option("--quiet", "-q", is_flag=True)
def train(stage, run_dir, preset, data, steps, batch_size, lr, seed, cond_drop, ema_decay, cache_size,
          checkpoint_every, sample_every, max_minutes, resume, quiet) -> None:
    """Train a model stage by stage: the VAE, then the text encoder and U-Net.

    Checkpoints are written atomically every --checkpoint-every steps; --resume continues from the last one
    (refused if the model or settings differ). A non-finite loss stops with the last good checkpoint kept.

    \b
      difftrt train vae --run runs/shapes64 --steps 1500
      difftrt train unet --run runs/shapes64 --steps 15000 --batch-size 64
      difftrt export --ckpt runs/shapes64/model --out export/shapes64
    """
    _needs_export_extra()
    from difftrt.train.common import TrainConfig
    from difftrt.train.run import train_stage

    if steps < 1 or batch_size < 1 or not (0 <= cond_drop < 1) or lr <= 0:
        raise UsageError("--steps and --batch-size must be >= 1, --lr > 0 and --cond-drop in [0, 1)")
    cfg = TrainConfig(stage=stage, steps=steps, batch_size=batch_size, lr=lr, seed=seed, cond_drop=cond_drop,
                      ema_decay=ema_decay, checkpoint_every=checkpoint_every, sample_every=sample_every,
                      max_minutes=max_minutes)
    meta = train_stage(stage, run_dir, preset, cfg, data=data, cache_size=cache_size, resume=resume, quiet=quiet)
    _say(quiet)(f"{stage}: step {meta['step']}/{steps}, {meta['wall_seconds'] / 60:.1f} min in total, state in {run_dir / stage}")


if __name__ == "__main__":
    main()

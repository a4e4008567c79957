"""``difftrt sample``: prompt -> PNG with an exported model (torch not needed)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import click

from difftrt.cli.common import engine_or_default, load_latents, progress_bar, say
from difftrt.errors import UsageError


@click.command()
@click.option("--engine", type=click.Path(path_type=Path), default=None,
              help="Export folder or one of its component files (unet/model.onnx), or an engine folder from `difftrt "
                   "build` (engines/NAME) or one of its .plan files. Default: the built-in default model (exported on "
                   "first use).")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default=None,
              help="Backend. Default: chosen by the engine file (.onnx or an export folder: onnxruntime; .plan: tensorrt).")
@click.option("--prompt", default="a large red circle on the left on a white background", show_default=True)
@click.option("--negative-prompt", default="", help="Prompt to steer away from (the unconditional half of guidance).")
@click.option("--steps", type=int, default=25, show_default=True)
@click.option("--guidance", type=float, default=5.0, show_default=True, help="Classifier-free guidance scale; 1 disables it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--scheduler", default=None, help="ddim, ddpm, euler, euler-a, dpm++2m, lms, pndm, heun, unipc or a diffusers "
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
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="ONNX Runtime device (TensorRT plans always run on the local GPU).")
@click.option("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default).")
@click.option("--cuda-graph", is_flag=True, help="Replay CUDA graphs: TensorRT plans built with --static, or ONNX "
              "Runtime's U-Net and text encoder with --device cuda (one image size per process).")
@click.option("--verify", is_flag=True, help="Hash every file of the export before running (default: a quick "
              "size+mtime check that falls back to hashing when anything changed).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or messages.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path), default=None,
              help="Batch: a JSONL file, one request per line (prompt, negative_prompt, steps, guidance, seed, "
                   "scheduler, height, width, num_images, eta; the options above are the defaults, a line's seed "
                   "defaults to --seed + its index). Resumable: finished images are skipped.")
@click.option("--out-dir", type=click.Path(path_type=Path), default=None,
              help="Batch: where each line's PNG (INDEX-seedSEED.png) and results.jsonl go.")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Batch: processes, each loading the engines once.")
@click.option("--scheduler-address", default=None,
              help="Batch: render on the Dask cluster whose scheduler is at tcp://HOST:PORT (pip install "
                   "'difftrt[dask]'; the engine folder must be readable on every worker at the same path).")
def sample(engine, backend, prompt, negative_prompt, steps, guidance, seed, scheduler, eta, num_images, height, width,
           latents_path, save_intermediates, init_image, strength, out, device, threads, cuda_graph, verify, quiet,
           as_json, prompts_file, out_dir, workers, scheduler_address) -> None:
    """Generate images from a prompt with an exported model (torch not needed).

    \b
      difftrt sample --prompt "a large red circle on the left on a white background" --out out.png
      difftrt sample --engine export/tiny/unet/model.onnx --steps 25 --guidance 5 --seed 0 --out out.png
      difftrt sample --init-image in.png --strength 0.6 --prompt "a blue square" --out out.png
      difftrt sample --prompts prompts.jsonl --out-dir renders/ --workers 2
    """
    if prompts_file is not None:
        from difftrt.cli.batch import render_file

        unsupported = [flag for flag, used in (("--latents", latents_path), ("--init-image", init_image),
                                               ("--save-intermediates", save_intermediates),
                                               ("--device cuda", device != "cpu"), ("--backend", backend),
                                               ("--cuda-graph", cuda_graph)) if used]
        if unsupported:
            raise UsageError(f"{', '.join(unsupported)}: not available with --prompts (batch rendering runs "
                             "ONNX Runtime on CPU, text-to-image)")

        defaults = {"prompt": prompt, "negative_prompt": negative_prompt, "steps": steps, "guidance": guidance,
                    "seed": seed, "num_images": num_images, "eta": eta, "scheduler": scheduler, "height": height,
                    "width": width}
        return render_file(prompts_file, out_dir, workers, engine, {k: v for k, v in defaults.items() if v is not None},
                           threads, quiet, as_json, scheduler_address, verify)
    from difftrt.artifact import Verify
    from difftrt.fileio import check_new_folder, check_writable_file
    from difftrt.images import load_image, save_png
    from difftrt.intermediates import IntermediateRecorder
    from difftrt.pipeline import SampleRequest
    from difftrt.runtime import load_pipeline
    from difftrt.schedulers import from_config

    tell = say(quiet)
    request = SampleRequest(prompt, negative_prompt, steps, guidance, seed, num_images, height, width, eta,
                            load_latents(latents_path), strength=strength)
    request.check()
    check_writable_file(out)
    if save_intermediates is not None:
        check_new_folder(save_intermediates, "--save-intermediates")
    pipe, artifact = load_pipeline(engine_or_default(engine, tell), device=device, threads=threads,
                                   img2img=init_image is not None, backend=backend,
                                   verify=Verify.FULL if verify else Verify.QUICK, cuda_graph=cuda_graph)
    sched = from_config(artifact.scheduler_config, scheduler)
    _, _, h, w = pipe.latent_shape(request)
    if init_image is not None:
        f = pipe.config.vae.downsample_factor
        request = replace(request, init_image=load_image(init_image, w * f, h * f))
    recorder = IntermediateRecorder() if save_intermediates else None
    start = time.perf_counter()
    n_steps = len(pipe.timesteps(request, sched))  # fewer than --steps for img2img
    with progress_bar(n_steps, quiet) as bar:
        def on_step(i, t, x, x0):
            bar.update(1)
            if recorder:
                recorder(i, t, x, x0)

        result = pipe(request, sched, callback=on_step)
    elapsed = time.perf_counter() - start
    if result.truncated:
        tell(f"warning: prompt truncated to {pipe.tokenizer.max_length} tokens; dropped: {result.dropped!r}")
    if result.unknown_words:
        tell(f"warning: words not in the vocabulary: {', '.join(result.unknown_words)}")
    if recorder:
        recorder.write(save_intermediates, pipe.decode)
    save_png(result.images, out)
    if as_json:
        click.echo(json.dumps({"out": str(out), "engine": str(artifact.folder), "backend": pipe.engines["unet"].backend,
                               "verified": artifact.verified.value, "scheduler": type(sched).__name__,
                               "steps": steps, "steps_run": n_steps, "guidance": guidance, "seed": seed,
                               "seconds": elapsed, "truncated": result.truncated,
                               "unknown_words": list(result.unknown_words)}))
    else:
        tell(f"wrote {out} ({elapsed:.2f} s)")


COMMANDS = (sample,)

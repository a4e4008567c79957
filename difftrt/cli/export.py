"""``difftrt export``: a checkpoint -> ONNX files + manifest, validated against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import click

from difftrt.cli.common import needs_export_extra, say
from difftrt.errors import OutputError, UsageError


@click.command()
@click.option("--ckpt", type=click.Path(path_type=Path), default=None,
              help="A difftrt checkpoint or a diffusers Stable Diffusion folder (model_index.json, unet/, vae/, "
                   "text_encoder/, tokenizer/, scheduler/; safetensors weights). Default: the built-in default model.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Export folder. Default: export/NAME.")
@click.option("--overwrite", is_flag=True, help="Replace an existing export folder.")
@click.option("--max-batch", type=int, default=8, show_default=True,
              help="Images per call the recorded ranges cover (and validation runs at); the U-Net's range is twice "
                   "that, for classifier-free guidance.")
@click.option("--max-size", type=int, default=None,
              help="Largest image side in pixels the recorded ranges cover (and validation runs at) "
                   "[default: twice the model's default size].")
@click.option("--min-size", type=int, default=None,
              help="Smallest image side in pixels the ranges cover [default: the model's factor; for diffusers "
                   "folders half the default size, as TensorRT's demo].")
@click.option("--external-data", is_flag=True,
              help="Keep every component's weights in a model.onnx.data file beside its graph (always done above "
                   "protobuf's 2 GiB limit).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="U-Net and text encoder precision (fp16: fp16 weights and I/O, normalisation and softmax in fp32).")
@click.option("--vae-precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="VAE decoder and encoder precision (fp32 unless asked: SD's VAE overflows in fp16).")
@click.option("--atol", type=float, default=None, help="Validation: absolute tolerance against the fp32 torch model "
              "[default: 1e-4 for fp32 components, 2e-2 for fp16 ones].")
@click.option("--rtol", type=float, default=None, help="Validation: relative tolerance [default: 1e-3 fp32, 2e-2 fp16].")
@click.option("--quiet", "-q", is_flag=True, help="No progress messages.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's validation summary as JSON.")
def export(ckpt: Path | None, out: Path | None, overwrite: bool, max_batch: int, max_size: int | None,
           min_size: int | None, external_data: bool, precision: str, vae_precision: str, atol: float | None, rtol: float | None, quiet: bool,
           as_json: bool) -> None:
    """Export a checkpoint to ONNX and validate every file against PyTorch.

    Writes one subfolder per component (text_encoder/, unet/, vae_decoder/, vae_encoder/, each with model.onnx),
    the tokenizer and manifest.json (specs with min/opt/max ranges, hashes, configs, and the max abs/rel
    errors at the corners of every range). Fails, leaving nothing behind, when ONNX disagrees with torch.

    \b
      difftrt export --ckpt ckpt/tiny --out export/tiny
      difftrt export --ckpt ckpt/tiny --out export/tiny-fp16 --precision fp16
      difftrt export --ckpt ~/models/stable-diffusion-v1-5 --out export/sd15 --max-batch 1 --max-size 512
    """
    from difftrt import default_model

    load_source, export_checkpoint = needs_export_extra()
    from difftrt.exporter.onnx import Tolerance, default_tolerance
    from difftrt.models.specs import Precision

    if max_batch < 1:
        raise UsageError(f"--max-batch must be >= 1, got {max_batch}")
    for flag, value in (("--max-size", max_size), ("--min-size", min_size)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    out = out or Path("export") / (ckpt.resolve().name if ckpt else default_model.NAME)
    if out.exists() and not overwrite:  # said before minutes of loading, not after (atomic_dir checks it again)
        raise OutputError(f"{out} already exists; choose another --out or pass --overwrite")
    tell = say(quiet)
    if ckpt is None:
        loaded = default_model.load_checkpoint()
    else:
        loaded = load_source(ckpt, progress=tell, max_batch=max_batch, max_size=max_size, min_size=min_size)

    def tolerance(component: str, p: Precision) -> Tolerance:  # an option given overrides that bound
        d = default_tolerance(component, p)
        return Tolerance(d.atol if atol is None else atol, d.rtol if rtol is None else rtol)

    low, vae = Precision(precision), Precision(vae_precision)
    precisions = {"text_encoder": low, "unet": low, "vae_decoder": vae, "vae_encoder": vae}
    manifest = export_checkpoint(loaded, out, overwrite=overwrite, tolerance=tolerance, max_batch=max_batch,
                                 max_size=max_size, min_size=min_size, precision=precisions, external_data=external_data,
                                 source=str(ckpt.resolve()) if ckpt else default_model.SOURCE, progress=tell)
    summary = {name: {"precision": c["precision"], **{k: c["validation"][k] for k in ("max_abs_err", "max_rel_err")}}
               for name, c in manifest["components"].items()}
    if as_json:
        click.echo(json.dumps({"out": str(out), "validation": summary}, indent=2))
        return
    for comp, errs in summary.items():
        tell(f"  {comp:<13} {errs['precision']}  max abs err {errs['max_abs_err']:.2e}  max rel err {errs['max_rel_err']:.2e}")
    click.echo(str(out))


COMMANDS = (export,)

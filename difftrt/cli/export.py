"""``difftrt export``: a checkpoint -> ONNX files + manifest, validated against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import click

from difftrt.cli.common import needs_export_extra, say
from difftrt.errors import UsageError


@click.command()
@click.option("--ckpt", type=click.Path(path_type=Path), default=None,
              help="Checkpoint folder (diffusers layout). Default: the built-in default model.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Export folder. Default: export/NAME.")
@click.option("--overwrite", is_flag=True, help="Replace an existing export folder.")
@click.option("--max-batch", type=int, default=8, show_default=True,
              help="Images per call the recorded ranges cover (and validation runs at); the U-Net's range is twice "
                   "that, for classifier-free guidance.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="U-Net and text encoder precision (fp16: fp16 weights and I/O, normalisation and softmax in fp32).")
@click.option("--vae-precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="VAE decoder and encoder precision (fp32 unless asked: SD's VAE overflows in fp16).")
@click.option("--atol", type=float, default=None, help="Validation: absolute tolerance against the fp32 torch model "
              "[default: 1e-4 for fp32 components, 2e-2 for fp16 ones].")
@click.option("--rtol", type=float, default=None, help="Validation: relative tolerance [default: 1e-3 fp32, 2e-2 fp16].")
@click.option("--quiet", "-q", is_flag=True, help="No progress messages.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's validation summary as JSON.")
def export(ckpt: Path | None, out: Path | None, overwrite: bool, max_batch: int, precision: str, vae_precision: str,
           atol: float | None, rtol: float | None, quiet: bool, as_json: bool) -> None:
    """Export a checkpoint to ONNX and validate every file against PyTorch.

    Writes one subfolder per component (text_encoder/, unet/, vae_decoder/, vae_encoder/, each with model.onnx),
    the tokenizer and manifest.json (specs with min/opt/max ranges, hashes, configs, and the max abs/rel
    errors at the corners of every range). Fails, leaving nothing behind, when ONNX disagrees with torch.

    \b
      difftrt export --ckpt ckpt/tiny --out export/tiny
      difftrt export --ckpt ckpt/tiny --out export/tiny-fp16 --precision fp16
    """
    from difftrt import default_model

    checkpoint, export_checkpoint = needs_export_extra()
    from difftrt.exporter.onnx import DEFAULT_TOLERANCES, Tolerance
    from difftrt.models.specs import Precision

    if max_batch < 1:
        raise UsageError(f"--max-batch must be >= 1, got {max_batch}")
    if ckpt is None:
        loaded, name = default_model.load_checkpoint(), default_model.NAME
    else:
        loaded, name = checkpoint.load(ckpt), ckpt.resolve().name
    out = out or Path("export") / name
    tell = say(quiet)
    tolerances = {p: Tolerance(d.atol if atol is None else atol, d.rtol if rtol is None else rtol)
                  for p, d in DEFAULT_TOLERANCES.items()}  # an option given overrides that bound, per precision
    low, vae = Precision(precision), Precision(vae_precision)
    precisions = {"text_encoder": low, "unet": low, "vae_decoder": vae, "vae_encoder": vae}
    manifest = export_checkpoint(loaded, out, overwrite=overwrite, tolerances=tolerances, max_batch=max_batch,
                                 precision=precisions,
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

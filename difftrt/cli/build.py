"""``difftrt build``: an export -> TensorRT plans (fp16 where the export is), cached by build key."""

from __future__ import annotations

import json
from pathlib import Path

import click

from difftrt.cli.common import say


def _sizes(value: str | None) -> tuple[int, ...]:
    from difftrt.errors import UsageError

    if not value:
        return ()
    try:
        sizes = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise UsageError(f"--sizes takes comma-separated pixel sizes such as 64,96, got {value!r}") from None
    if any(s < 1 for s in sizes):
        raise UsageError(f"--sizes must be positive, got {value!r}")
    return sizes


@click.command()
@click.option("--export", "export_dir", type=click.Path(path_type=Path), required=True,
              help="Export folder written by `difftrt export` (hashed in full before building).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Engine folder. Default: engines/NAME.")
@click.option("--arch", "archs", multiple=True, help="Target GPU, e.g. sm86 (repeatable). Default: this machine's GPU.")
@click.option("--max-batch", type=int, default=None,
              help="Images per call the plans hold (the U-Net's profile gets twice that). Default: the export's.")
@click.option("--sizes", default=None, help="Pixel sizes the plans hold, e.g. 64,96: min/opt/max = smallest/first/"
              "largest. Default: the export's ranges.")
@click.option("--builder", type=click.Choice(["tensorrt", "tensorrt-rtx"]), default=None,
              help="Which TensorRT builds. Default: full TensorRT when it imports, else TensorRT-RTX.")
@click.option("--static", is_flag=True, help="One batch (--max-batch) at one size (the first of --sizes): min=opt=max. "
              "The U-Net's batch is then 2N rows, so such plans need guidance != 1.")
@click.option("--overwrite", is_flag=True, help="Replace an --out folder that is not an engine folder of this export "
              "(or drop the plans of targets not named again).")
@click.option("--quiet", "-q", is_flag=True, help="No progress messages.")
@click.option("--json", "as_json", is_flag=True, help="Print each plan's build record as JSON.")
def build(export_dir: Path, out: Path | None, archs: tuple[str, ...], max_batch: int | None, sizes: str | None,
          builder: str | None, static: bool, overwrite: bool, quiet: bool, as_json: bool) -> None:
    """Build one TensorRT plan per component and target from an export.

    Uses full TensorRT when `tensorrt` imports, else TensorRT-RTX (which builds on a machine without a GPU, for
    the --arch you name). Networks are strongly typed: each layer's precision is the ONNX graph's (export with
    --precision fp16 for fp16 plans). Plans whose build key matches one in --out are reused.

    \b
      difftrt build --export export/tiny --out engines/tiny --arch sm86
      difftrt build --export export/tiny-fp16 --arch sm86 --arch sm89 --max-batch 2 --sizes 64,96
      difftrt build --export export/tiny --arch sm89 --static --max-batch 1 --sizes 64
    """
    from difftrt.trt.build import BuildOptions, build_engines

    tell = say(quiet)
    manifest = build_engines(export_dir, out, tuple(a.lower() for a in archs),
                             BuildOptions(max_batch=max_batch, sizes=_sizes(sizes), static=static),
                             overwrite=overwrite, flavour=builder.replace("-", "_") if builder else None, progress=tell)
    if as_json:
        click.echo(json.dumps({"out": manifest["out"], "builder": manifest["builder"], "plans": manifest["plans"]},
                              indent=2))
        return
    click.echo(manifest["out"])


COMMANDS = (build,)

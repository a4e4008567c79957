"""``difftrt train`` (VAE, then text encoder + U-Net) and ``difftrt init-checkpoint`` (untrained weights)."""

from __future__ import annotations

from pathlib import Path

import click

from difftrt.cli.common import needs_export_extra, say
from difftrt.errors import UsageError


@click.command("init-checkpoint")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Checkpoint folder to create.")
@click.option("--preset", default="shapes64", show_default=True, help="Architecture (see `difftrt train --help`).")
@click.option("--seed", type=int, default=0, show_default=True, help="Weight-initialisation seed.")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder.")
def init_checkpoint(out: Path, preset: str, seed: int, overwrite: bool) -> None:
    """Create an untrained checkpoint (diffusers folder layout), e.g. to test an export.

    \b
      difftrt init-checkpoint --out ckpt/tiny --preset tiny --seed 0
    """
    needs_export_extra()
    from difftrt.models import checkpoint
    from difftrt.train.presets import preset_config

    checkpoint.save(checkpoint.create(preset_config(preset), seed=seed), out, overwrite=overwrite)
    click.echo(str(out))


@click.command()
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
    needs_export_extra()
    from difftrt.train.common import TrainConfig
    from difftrt.train.run import train_stage

    if steps < 1 or batch_size < 1 or not (0 <= cond_drop < 1) or lr <= 0:
        raise UsageError("--steps and --batch-size must be >= 1, --lr > 0 and --cond-drop in [0, 1)")
    cfg = TrainConfig(stage=stage, steps=steps, batch_size=batch_size, lr=lr, seed=seed, cond_drop=cond_drop,
                      ema_decay=ema_decay, checkpoint_every=checkpoint_every, sample_every=sample_every,
                      max_minutes=max_minutes)
    meta = train_stage(stage, run_dir, preset, cfg, data=data, cache_size=cache_size, resume=resume, quiet=quiet)
    say(quiet)(f"{stage}: step {meta['step']}/{steps}, {meta['wall_seconds'] / 60:.1f} min in total, state in {run_dir / stage}")


COMMANDS = (init_checkpoint, train)

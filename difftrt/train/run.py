"""Entry point behind ``difftrt train STAGE``: picks the model preset, the data and the stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from difftrt.errors import ConfigError
from difftrt.models.checkpoint import DEFAULT_SCHEDULER
from difftrt.models.tokenizer import Tokenizer
from difftrt.train.common import TrainConfig
from difftrt.train.presets import preset_config

STAGES = ("vae", "unet")


def dataset_for(data: Path | None, size: int, data_seed: int) -> Any:
    """The procedural shapes dataset, or the user's image folder (images resized to ``size``)."""
    if data is not None:
        from difftrt.data.folder import ImageFolderDataset

        return ImageFolderDataset(data, size)
    from difftrt.data.shapes import ShapesDataset

    return ShapesDataset(seed=data_seed, size=size)


def sample_prompts(dataset: Any, n: int = 8) -> list[str]:
    from difftrt.data.shapes import ShapesDataset, eval_prompts

    if isinstance(dataset, ShapesDataset):
        return [prompt for prompt, _ in eval_prompts(seed=12345, n=n)]
    return dataset.batch(0, n)[1]


def train_stage(stage: str, run: Path, preset: str, cfg: TrainConfig, *, data: Path | None = None,
                cache_size: int = 50_000, resume: bool = False, quiet: bool = False) -> dict[str, Any]:
    model_cfg = preset_config(preset)
    tokenizer = Tokenizer.default(model_cfg.text_encoder.max_length)
    if len(tokenizer) > model_cfg.text_encoder.vocab_size:
        raise ConfigError(f"tokenizer has {len(tokenizer)} tokens, preset {preset} only {model_cfg.text_encoder.vocab_size}")
    dataset = dataset_for(data, model_cfg.vae.sample_size, cfg.data_seed)
    if stage == "vae":
        from difftrt.train.vae import train_vae

        return train_vae(run, model_cfg, cfg, dataset, resume=resume, quiet=quiet)
    from difftrt.train.unet import train_unet

    return train_unet(run, model_cfg, cfg, dataset, tokenizer, dict(DEFAULT_SCHEDULER), cache_size=cache_size,
                      sample_prompts=sample_prompts(dataset), resume=resume, quiet=quiet)

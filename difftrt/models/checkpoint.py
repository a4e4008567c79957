"""Checkpoint folders in the diffusers layout: one sub-folder per component, configs as JSON, weights as safetensors.

    CKPT/model_index.json
    CKPT/unet/config.json          CKPT/unet/diffusion_pytorch_model.safetensors
    CKPT/vae/config.json           CKPT/vae/diffusion_pytorch_model.safetensors
    CKPT/text_encoder/config.json  CKPT/text_encoder/model.safetensors
    CKPT/tokenizer/vocab.json      CKPT/tokenizer/tokenizer_config.json
    CKPT/scheduler/scheduler_config.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

import difftrt
from difftrt.config import ModelConfig, model_config_from_dict, read_json, to_dict
from difftrt.errors import ArtifactError, ConfigError
from difftrt.fileio import atomic_dir
from difftrt.models.text_encoder import TextEncoder
from difftrt.models.tokenizer import Tokenizer
from difftrt.models.unet import UNet
from difftrt.models.vae import AutoencoderKL

WEIGHTS = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
           "text_encoder": "model.safetensors"}

DEFAULT_SCHEDULER = {  # Stable Diffusion 1.x's training schedule, run with DDIM
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "skip_prk_steps": True,  # read by PNDM only (--scheduler pndm), as Stable Diffusion 1.x ships it
}


@dataclass
class Checkpoint:
    """A loaded text-to-image model (torch modules in eval mode) with everything needed to export it."""

    config: ModelConfig
    unet: UNet
    vae: AutoencoderKL
    text_encoder: TextEncoder
    tokenizer: Tokenizer
    scheduler_config: dict
    default_min_size = None  # ranges start at the model's factor: small models run at any multiple of it

    def modules(self) -> dict[str, nn.Module]:
        return {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder}

    def component_modules(self) -> dict[str, nn.Module]:
        """Exported component name (as in the specs) -> the module whose ``forward`` takes its inputs in order."""
        return {"text_encoder": self.text_encoder, "unet": self.unet,
                "vae_decoder": self.vae.decoder, "vae_encoder": self.vae.encoder}


def create(config: ModelConfig, seed: int = 0, tokenizer: Tokenizer | None = None) -> Checkpoint:
    """A freshly initialised (untrained) model; deterministic for a given seed."""
    tokenizer = tokenizer or Tokenizer.default(config.text_encoder.max_length)
    if len(tokenizer) > config.text_encoder.vocab_size:
        raise ConfigError(f"tokenizer has {len(tokenizer)} tokens but text_encoder.vocab_size is {config.text_encoder.vocab_size}")
    torch.manual_seed(seed)
    ckpt = Checkpoint(config, UNet(config.unet), AutoencoderKL(config.vae), TextEncoder(config.text_encoder),
                      tokenizer, dict(DEFAULT_SCHEDULER))
    for module in ckpt.modules().values():
        module.eval()
    return ckpt


def save(ckpt: Checkpoint, out: Path, overwrite: bool = False, dtype: torch.dtype | None = None) -> None:
    """Write the checkpoint folder atomically; ``dtype`` (e.g. float16, to ship) casts floating weights."""
    with atomic_dir(Path(out), overwrite) as tmp:
        (tmp / "model_index.json").write_text(json.dumps(
            {"_class_name": "DifftrtText2ImagePipeline", "_difftrt_version": difftrt.__version__,
             "unet": ["difftrt", "UNet"], "vae": ["difftrt", "AutoencoderKL"],
             "text_encoder": ["difftrt", "TextEncoder"], "tokenizer": ["difftrt", "Tokenizer"],
             "scheduler": ["difftrt", ckpt.scheduler_config["_class_name"]]}, indent=2) + "\n")
        configs = {"unet": ckpt.config.unet, "vae": ckpt.config.vae, "text_encoder": ckpt.config.text_encoder}
        for name, module in ckpt.modules().items():
            (tmp / name).mkdir()
            (tmp / name / "config.json").write_text(json.dumps(to_dict(configs[name]), indent=2) + "\n")
            state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous()
                     for k, v in module.state_dict().items()}
            save_file(state, str(tmp / name / WEIGHTS[name]), metadata={"format": "pt"})
        ckpt.tokenizer.save(tmp / "tokenizer")
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(ckpt.scheduler_config, indent=2) + "\n")


def _load_weights(module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ArtifactError(f"missing weights file {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read weights {path}: corrupt or not safetensors ({exc})") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ArtifactError(f"weights {path} do not fit the config beside them: {first}") from None


def load(folder: Path) -> Checkpoint:
    """Read a checkpoint folder; every problem becomes an ``ArtifactError``/``ConfigError`` naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"checkpoint folder {folder} does not exist")
    config = model_config_from_dict({name: read_json(folder / name / "config.json") for name in WEIGHTS})
    tokenizer = Tokenizer.load(folder / "tokenizer")
    if tokenizer.max_length != config.text_encoder.max_length:
        raise ConfigError(f"tokenizer max_length {tokenizer.max_length} != text_encoder.max_length {config.text_encoder.max_length}")
    ckpt = Checkpoint(config, UNet(config.unet), AutoencoderKL(config.vae), TextEncoder(config.text_encoder),
                      tokenizer, read_json(folder / "scheduler" / "scheduler_config.json"))
    for name, module in ckpt.modules().items():
        _load_weights(module, folder / name / WEIGHTS[name])
        module.eval()
    return ckpt

"""Model configuration: frozen dataclasses with an explicit JSON round-trip.

These describe the architecture only; they import neither torch nor onnxruntime, so the torch-free
runtime can read them from an artifact manifest.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from difftrt.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass from a dict; unknown keys are an error (configs are ours, not foreign)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names - {"_class_name"})
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; expected some of {sorted(names)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """The JSON-ready dict of a config dataclass, with its class name."""
    data = dataclasses.asdict(config)
    return {"_class_name": type(config).__name__, **{k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}}


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, turning I/O and syntax problems into ``ConfigError``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"missing config file {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a JSON object, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class UNetConfig:
    """Conditional latent U-Net (LDM / Stable-Diffusion layout, scaled down)."""

    in_channels: int = 4  # latent channels in
    out_channels: int = 4  # model output channels (eps / v / x0 prediction)
    block_channels: tuple[int, ...] = (32, 64, 64)  # channels per resolution level, top first
    layers_per_block: int = 1  # ResBlocks per level on the way down (one more on the way up)
    attention_levels: tuple[int, ...] = (1, 2)  # level indices with self+cross attention (lower resolutions)
    num_heads: int = 4  # attention heads
    cross_attention_dim: int = 64  # width of the text encoder's hidden states
    norm_groups: int = 8  # GroupNorm groups
    sample_size: int = 16  # default latent height and width

    def __post_init__(self) -> None:
        if any(c % self.norm_groups for c in self.block_channels):
            raise ValueError(f"block_channels {self.block_channels} must be multiples of norm_groups {self.norm_groups}")
        if any(not 0 <= i < len(self.block_channels) for i in self.attention_levels):
            raise ValueError(f"attention_levels {self.attention_levels} out of range")

    @property
    def downsample_factor(self) -> int:
        """Latent sizes must be multiples of this."""
        return 2 ** (len(self.block_channels) - 1)


@dataclass(frozen=True)
class VAEConfig:
    """KL-regularised autoencoder (the latent-diffusion first stage)."""

    in_channels: int = 3  # image channels
    latent_channels: int = 4  # latent channels
    block_channels: tuple[int, ...] = (32, 64, 64)  # channels per level; len-1 downsamplings
    layers_per_block: int = 1  # ResBlocks per level
    norm_groups: int = 8  # GroupNorm groups
    scaling_factor: float = 0.18215  # latents are multiplied by this before diffusion (SD's value)
    sample_size: int = 64  # default image height and width

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_channels) - 1)


@dataclass(frozen=True)
class TextEncoderConfig:
    """Small CLIP-style transformer text encoder (causal self-attention, final LayerNorm)."""

    vocab_size: int = 64  # must cover the tokenizer's vocabulary
    max_length: int = 16  # tokens per prompt, including BOS/EOS (fixed, like CLIP's 77)
    hidden_size: int = 64  # width of the hidden states handed to the U-Net
    num_layers: int = 2  # transformer blocks
    num_heads: int = 4  # attention heads


@dataclass(frozen=True)
class ModelConfig:
    """The whole text-to-image model: one config per component."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)

    def __post_init__(self) -> None:
        if self.unet.cross_attention_dim != self.text_encoder.hidden_size:
            raise ValueError("unet.cross_attention_dim must equal text_encoder.hidden_size")
        if self.unet.in_channels != self.vae.latent_channels:
            raise ValueError("unet.in_channels must equal vae.latent_channels")

    @property
    def latent_factor(self) -> int:
        """Image sizes must be multiples of this (VAE downsampling × U-Net downsampling)."""
        return self.vae.downsample_factor * self.unet.downsample_factor


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Inverse of ``model_config_to_dict``; problems become ``ConfigError``."""
    try:
        return ModelConfig(
            unet=from_dict(UNetConfig, data["unet"]),
            vae=from_dict(VAEConfig, data["vae"]),
            text_encoder=from_dict(TextEncoderConfig, data["text_encoder"]),
        )
    except KeyError as exc:
        raise ConfigError(f"model config lacks the {exc} section") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"inconsistent model config: {exc}") from None


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    return {"unet": to_dict(config.unet), "vae": to_dict(config.vae), "text_encoder": to_dict(config.text_encoder)}

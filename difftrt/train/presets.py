"""Named model configurations for training."""

from __future__ import annotations

from difftrt.config import ModelConfig, TextEncoderConfig, UNetConfig, VAEConfig
from difftrt.errors import ConfigError

PRESETS: dict[str, ModelConfig] = {
    # The bundled model: 64×64 RGB, 16×16×4 latents, ~1.6 M-parameter U-Net, ~0.7 M VAE, ~0.1 M text encoder.
    "shapes64": ModelConfig(
        unet=UNetConfig(block_channels=(32, 64, 64), attention_levels=(1, 2), num_heads=4, cross_attention_dim=64),
        vae=VAEConfig(block_channels=(16, 32, 64), norm_groups=8, sample_size=64),
        text_encoder=TextEncoderConfig(vocab_size=64, max_length=16, hidden_size=64, num_layers=2, num_heads=4),
    ),
    # For tests: seconds per hundred steps.
    "tiny": ModelConfig(
        unet=UNetConfig(block_channels=(16, 32), attention_levels=(1,), num_heads=2, cross_attention_dim=32, sample_size=8),
        vae=VAEConfig(block_channels=(8, 16), norm_groups=4, sample_size=16),
        text_encoder=TextEncoderConfig(vocab_size=64, max_length=16, hidden_size=32, num_layers=1, num_heads=2),
    ),
}


def preset_config(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]

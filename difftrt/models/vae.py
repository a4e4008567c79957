"""KL-regularised autoencoder (latent-diffusion first stage): image (B,3,H,W) in [-1,1] <-> latent (B,C,H/f,W/f).

The encoder outputs the Gaussian posterior's moments [mean, log-variance] stacked on channels (B, 2C, h, w),
as diffusers' ``DiagonalGaussianDistribution`` reads them; sampling and ``scaling_factor`` live in the caller.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from difftrt.config import VAEConfig
from difftrt.models.layers import Attention, Downsample, ResBlock, Upsample


class _MidBlock(nn.Module):
    """ResBlock → single-head spatial self-attention → ResBlock at the lowest resolution."""

    def __init__(self, c: int, groups: int) -> None:
        super().__init__()
        self.res1, self.res2 = ResBlock(c, c, groups), ResBlock(c, c, groups)
        self.norm, self.attn = nn.GroupNorm(groups, c), Attention(c, heads=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.res1(x)
        b, c, hh, ww = h.shape
        tokens = self.norm(h).flatten(2).transpose(1, 2)
        h = h + self.attn(tokens).transpose(1, 2).reshape(b, c, hh, ww)
        return self.res2(h)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, g = cfg.block_channels, cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        blocks, c = [], ch[0]
        for i, c_out in enumerate(ch):
            for _ in range(cfg.layers_per_block):
                blocks.append(ResBlock(c, c_out, g))
                c = c_out
            if i < len(ch) - 1:
                blocks.append(Downsample(c))
        self.blocks = nn.Sequential(*blocks)
        self.mid = _MidBlock(c, g)
        self.norm_out = nn.GroupNorm(g, c)
        self.conv_out = nn.Conv2d(c, 2 * cfg.latent_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.blocks(self.conv_in(sample)))
        return self.quant_conv(self.conv_out(F.silu(self.norm_out(h))))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, g = cfg.block_channels, cfg.norm_groups
        c = ch[-1]
        self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 1)
        self.conv_in = nn.Conv2d(cfg.latent_channels, c, 3, padding=1)
        self.mid = _MidBlock(c, g)
        blocks = []
        for i, c_out in reversed(list(enumerate(ch))):
            for _ in range(cfg.layers_per_block + 1):
                blocks.append(ResBlock(c, c_out, g))
                c = c_out
            if i > 0:
                blocks.append(Upsample(c))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = nn.GroupNorm(g, c)
        self.conv_out = nn.Conv2d(c, cfg.in_channels, 3, padding=1)

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(self.post_quant_conv(latent_sample)))
        return self.conv_out(F.silu(self.norm_out(self.blocks(h))))


class AutoencoderKL(nn.Module):
    """Encoder + decoder; ``encode`` gives moments, ``decode`` an image; both unscaled (see module doc)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, sample: torch.Tensor) -> torch.Tensor:
        return self.encoder(sample)

    def decode(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent_sample)

"""Conditional latent U-Net: predicts the noise (or v / x0) in a latent, given a timestep and text states."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from difftrt.config import UNetConfig
from difftrt.models.layers import Downsample, ResBlock, SpatialTransformer, Upsample, timestep_embedding


class _Level(nn.Module):
    """One resolution level: ResBlocks, each followed by a SpatialTransformer when the level attends."""

    def __init__(self, c_ins: list[int], c_out: int, cfg: UNetConfig, temb_dim: int, attend: bool) -> None:
        super().__init__()
        g = cfg.norm_groups
        self.res = nn.ModuleList(ResBlock(c, c_out, g, temb_dim) for c in c_ins)
        self.attn = nn.ModuleList(
            SpatialTransformer(c_out, cfg.num_heads, cfg.cross_attention_dim, g) if attend else nn.Identity()
            for _ in c_ins
        )


class UNet(nn.Module):
    """``forward(sample (B,C,h,w), timestep (B,), encoder_hidden_states (B,L,D)) -> (B,C_out,h,w)``."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.config = cfg
        ch = cfg.block_channels
        temb_dim = 4 * ch[0]
        self.time_mlp = nn.Sequential(nn.Linear(ch[0], temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)

        skips, c = [ch[0]], ch[0]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, c_out in enumerate(ch):
            ins = [c] + [c_out] * (cfg.layers_per_block - 1)
            self.down.append(_Level(ins, c_out, cfg, temb_dim, i in cfg.attention_levels))
            c = c_out
            skips += [c] * cfg.layers_per_block
            last = i == len(ch) - 1
            self.downsample.append(nn.Identity() if last else Downsample(c))
            if not last:
                skips.append(c)

        self.mid_res1 = ResBlock(c, c, cfg.norm_groups, temb_dim)
        self.mid_attn = SpatialTransformer(c, cfg.num_heads, cfg.cross_attention_dim, cfg.norm_groups)
        self.mid_res2 = ResBlock(c, c, cfg.norm_groups, temb_dim)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, c_out in reversed(list(enumerate(ch))):
            ins = []
            for _ in range(cfg.layers_per_block + 1):
                ins.append(c + skips.pop())
                c = c_out
            self.up.append(_Level(ins, c_out, cfg, temb_dim, i in cfg.attention_levels))
            self.upsample.append(nn.Identity() if i == 0 else Upsample(c))

        self.norm_out = nn.GroupNorm(cfg.norm_groups, c)
        self.conv_out = nn.Conv2d(c, cfg.out_channels, 3, padding=1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        temb_in = timestep_embedding(timestep, self.config.block_channels[0])  # fp32: t up to 1000 needs it
        temb = self.time_mlp(temb_in.to(self.conv_in.weight.dtype))
        ctx = encoder_hidden_states
        h = self.conv_in(sample)
        skips = [h]
        for level, down in zip(self.down, self.downsample):
            for res, attn in zip(level.res, level.attn):
                h = res(h, temb)
                h = attn(h, ctx) if isinstance(attn, SpatialTransformer) else h
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, temb), ctx), temb)
        for level, up in zip(self.up, self.upsample):
            for res, attn in zip(level.res, level.attn):
                h = res(torch.cat([h, skips.pop()], dim=1), temb)
                h = attn(h, ctx) if isinstance(attn, SpatialTransformer) else h
            h = up(h)
        return self.conv_out(F.silu(self.norm_out(h)))

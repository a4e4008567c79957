"""CLIP-style text encoder: token + position embeddings, pre-LN causal transformer blocks, final LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

from difftrt.config import TextEncoderConfig
from difftrt.models.layers import Attention


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), causal=True)
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """``forward(input_ids (B, L) int64) -> last_hidden_state (B, L, hidden_size)``.

    Attention is causal, as in CLIP, so padding after ``<eos>`` never changes the states of real tokens.
    """

    def __init__(self, cfg: TextEncoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Parameter(torch.zeros(cfg.max_length, cfg.hidden_size))
        nn.init.normal_(self.position_embedding, std=0.01)
        self.blocks = nn.ModuleList(_Block(cfg.hidden_size, cfg.num_heads) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(input_ids) + self.position_embedding[: input_ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)

"""Causal Transformer backbone (pre-LayerNorm, GPT-style) that can return its attention weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POSITIONAL = ("sinusoidal", "learned", "none")


def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    """(max_len, d_model) fixed sin/cos position codes (Vaswani et al. 2017)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)  # each (B, L, D)
        q, k, v = (t.view(B, L, self.num_heads, D // self.num_heads).transpose(1, 2) for t in (q, k, v))
        if need_weights:  # explicit softmax, only for diagnostics: (B, H, L, L) weights
            scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.num_heads)
            causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
            weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            y = weights @ v
        else:  # fused kernel, never materialises the (L, L) matrix where the backend can avoid it
            weights = None
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, L, D): heads side by side again
        return self.out(y), weights


class Block(nn.Module):
    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, num_heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        attended, weights = self.attention(self.norm1(x), need_weights)
        x = x + self.drop(attended)  # residual stream (B, L, D)
        x = x + self.drop(self.mlp(self.norm2(x)))
        return x, weights


class Transformer(nn.Module):
    """Args:
        d_model: residual-stream width (embedding width and feature width).
        num_layers: Transformer blocks.
        num_heads: attention heads per block (must divide d_model).
        d_ff: hidden width of each block's MLP.
        positional: "sinusoidal" (fixed, no parameters), "learned" (max_len x d_model parameters) or
            "none" (causal attention alone still orders tokens, weakly).
        max_len: longest sequence accepted; sizes the position table.
        dropout: dropout on attention weights and residual branches.

    Initialisation: PyTorch's defaults for Linear and LayerNorm (Kaiming-uniform weights). The final
    LayerNorm makes the features' scale independent of depth, so the shared readout sees the same
    scale as with the recurrent backbones.
    """

    def __init__(
        self,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        d_ff: int = 256,
        positional: str = "sinusoidal",
        max_len: int = 4096,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if positional not in POSITIONAL:
            raise ValueError(f"model.positional={positional!r}; allowed: {', '.join(POSITIONAL)}")
        if d_model % num_heads:
            raise ValueError(f"model.num_heads={num_heads} must divide model.d_model={d_model}")
        self.d_input = self.d_output = d_model
        self.max_len, self.positional = max_len, positional
        if positional == "learned":
            self.position = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        else:
            table = sinusoidal_table(max_len, d_model) if positional == "sinusoidal" else torch.zeros(0)
            self.register_buffer("position", table, persistent=False)
        self.blocks = nn.ModuleList(Block(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def _positions(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds model.max_len={self.max_len}")
        return x if self.positional == "none" else x + self.position[: x.shape[1]]

    def forward(self, x: Tensor) -> Tensor:
        x = self._positions(x)  # (B, L, D)
        for block in self.blocks:
            x, _ = block(x)
        return self.norm(x)  # (B, L, D)

    def attention_maps(self, x: Tensor) -> list[Tensor]:
        """One (B, H, L, L) tensor per layer: row t holds how position t distributes its attention."""
        x, maps = self._positions(x), []
        for block in self.blocks:
            x, weights = block(x, need_weights=True)
            maps.append(weights)
        return maps

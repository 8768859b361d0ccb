"""Causal Transformer backbone (pre-LayerNorm, GPT-style) that can return its attention weights.

Training form: every position at once with ``scaled_dot_product_attention`` (a fused kernel that never
materialises the (L, L) matrix where the backend can avoid it). Recurrent form: one position at a time
with a key/value cache, the state that grows with the sequence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POSITIONAL = ("sinusoidal", "learned", "none")


def sinusoidal_table(max_len: int, width: int) -> Tensor:
    """(max_len, width) fixed sin/cos position codes (Vaswani et al. 2017)."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(max_len, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return table


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L, D) -> q, k, v, each (B, H, L, D / H)."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        return tuple(t.view(B, L, self.num_heads, D // self.num_heads).transpose(1, 2) for t in (q, k, v))

    def _merge(self, y: Tensor) -> Tensor:
        """(B, H, L, D / H) -> (B, L, D): heads side by side again, then the output projection."""
        B, H, L, d = y.shape
        return self.out(y.transpose(1, 2).reshape(B, L, H * d))

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        q, k, v = self._heads(x)
        if need_weights:  # explicit softmax, only for diagnostics: (B, H, L, L) weights
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            weights = scores.masked_fill(~self.visible(x.shape[1], x.device), float("-inf")).softmax(dim=-1)
            return self._merge(weights @ v), weights
        p = self.dropout if self.training else 0.0
        return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)), None

    def visible(self, length: int, device: torch.device) -> Tensor:
        """(L, L) bool: query t may attend to key s (here: every s <= t)."""
        return torch.ones(length, length, dtype=torch.bool, device=device).tril()

    def step(self, x: Tensor, cache: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One position (B, 1, D) against the cached keys and values (B, H, t, D / H) of the earlier ones."""
        q, k, v = self._heads(x)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        return self._merge(F.scaled_dot_product_attention(q, k, v)), (k, v)  # the new position sees all


class Block(nn.Module):
    """``attention``: the mixer (default: full causal attention); sliding-window attention passes its own."""

    def __init__(
        self,
        width: int,
        num_heads: int,
        d_ff: int,
        dropout: float,
        attention: CausalSelfAttention | None = None,
    ) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, num_heads, dropout) if attention is None else attention
        self.mlp = nn.Sequential(nn.Linear(width, d_ff), nn.GELU(), nn.Linear(d_ff, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        attended, weights = self.attention(self.norm1(x), need_weights)
        x = x + self.drop(attended)  # residual stream (B, L, D)
        return x + self.drop(self.mlp(self.norm2(x))), weights

    def step(self, x: Tensor, cache: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        attended, cache = self.attention.step(self.norm1(x), cache)
        x = x + attended  # (B, 1, D)
        return x + self.mlp(self.norm2(x)), cache


class Transformer(nn.Module):
    """Args:
        width: residual-stream width (embedding width and feature width), ``d_model`` in the literature.
        num_layers: Transformer blocks.
        num_heads: attention heads per block (must divide width).
        d_ff: hidden width of each block's MLP (default: 4 x width).
        positional: "sinusoidal" (fixed, no parameters), "learned" (max_len x width parameters) or
            "none" (causal attention alone still orders tokens, weakly).
        max_len: longest sequence accepted; sizes the position table.
        dropout: dropout on attention weights and residual branches.

    Initialisation: PyTorch's defaults for Linear and LayerNorm (Kaiming-uniform weights); learned
    positions N(0, 0.02). The final LayerNorm makes the features' scale independent of depth, so the
    shared readout sees the same scale as with the recurrent backbones.
    """

    def __init__(
        self,
        width: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        d_ff: int | None = None,
        positional: str = "sinusoidal",
        max_len: int = 4096,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if positional not in POSITIONAL:
            raise ValueError(f"model.positional={positional!r}; allowed: {', '.join(POSITIONAL)}")
        if width % num_heads:
            raise ValueError(f"model.num_heads={num_heads} must divide model.width={width}")
        self.d_input = self.d_output = width
        self.max_len, self.positional = max_len, positional
        if positional == "learned":
            self.position = nn.Parameter(torch.randn(max_len, width) * 0.02)
        else:
            table = sinusoidal_table(max_len, width) if positional == "sinusoidal" else torch.zeros(0)
            self.register_buffer("position", table, persistent=False)
        d_ff = 4 * width if d_ff is None else d_ff
        self.blocks = nn.ModuleList(
            Block(width, num_heads, d_ff, dropout, self.make_attention(width, num_heads, dropout))
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(width)

    def make_attention(self, width: int, num_heads: int, dropout: float) -> CausalSelfAttention:
        """The attention of each block (a hook for subclasses: models/window_attention.py)."""
        return CausalSelfAttention(width, num_heads, dropout)

    def _positions(self, x: Tensor, start: int = 0) -> Tensor:
        end = start + x.shape[1]
        if end > self.max_len:
            raise ValueError(f"sequence length {end} exceeds model.max_len={self.max_len}")
        return x if self.positional == "none" else x + self.position[start:end]

    def forward(self, x: Tensor) -> Tensor:
        x = self._positions(x)  # (B, L, D)
        for block in self.blocks:
            x, _ = block(x)
        return self.norm(x)  # (B, L, D)

    def step(self, x: Tensor, state: list[tuple[Tensor, Tensor]] | None) -> tuple[Tensor, list]:
        """State: per layer the (keys, values) cache, each (B, H, t, D / H) after t positions."""
        t = 0 if state is None else state[0][0].shape[2]  # positions seen so far
        return self._step_at(x, state, t)

    def _step_at(self, x: Tensor, state: list | None, t: int) -> tuple[Tensor, list]:
        """``step`` for position ``t``: (B, D) and each layer's cache -> (B, D) and the new caches."""
        x, caches = self._positions(x[:, None], start=t), []  # (B, 1, D)
        for i, block in enumerate(cast("Iterable[Block]", self.blocks)):  # ModuleList: nn.Modules to mypy
            x, cache = block.step(x, None if state is None else state[i])
            caches.append(cache)
        return self.norm(x)[:, 0], caches

    def state_size(self, seq_len: int) -> int:
        return 2 * len(self.blocks) * seq_len * self.d_output  # keys and values of every position, per layer

    def attention_maps(self, x: Tensor) -> list[Tensor]:
        """One (B, H, L, L) tensor per layer: row t holds how position t distributes its attention."""
        x, maps = self._positions(x), []
        for block in self.blocks:
            x, weights = block(x, need_weights=True)
            maps.append(weights)
        return maps

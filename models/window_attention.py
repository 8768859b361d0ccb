"""Sliding-window causal attention: the Transformer of ``models/attention.py`` with every position attending
only to the last ``window`` positions (itself included).

It is the control with a known answer. Everything but the window is the full-attention model (pre-LN
blocks, MLP, sinusoidal positions, the same defaults and the same parameters), and where it must fail is
known exactly in advance:

**Horizon.** With window ``w`` a query at position t sees the keys at t - w + 1 .. t, so one layer moves
information at most w - 1 positions forward, and after ``n`` layers (the MLPs and norms are per position)
the features at position a depend on the inputs at a - n (w - 1) .. a and on nothing earlier. A source
token at position s and an answer at a = s + D + 1 (D tokens strictly between) can therefore be related
exactly when

    D + 1 <= n (w - 1),  i.e.  D <= D_max = n (w - 1) - 1          (defaults w = 16, n = 2: D_max = 29)

For D > D_max the features at the answer position do not depend on the source token at all (their
gradient with respect to it is exactly zero, tests/test_window_attention.py), so the answer is
information-theoretically unavailable and accuracy is at chance. For D <= D_max it is available: directly
when D <= w - 2, else only through intermediate positions, one hop per layer, which must carry the source
forward before the query arrives (available is not the same as learnt).

Paper: sliding-window ("local") attention as in Longformer (Beltagy, Peters and Cohan, 2020) and
Mistral 7B (Jiang et al., 2023), whose paper states the same n x window receptive field. Public reference
read: lucidrains/local-attention (``local_attention/local_attention.py``), whose blocked form splits the
sequence in windows and lets each query window attend to its own window and the one before. Without its
``exact_windowsize`` option a query there sees w to 2w - 1 keys depending on its place in the block; here
the band mask makes the window exact for every position, so the reach above holds exactly.

Training form: blocks of ``window`` positions; each query block attends to its own block and the previous
one, (B, H, L / w, w, 2w) scores: time and memory linear in L, never an (L, L) matrix. Recurrent form: a
key/value cache of the last ``window - 1`` positions per layer (all the next position can still see) and
the position counter that the sinusoidal codes need.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from longrange.models import State
from longrange.models.attention import CausalSelfAttention, Transformer


class WindowSelfAttention(CausalSelfAttention):
    """Causal self-attention over the last ``window`` positions; the projections are the parent's."""

    def __init__(self, width: int, num_heads: int, dropout: float, window: int) -> None:
        super().__init__(width, num_heads, dropout)
        self.window = window

    def visible(self, length: int, device: torch.device) -> Tensor:
        """(L, L) bool band: query t sees keys t - window + 1 .. t (the parent's diagnostic path uses it)."""
        offset = torch.arange(length, device=device)[:, None] - torch.arange(length, device=device)
        return (offset >= 0) & (offset < self.window)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        if need_weights:  # diagnostics only: explicit (B, H, L, L) softmax under the band mask
            return super().forward(x, need_weights=True)
        q, k, v = self._heads(x)  # each (B, H, L, d)
        B, H, L, d = q.shape
        w = self.window  # block length: a query's keys lie in its own block or the previous one
        n = -(-L // w)  # blocks; the last one padded with zeros (queries dropped, keys masked: future)
        q = F.pad(q, (0, 0, 0, n * w - L)).reshape(B * H, n, w, d)
        # One block of zeros in front gives the first block a "previous" block (masked below).
        k, v = (F.pad(t, (0, 0, w, n * w - L)).reshape(B * H, n + 1, w, d) for t in (k, v))
        k, v = (torch.cat([t[:, :-1], t[:, 1:]], dim=2) for t in (k, v))  # (B H, n, 2w, d): previous + own
        # An explicit softmax: on CPU 10-15% faster than scaled_dot_product_attention with a mask (whose
        # "safe softmax" makes three more passes over the scores), and exactly zero outside the band.
        scores = (q @ k.transpose(-2, -1)).div_(math.sqrt(d))  # (B H, n, w, 2w)
        weights = scores.masked_fill_(~self._block_mask(n, x.device), float("-inf")).softmax(dim=-1)
        weights = F.dropout(weights, self.dropout, self.training)
        return self._merge((weights @ v).reshape(B, H, n * w, d)[:, :, :L]), None  # (B, L, D)

    def _block_mask(self, blocks: int, device: torch.device) -> Tensor:
        """(n, w, 2w) bool: query i of block b (position b w + i) sees key j of [previous block, own block]
        (position (b - 1) w + j) when 0 <= w + i - j < w; block 0 has no previous block."""
        w = self.window
        offset = w + torch.arange(w, device=device)[:, None] - torch.arange(2 * w, device=device)  # (w, 2w)
        mask = ((offset >= 0) & (offset < w)).expand(blocks, w, 2 * w).clone()
        mask[0, :, :w] = False  # the zero padding before position 0
        return mask

    def step(self, x: Tensor, cache: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The parent's step (the cache plus the new position: at most ``window`` keys), then the cache keeps
        only the last ``window - 1`` keys and values (B, H, <= window - 1, d): what the next position sees."""
        y, (k, v) = super().step(x, cache)
        start = max(0, k.shape[2] - (self.window - 1))
        return y, (k[:, :, start:], v[:, :, start:])


class WindowTransformer(Transformer):
    """Args:
        width, num_layers, num_heads, d_ff, positional, max_len, dropout: as in
            :class:`~longrange.models.attention.Transformer` (same defaults, same parameters).
        window: positions each query attends to, itself included (>= 1). Reach: the features at the
            answer position depend on a token D positions strictly before it iff D <= num_layers
            (window - 1) - 1 (module docstring).

    Initialisation: the full-attention Transformer's, unchanged (PyTorch's defaults for Linear and
    LayerNorm, fixed sinusoidal positions); with one seed the two models start from identical weights,
    so the window is the only difference.

    State (recurrent form): ``(position, caches)``: position (B,) int64, the index of the next position
    (the sinusoidal code needs it once the cache stops growing; not a float, so not in ``state_size``),
    and per layer the (keys, values) of the last min(t, window - 1) positions, each (B, H, ., width / H).
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
        window: int = 16,
    ) -> None:
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"model.window={window!r} is out of range; allowed: an integer >= 1")
        # Set before the parent's constructor, which calls make_attention; a plain int attribute may be set
        # on an nn.Module before its __init__ (parameters, buffers and submodules may not).
        self.window = window
        super().__init__(width, num_layers, num_heads, d_ff, positional, max_len, dropout)

    def make_attention(self, width: int, num_heads: int, dropout: float) -> CausalSelfAttention:
        return WindowSelfAttention(width, num_heads, dropout, self.window)

    @property
    def reach(self) -> int:
        """D_max: the largest number of tokens strictly between a source and an answer it can inform."""
        return len(self.blocks) * (self.window - 1) - 1

    def step(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """State: ``(position, caches)`` (class docstring); the parent's step at that position."""
        t = 0 if state is None else int(state[0][0])  # every sample is at the same position
        features, caches = self._step_at(x, None if state is None else state[1], t)
        return features, (torch.full((x.shape[0],), t + 1, dtype=torch.long, device=x.device), caches)

    def state_size(self, seq_len: int) -> int:
        """Keys and values of the last min(seq_len, window - 1) positions, per layer (the counter is int)."""
        return 2 * len(self.blocks) * min(seq_len, self.window - 1) * self.d_output

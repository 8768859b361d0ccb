"""Causal linear attention with a positive feature map, after a short causal convolution.

Linear attention (Katharopoulos, Vyas, Pappas and Fleuret 2020, "Transformers are RNNs") replaces the
softmax weight exp(q . k) by a kernel phi(q) . phi(k) with a feature map phi. The output at t is then

    y_t = phi(q_t)^T S_t / (phi(q_t) . z_t),   S_t = sum_{s<=t} phi(k_s) v_s^T,   z_t = sum_{s<=t} phi(k_s)

so the recurrent state is a fixed F x d_v matrix per head plus the normaliser z (F floats), whatever the
length. Two feature maps:

* ``elu``: phi(x) = elu(x) + 1 (Katharopoulos et al. 2020), F = d_k;
* ``taylor``: the second-order Taylor approximation of exp from Based (Arora, Eyuboglu, Zhang, Timalsina,
  Alberti, Zinsley, Zou, Rudra and Re 2024, "Simple linear attention language models balance the
  recall-throughput tradeoff"): phi(q) . phi(k) = 1 + s + s^2 / 2 with s = q . k / sqrt(d_k), an exp-like,
  spikier weighting than elu + 1, and never below 1/2. Based writes phi(x) = [1, x / d_k^(1/4),
  x (x) x / (sqrt(2) sqrt(d_k))]; here each product x_i x_j (i <= j) is kept once, so F = 1 + d_k +
  d_k (d_k + 1) / 2 (45 for d_k = 8, 153 for d_k = 16), as in flash-linear-attention's TaylorFeatureMap.

The normalisation is the classic denominator phi(q) . z: every head's output is then a convex combination
of values, on the scale of v at any length, and with the Taylor kernel the denominator is at least t / 2,
so the division is safe without an output norm (eps only guards elu + 1, whose weights can underflow).

A sum over the past cannot see order, so (as in Based's short convolutions and H3's shift on the keys)
queries and keys are computed from a depthwise causal convolution of the last few positions: the key of
"movie" in "watched a movie" can then hold "watched", and the query at "the" in "i watched the" too.
Values come from the position itself.

Training form, chunked and linear in L: the sequence is cut into chunks of C positions; inside a chunk the
weights form a masked C x C matrix (quadratic, parallel; for Taylor in closed form, d_k per pair instead of
F); across chunks each position reads the state entering its chunk, the sum of the earlier chunks'
phi(k)^T v. A column of ones appended to v makes the same products carry the normaliser z. Recurrent form:
S and z updated one position at a time.

References read (the code here is written from the equations, not copied): zoology
``zoology/mixers/based.py`` (Taylor map and its scaling, the denominator with eps) and its MQAR experiment
configs (one head, feature_dim 8-24), flash-linear-attention ``fla/ops/linear_attn/naive.py`` (the chunked
algorithm), ``fla/ops/linear_attn/utils.py`` (the normaliser), ``fla/modules/feature_map.py``
(TaylorFeatureMap's triangle form), ``fla/layers/linear_attn.py`` and ``fla/layers/based.py``
(elu + 1, projections without biases).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longrange.models.layers import CausalConv1d, MixerStack

FEATURE_MAPS = ("elu", "taylor")


def feature_dim(feature_map: str, d_k: int) -> int:
    """F, the length of phi(x) for a d_k-dimensional query or key."""
    return d_k if feature_map == "elu" else 1 + d_k + d_k * (d_k + 1) // 2


class LinearAttentionMixer(nn.Module):
    """Multi-head causal linear attention (width in, width out); see the module docstring."""

    first: Tensor  # the taylor feature map's selection buffers (``_taylor_selections``)
    second_k: Tensor
    second_q: Tensor

    def __init__(
        self,
        width: int,
        num_heads: int,
        d_k: int,
        feature_map: str,
        conv_kernel: int,
        chunk_size: int,
        eps: float,
    ) -> None:
        super().__init__()
        self.num_heads, self.d_k, self.d_v = num_heads, d_k, width // num_heads
        self.feature_map, self.chunk_size, self.eps = feature_map, chunk_size, eps
        self.num_features = feature_dim(feature_map, d_k)
        self.conv = CausalConv1d(width, conv_kernel)  # queries and keys read the last few positions
        self.q = nn.Linear(width, num_heads * d_k, bias=False)  # queries and keys from the convolved input
        self.k = nn.Linear(width, num_heads * d_k, bias=False)
        self.v = nn.Linear(width, width, bias=False)  # values from the position itself
        self.out = nn.Linear(width, width, bias=False)
        if feature_map == "taylor":
            self._taylor_selections(d_k)

    def _taylor_selections(self, d_k: int) -> None:
        """phi(x) = ([1, x] A) * ([1, x] B): for each feature A and B pick two entries of [1, x] (x_i and
        x_j, or x_i and 1, or 1 and 1). Features: [1 | x_i | x_i x_j for i <= j], F = 1 + d_k + d_k (d_k + 1)
        / 2. All entries are 0, 1 or 1/2, exact in any dtype, so the chunked and the recurrent form agree."""
        i, j = torch.triu_indices(d_k, d_k)
        pick = torch.eye(d_k + 1)  # row 0 picks the 1, row 1 + i picks x_i
        first = torch.cat([pick[:, :1], pick[:, 1:], pick[:, 1 + i]], dim=1)  # (d_k + 1, F)
        second = torch.cat([pick[:, :1], pick[:, :1].expand(-1, d_k), pick[:, 1 + j]], dim=1)
        halve = torch.cat([torch.ones(1 + d_k), torch.where(i == j, 0.5, 1.0)])  # query side: x_i^2 / 2
        self.register_buffer("first", first.T.contiguous(), persistent=False)  # (F, d_k + 1), for F.linear
        self.register_buffer("second_k", second.T.contiguous(), persistent=False)
        self.register_buffer("second_q", (second * halve).T.contiguous(), persistent=False)

    def _features(self, x: Tensor, query: bool) -> Tensor:
        """phi: (..., d_k) -> (..., F), with phi(q) . phi(k) > 0.

        elu: elu(x) + 1 on both sides. taylor: phi(q) . phi(k) = 1 + s + s^2 / 2, s = q . k / sqrt(d_k),
        from phi(k) = [1, k_i, k_i k_j (i <= j)] and phi(q) the same of q / sqrt(d_k) with the squares
        x_i^2 halved (an asymmetric split of Based's symmetric map: same kernel, exact weights)."""
        if self.feature_map == "elu":
            return F.elu(x) + 1
        if query:
            x = x / math.sqrt(self.d_k)
        x = torch.cat([torch.ones_like(x[..., :1]), x], dim=-1)  # (..., d_k + 1)
        return F.linear(x, self.first) * F.linear(x, self.second_q if query else self.second_k)  # (..., F)

    def _normalise(self, y: Tensor) -> Tensor:
        """(..., d_v + 1) numerator and denominator -> (..., d_v). The denominator is a positive weighted
        count of the past (>= 1/2 per position for taylor, > 0 for elu); eps only guards elu's underflow."""
        return y[..., :-1] / (y[..., -1:] + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        B, L, D = x.shape
        H, C = self.num_heads, min(self.chunk_size, L)  # a short sequence is one chunk: no padding
        pad = -L % C  # zeros after the end: only later positions could see them, and those are cut off
        x = F.pad(x, (0, 0, 0, pad))  # (B, L', D), L' = N C
        N, convolved = x.shape[1] // C, self.conv(x)

        def heads(t: Tensor) -> Tensor:  # (B, L', H d) -> (B, H, N, C, d), contiguous for the products
            return t.view(B, N, C, H, -1).permute(0, 3, 1, 2, 4).contiguous()

        q, k, v = heads(self.q(convolved)), heads(self.k(convolved)), heads(self.v(x))
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # (B, H, N, C, d_v + 1): ones sum up z
        causal = torch.ones(C, C, dtype=torch.bool, device=x.device).tril()
        if self.feature_map == "elu":  # phi(q) phi(k)^T within each chunk: (B, H, N, C, C)
            fq, fk = self._features(q, query=True), self._features(k, query=False)  # (B, H, N, C, F)
            weights = fq @ fk.transpose(-1, -2)
        else:  # the Taylor kernel in closed form, 1 + s + s^2 / 2: d_k per pair instead of F
            s = (q / math.sqrt(self.d_k)) @ k.transpose(-1, -2)  # q . k / sqrt(d_k)
            weights = torch.addcmul(s + 1, s, s, value=0.5)
        y = weights.masked_fill_(~causal, 0.0) @ v  # (B, H, N, C, d_v + 1): reads from its own chunk
        if N > 1:  # and from the earlier chunks, through the state entering each chunk
            if self.feature_map == "taylor":
                fq, fk = self._features(q, query=True), self._features(k, query=False)  # (B, H, N, C, F)
            chunk_state = fk.transpose(-1, -2) @ v  # (B, H, N, F, d_v + 1): each chunk's sum of phi(k) v^T
            earlier = torch.ones(N, N, dtype=x.dtype, device=x.device).tril(-1)  # chunk m sums chunks n < m
            entering = (earlier @ chunk_state.flatten(3)).view_as(chunk_state)  # (faster than a cumsum here)
            y = y + fq @ entering
        y = self._normalise(y).permute(0, 2, 3, 1, 4).reshape(B, N * C, D)[:, :L]  # heads side by side
        return self.out(y)

    def step(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (B, D); state: the conv buffer (B, kernel - 1, D) and S with z as its last column,
        (B, H, F, d_v + 1)."""
        conv_state, memory = (None, None) if state is None else state
        convolved, conv_state = self.conv.step(x, conv_state)  # (B, D)
        q = self.q(convolved).unflatten(-1, (self.num_heads, self.d_k))  # (B, H, d_k)
        k = self.k(convolved).unflatten(-1, (self.num_heads, self.d_k))
        v = self.v(x).unflatten(-1, (self.num_heads, self.d_v))  # (B, H, d_v)
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # (B, H, d_v + 1)
        update = self._features(k, query=False)[..., :, None] * v[..., None, :]  # (B, H, F, d_v + 1)
        memory = update if memory is None else memory + update
        y = (self._features(q, query=True)[..., None, :] @ memory)[..., 0, :]  # (B, H, d_v + 1)
        return self.out(self._normalise(y).flatten(1)), (conv_state, memory)

    def state_size(self, seq_len: int) -> int:
        return self.conv.state_size(seq_len) + self.num_heads * self.num_features * (self.d_v + 1)


class LinearAttention(MixerStack):
    """Args:
        width: residual-stream width (d_model); each head's values have width / num_heads channels.
        num_layers: blocks (linear attention + MLP, pre-norm residual, as in Based's Transformer blocks).
        num_heads: heads, each with its own F x d_v state (must divide width). One, as in zoology's Based
            configurations for MQAR, learned the checks fastest and keeps the feature map cheap.
        d_k: query / key width per head, the input of the feature map (Based's "feature_dim": 8-24 in
            zoology's MQAR sweeps, 16 in its language models).
        feature_map: "taylor" (Based's 2nd-order Taylor map of exp, F = 1 + d_k + d_k (d_k + 1) / 2) or
            "elu" (elu + 1, F = d_k).
        d_ff: hidden width of each block's MLP (0: none).
        conv_kernel: positions the causal convolution before the query and key projections spans
            (1: each position alone, no access to order).
        chunk_size: positions per chunk in the training form (speed only, the function is the same).
        eps: added to the attention denominator.

    State per layer: (conv_kernel - 1) width (the conv buffer) + num_heads F (d_v + 1) (S and z); with the
    defaults 3 x 64 + 1 x 45 x 65 = 3,117 floats, 6,234 for the two layers, whatever the length.

    Initialisation: PyTorch's defaults: Kaiming-uniform Linear weights, no biases on the q, k, v and
    output projections (as in Based and flash-linear-attention); depthwise conv weights and biases uniform
    in +-1/sqrt(conv_kernel). From LayerNorm-ed inputs the convolved channels have variance ~0.4 and q, k
    entries ~0.13, so s = q . k / sqrt(d_k) starts with std ~0.13: the Taylor weights 1 + s + s^2 / 2 are
    nearly uniform over the past at first (a running mean of values) and sharpen as q and k grow. No
    feature-map temperature, no output norm: the denominator keeps each head's output on the scale of v.
    """

    def __init__(
        self,
        width: int = 64,
        num_layers: int = 2,
        num_heads: int = 1,
        d_k: int = 8,
        feature_map: str = "taylor",
        d_ff: int = 288,
        conv_kernel: int = 4,
        chunk_size: int = 64,
        eps: float = 1e-6,
    ) -> None:
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"model.feature_map={feature_map!r}; allowed: {', '.join(FEATURE_MAPS)}")
        for key, value, low in [
            ("width", width, 1), ("num_layers", num_layers, 1), ("num_heads", num_heads, 1), ("d_k", d_k, 1),
            ("d_ff", d_ff, 0), ("conv_kernel", conv_kernel, 1), ("chunk_size", chunk_size, 1),
        ]:  # fmt: skip
            if value < low:
                raise ValueError(f"model.{key}={value} is out of range; allowed: an integer >= {low}")
        if width % num_heads:
            allowed = f"a divisor of model.width={width}"
            raise ValueError(f"model.num_heads={num_heads} is out of range; allowed: {allowed}")
        if not eps > 0:
            raise ValueError(f"model.eps={eps} is out of range; allowed: > 0")
        super().__init__(
            width,
            num_layers,
            lambda _: LinearAttentionMixer(width, num_heads, d_k, feature_map, conv_kernel, chunk_size, eps),
            d_ff,
        )

"""mLSTM: the matrix-memory LSTM of xLSTM (Beck, Pöppel, Spanring, Auer, Prudnikova, Kopp, Klambauer,
Brandstetter and Hochreiter, 2024, "xLSTM: Extended Long Short-Term Memory").

Each head keeps a matrix memory C (d x d), a normaliser n (d) and a log-space stabiliser m (a scalar).
With an exponential input gate exp(i_t) and a sigmoid forget gate f_t, both computed from the input:

    C_t = f_t C_{t-1} + exp(i_t) k_t v_tᵀ        n_t = f_t n_{t-1} + exp(i_t) k_t
    h_t = C_tᵀ q_t / max(|n_tᵀ q_t|, 1)

(C is stored as k vᵀ, d_k x d_v, so the read-out is q_tᵀ C_t). exp(i_t) overflows, so the state is kept
scaled by exp(-m_t) with m_t = max(log f_t + m_{t-1}, i_t), m_0 = 0: C̃_t = C_t exp(-m_t) and likewise ñ_t,
and the lower bound 1 of the normaliser becomes exp(-m_t). Both forms below compute exactly

    h_t = C̃_tᵀ q_t / (max(|ñ_tᵀ q_t|, exp(-m_t)) + eps),

the reference's recurrent step, with the same m_t: the eps term is the one place where m_t shows through,
so the two forms agree to rounding only if they agree on m_t, its start value m_0 = 0 included.

* Training form (``chunkwise``): the sequence is cut into chunks of ``chunk_size``; inside a chunk each
  position reads the chunk's earlier inputs through the log-gate matrix log D_tj = b_t - b_j + i_j
  (b: cumulative log forget gate within the chunk), stabilised row by row; the (C̃, ñ, m) state is
  carried from chunk to chunk by a loop over chunks. Time and memory are linear in L (L x chunk_size).
* Recurrent form (``recurrent_step``): the stabilised recurrence above, one position at a time.

The block follows the mLSTM layer of xLSTM 7B (Beck et al. 2025): dense q, k, v from the residual stream,
sigmoid output gate, per-head norm, output projection, then an MLP in a second pre-norm residual block
(here :class:`MixerStack` with its LayerNorms and GELU MLP; the 7B has RMSNorm, SwiGLU and half-width
q, k). Kept from the original xLSTM mLSTM block: the short causal conv + SiLU that q, k and the gates
read (v reads the token itself; the gates read both, as the reference's gates read [q, k, v]) and the
learnable skip from the conv output. Dropped: the original block's up-projection (inner width 2-3x) with
4 x 4 block-diagonal q, k, v projections, because on a CPU the wide tensors and tiny block products made a
first version with that block (inner width 192, the matched parameter count) 13x slower than the LSTM
per training step at L = 1024, against 2.8x for this layer with the same cell code; also dropped: dropout,
the 7B's gate soft-capping, the fused GPU kernels.

Public reference read (not copied): NX-AI/xlstm, ``xlstm/blocks/mlstm/backends.py``
(``parallel_stabilized_simple``, ``recurrent_step_stabilized_simple``, ``chunkwise_simple``),
``xlstm/blocks/mlstm/cell.py`` and ``layer.py`` (initialisation, conv, skip, group norm),
``xlstm/components/init.py`` and ``ln.py``, ``xlstm/xlstm_large/model.py`` (the 7B block).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longrange.models.layers import CausalConv1d, MixerStack

EPS = 1e-6  # added to the normaliser (the reference's value)
CellState = tuple[Tensor, Tensor, Tensor]  # C̃ (B, H, d, d), ñ (B, H, d), m (B, H)


def chunkwise(q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor, log_f: Tensor, chunk: int) -> Tensor:
    """The mLSTM cell over a whole sequence from the zero state, chunk by chunk.

    q, k, v: (B, H, L, d); i_pre: input-gate pre-activations (B, H, L); log_f: log forget gates
    (B, H, L). Returns h (B, H, L, d). Every q.k product is scaled by 1/sqrt(d), as in the reference;
    the scale is folded into the read weights here (free), so the carried state holds unscaled keys.

    ñ is carried as an extra column of C̃ (v extended by a 1: ñ = Σ w k = Σ w k 1ᵀ), so one product
    gives both C̃ᵀq and ñᵀq, inside the chunk and from the carried state.
    """
    B, H, L, d = q.shape
    chunk = min(chunk, L)  # a short sequence is one chunk, unpadded
    pad = -L % chunk  # pad the end to whole chunks: later positions never reach earlier ones
    if pad:
        q, k = F.pad(q, (0, 0, 0, pad)), F.pad(k, (0, 0, 0, pad))
        i_pre, log_f = F.pad(i_pre, (0, pad)), F.pad(log_f, (0, pad))
    v1 = F.pad(v, (0, 1, 0, pad), value=1.0)  # (B, H, L + pad, d + 1): [v, 1]
    N = (L + pad) // chunk
    q, k, v1 = (t.unflatten(2, (N, chunk)) for t in (q, k, v1))  # (B, H, N, c, .)
    i_pre = i_pre.unflatten(2, (N, chunk))  # (B, H, N, c)
    b = log_f.unflatten(2, (N, chunk)).cumsum(-1)  # (B, H, N, c): log f_start + ... + log f_t

    # Log weight of input j at position t of the same chunk: b_t - b_j + i_j for j <= t, -inf after t.
    log_w = b[..., :, None] + (i_pre - b)[..., None, :]  # (B, H, N, c, c)
    future = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).triu(1)
    log_w.masked_fill_(future, float("-inf"))

    # The stabilisers m_t. They cancel between numerator and denominator (up to eps), so they are
    # constants for the gradient: no backward pass through the maxima (gate gradients then differ from
    # autograd through the unstabilised float64 form by ~1e-6 relative, the eps term).
    with torch.no_grad():
        local_max = log_w.amax(-1)  # (B, H, N, c): max_j log_w[t, j], the stabiliser without a past
        m, m_starts = q.new_zeros(B, H), []  # m_0 = 0, as the recurrent form
        for b_end, local_end in zip(b[..., -1].unbind(2), local_max[..., -1].unbind(2), strict=True):
            m_starts.append(m)
            m = torch.maximum(b_end + m, local_end)  # m at the chunk's last position
        m_start = torch.stack(m_starts, dim=2)  # (B, H, N): m before each chunk
        m_end = torch.cat([m_start[..., 1:], m[..., None]], dim=-1)  # (B, H, N): m at each chunk's end
        stab = torch.maximum(b + m_start[..., None], local_max)  # (B, H, N, c) = m_t of every position

    # Inter-chunk recurrence on [C̃ | ñ] (stabilised by m at the chunk boundaries): what each chunk
    # adds at its end, then a loop over chunks (unbound once: indexing inside the loop would cost a
    # full-size gradient per chunk).
    w_end = torch.exp(log_w[..., -1, :] - m_end[..., None])  # (B, H, N, c): input j's weight at chunk end
    kv1 = (k * w_end[..., None]).transpose(-1, -2) @ v1  # (B, H, N, d, d + 1): [Σ w k vᵀ | Σ w k]
    decay = torch.exp(b[..., -1] + m_start - m_end)  # (B, H, N): factor of the carried state over a chunk
    C1, starts = q.new_zeros(B, H, d, d + 1), []
    for kv1_c, decay_c in zip(kv1.unbind(2), decay.unbind(2), strict=True):
        starts.append(C1)
        C1 = torch.addcmul(kv1_c, decay_c[..., None, None], C1)
    C0 = torch.stack(starts, dim=2)  # (B, H, N, d, d + 1): the state before each chunk

    # Every position reads the carried state (weight exp(b_t + m_start - m_t)) and its chunk, each
    # weight also divided by sqrt(d) (log_scale), the keys' scaling.
    log_scale = stab + 0.5 * math.log(d)  # (B, H, N, c)
    q_state = q * torch.exp(b + m_start[..., None] - log_scale)[..., None]  # (B, H, N, c, d)
    scores = (q @ k.transpose(-1, -2)) * (log_w - log_scale[..., None]).exp_()  # (B, H, N, c, c)
    read = torch.baddbmm(q_state.flatten(0, 2) @ C0.flatten(0, 2), scores.flatten(0, 2), v1.flatten(0, 2))
    numerator, qn = read.view(B, H, N, chunk, d + 1).split([d, 1], dim=-1)  # C̃ᵀq, ñᵀq at every position
    denominator = torch.maximum(qn.abs(), torch.exp(-stab)[..., None]) + EPS
    return (numerator / denominator).flatten(2, 3)[:, :, :L]  # (B, H, L, d)


def recurrent_step(
    q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor, log_f: Tensor, state: CellState
) -> tuple[Tensor, CellState]:
    """One position of the mLSTM cell: q, k, v (B, H, d), i_pre and log_f (B, H), state (C̃, ñ, m).
    Returns h (B, H, d) and the next state. As in ``chunkwise``, q.k is scaled by 1/sqrt(d)."""
    C, n, m = state
    q = q / math.sqrt(q.shape[-1])
    m_next = torch.maximum(log_f + m, i_pre)  # (B, H)
    decay, scale = torch.exp(log_f + m - m_next), torch.exp(i_pre - m_next)  # both <= 1
    C = decay[..., None, None] * C + scale[..., None, None] * (k[..., :, None] * v[..., None, :])
    n = decay[..., None] * n + scale[..., None] * k  # (B, H, d)
    numerator = (q[..., None, :] @ C)[..., 0, :]  # (B, H, d): C̃ᵀq
    qn = (q * n).sum(-1, keepdim=True)  # (B, H, 1)
    denominator = torch.maximum(qn.abs(), torch.exp(-m_next)[..., None]) + EPS
    return numerator / denominator, (C, n, m_next)


class MLSTMLayer(nn.Module):
    """The mLSTM mixer (width in, width out); see the module docstring and :class:`MLSTM`."""

    def __init__(self, width: int, num_heads: int, conv_kernel: int, chunk_size: int) -> None:
        super().__init__()
        self.width, self.num_heads, self.head_dim = width, num_heads, width // num_heads
        self.chunk_size = chunk_size
        self.conv = CausalConv1d(width, conv_kernel)
        # Two fused projections: [q, k, gates] from the conv output, [v, output gate, gates] from the
        # token; the gate pre-activations (input and forget, one per head) are the sum of both parts.
        self.from_conv = nn.Linear(width, 2 * width + 2 * num_heads, bias=False)
        self.from_token = nn.Linear(width, 2 * width + 2 * num_heads)
        self.norm_weight = nn.Parameter(torch.empty(width))  # per-head norm, scale only
        self.skip = nn.Parameter(torch.empty(width))
        self.out = nn.Linear(width, width, bias=False)

    def _project(self, x: Tensor, conv_out: Tensor) -> tuple[Tensor, ...]:
        """x, conv_out (..., width) -> q, k, v (..., H, d); i_pre, log_f (..., H); output gate (..., width)"""
        sizes = [self.width, self.width, 2 * self.num_heads]
        q, k, gates_conv = self.from_conv(conv_out).split(sizes, dim=-1)
        v, o, gates_token = self.from_token(x).split(sizes, dim=-1)
        i_pre, f_pre = (gates_conv + gates_token).chunk(2, dim=-1)  # (..., H) each
        q, k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)) for t in (q, k, v))
        return q, k, v, i_pre, F.logsigmoid(f_pre), torch.sigmoid(o)

    def _output(self, h: Tensor, conv_out: Tensor, o: Tensor) -> Tensor:
        """h (..., H, d): norm per head, learnable skip from the conv, output gate, projection."""
        h = F.layer_norm(h, (self.head_dim,), eps=1e-5).flatten(-2) * self.norm_weight  # (..., width)
        return self.out(torch.addcmul(h, self.skip, conv_out) * o)

    def forward(self, x: Tensor) -> Tensor:
        conv_out = F.silu(self.conv(x))  # (B, L, width)
        q, k, v, i_pre, log_f, o = self._project(x, conv_out)  # (B, L, H, d), (B, L, H), (B, L, width)
        q, k, v, i_pre, log_f = (t.transpose(1, 2) for t in (q, k, v, i_pre, log_f))  # heads first
        h = chunkwise(q, k, v, i_pre, log_f, self.chunk_size)  # (B, H, L, d)
        return self._output(h.transpose(1, 2), conv_out, o)

    def step(self, x: Tensor, state: tuple[Tensor | None, CellState] | None) -> tuple[Tensor, tuple]:
        """x (B, width); state: the conv's last inputs (B, kernel - 1, width) and the cell's (C̃, ñ, m)."""
        if state is None:
            B, H, d = x.shape[0], self.num_heads, self.head_dim
            state = (None, (x.new_zeros(B, H, d, d), x.new_zeros(B, H, d), x.new_zeros(B, H)))
        conv_out, conv_state = self.conv.step(x, state[0])
        conv_out = F.silu(conv_out)  # (B, width)
        q, k, v, i_pre, log_f, o = self._project(x, conv_out)
        h, cell_state = recurrent_step(q, k, v, i_pre, log_f, state[1])  # h (B, H, d)
        return self._output(h, conv_out, o), (conv_state, cell_state)

    def state_size(self, seq_len: int) -> int:
        d = self.head_dim
        return self.conv.state_size(seq_len) + self.num_heads * (d * d + d + 1)  # conv; C̃, ñ, m per head


class MLSTM(MixerStack):
    """Args:
    width: residual-stream width (embedding and feature width), ``d_model``.
    num_layers: blocks (each: mLSTM layer, then MLP).
    num_heads: heads of the cell, each with a (width / num_heads)^2 matrix memory and its own gates.
        Default 1: at width 64 one head has the largest memory (64 x 64; 4 heads would have 16 x 16
        each) and the cheapest training form (no head transposes); the paper uses 4 at larger widths.
    conv_kernel: width of the causal conv that q, k and the gates read (the reference's 4).
    chunk_size: chunk length of the training form; it changes speed only, not the function. Fastest
        near the head width (the chunk's L x chunk_size part balances the state's L x d^2 / chunk_size).
    d_ff: hidden width of the MLP after each mLSTM layer (0: none).

    State per layer (``state_size``): the conv's last (conv_kernel - 1) x width inputs, and per head C̃
    (d x d), ñ (d) and m (1), d = width / num_heads; 2 x (3 x 64 + 64 x 64 + 64 + 1) = 8706 floats by
    default, whatever the length.

    Initialisation (the reference's, xlstm ``layer.py`` and ``cell.py``; the details decide whether it
    trains): q, k, v and output-gate weights N(0, 2 / (5 width)) ("small init", Nguyen & Salazar 2019),
    their biases zero; output projection N(0, (2 / (num_layers sqrt(width)))^2) (Wang's init, scaled by
    depth); gate weights zero, so at the start each gate is its bias: forget-gate biases linspace(3, 6)
    over the heads (f = 0.95 ... 0.998: memories of ~20 to ~400 tokens from the first step; one head gets
    4.5, the middle), input-gate biases N(0, 0.1); norm scale and learnable skip one; the conv, the
    LayerNorms and the MLP PyTorch's defaults.
    """

    def __init__(
        self,
        width: int = 64,
        num_layers: int = 2,
        num_heads: int = 1,
        conv_kernel: int = 4,
        chunk_size: int = 64,
        d_ff: int = 192,
    ) -> None:
        checks = {"width": width, "num_layers": num_layers, "num_heads": num_heads}
        checks |= {"conv_kernel": conv_kernel, "chunk_size": chunk_size}
        for key, value in checks.items():
            if value < 1:
                raise ValueError(f"model.{key}={value}; allowed: an integer >= 1")
        if d_ff < 0:
            raise ValueError(f"model.d_ff={d_ff}; allowed: an integer >= 0 (0: no MLP)")
        if width % num_heads:
            raise ValueError(f"model.num_heads={num_heads}; allowed: a divisor of model.width={width}")

        def layer(index: int) -> MLSTMLayer:
            return MLSTMLayer(width, num_heads, conv_kernel, chunk_size)

        super().__init__(width, num_layers, layer, d_ff)
        self._init_mlstm(width, num_layers, num_heads)

    @torch.no_grad()
    def _init_mlstm(self, width: int, num_layers: int, num_heads: int) -> None:
        small, wang = math.sqrt(2 / (5 * width)), 2 / num_layers / math.sqrt(width)
        forget = torch.linspace(3.0, 6.0, num_heads) if num_heads > 1 else torch.tensor([4.5])
        for block in self.blocks:
            mixer = cast(MLSTMLayer, block.mixer)  # an nn.ModuleList yields plain nn.Modules to mypy
            gates = slice(2 * width, None)  # rows of the gate pre-activations: input, then forget
            for proj in (mixer.from_conv, mixer.from_token):
                nn.init.normal_(proj.weight, std=small)
                proj.weight[gates] = 0.0
            bias = mixer.from_token.bias
            bias.zero_()
            nn.init.normal_(bias[2 * width : 2 * width + num_heads], std=0.1)
            bias[2 * width + num_heads :] = forget
            nn.init.normal_(mixer.out.weight, std=wang)
            nn.init.ones_(mixer.norm_weight)
            nn.init.ones_(mixer.skip)

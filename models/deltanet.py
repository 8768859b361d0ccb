"""DeltaNet: linear attention whose fast-weight state is written with the delta rule.

A linear-attention head keeps a matrix state S (d_k x d_v) and reads it with a query, o_t = S_tᵀ q_t. Plain
linear attention only adds to S (S_t = S_{t-1} + k_t v_tᵀ), so old associations are never removed and keys
that overlap blur into each other. The delta rule first reads what S already stores under the new key and
writes back only the correction toward the new value, with a learned per-head step size β_t in (0, 1):

    S_t = S_{t-1} + β_t k_t (v_t - S_{t-1}ᵀ k_t)ᵀ = (I - β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ.

With unit-norm keys, β_t = 1 overwrites the value stored under k_t exactly. The eigenvalue knob
(``negative_eigenvalues``, conf/model/deltanet_negeig.yaml) widens β to (0, 2), so that the transition
I - β_t k_t k_tᵀ can have a negative eigenvalue (Grazzi et al. 2025; see :class:`DeltaNet`).

Papers: Schlag, Irie and Schmidhuber 2021, "Linear Transformers Are Secretly Fast Weight Programmers" (the
rule); Yang, Wang, Zhang, Shen and Kim 2024, "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length" (the chunked WY training form and the layer used here: SiLU and a short causal
convolution on q, k, v, L2-normalised q and k, β = sigmoid(W_β x), an RMSNorm per head on the output).

Public reference read: flash-linear-attention (fla-org), ``fla/ops/delta_rule/naive.py`` (the recurrence
and the chunked reference), ``fla/ops/delta_rule/chunk.py`` (query scale 1/sqrt(d_k) after the L2 norm),
``fla/layers/delta_net.py`` (the layer) and ``fla/models/delta_net/modeling_delta_net.py`` (initialisation).
This file is written from those descriptions, not copied.

Training form (:func:`chunked_delta_rule`): the sequence is cut into chunks of C positions. Inside a chunk
the C sequential updates collapse, through the WY / UT transform, into one triangular solve; across chunks
the state is carried by one matrix update per chunk (a Python loop over L / C chunks, none over positions).
Cost O(L C (d_k + d_v) + L d_k d_v) per head: linear in L. Recurrent form (:meth:`DeltaRule.step`): the
update above, one position at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longrange.models.layers import CausalConv1d, MixerStack, rms_norm


def chunked_delta_rule(q: Tensor, k: Tensor, v: Tensor, beta: Tensor) -> Tensor:
    """Outputs o_t = S_tᵀ q_t of the delta rule from S_0 = 0, all positions at once, chunk by chunk.

    q, k: (B, H, n, C, d_k), the sequence cut into n chunks of C positions; v: (B, H, n, C, d_v); beta:
    (B, H, n, C, 1). Returns (B, H, n, C, d_v).

    Within a chunk that starts from state S, position i writes u_i = β_i (v_i - Sᵀ k_i - Σ_{j<i} (k_i·k_j)
    u_j) (the correction it adds, S gaining k_i u_iᵀ). Stacking the rows, (I + A) U' = diag(β) (V - K S)
    with A = strictly-lower(diag(β) K Kᵀ): a unit lower-triangular system. Its solution splits into a part
    that does not depend on S, computed for every chunk at once (the WY / UT transform),
        U = (I + A)⁻¹ diag(β) V,   W = (I + A)⁻¹ diag(β) K,   U' = U - W S,
    so the chunk's state update is S <- S + Kᵀ (U - W S) = (I - Kᵀ W) S + Kᵀ U, one matrix product.
    """
    B, H, n, C, d_k = k.shape
    d_v = v.shape[-1]
    k_t = k.transpose(-1, -2)  # (B, H, n, d_k, C)

    # UT transform, every chunk at once. solve_triangular with unitriangular=True reads only the strictly
    # lower part of its matrix (the unit diagonal is implied; the upper part is ignored and gets no
    # gradient), so β K Kᵀ needs no masking. W and U come out of one solve, side by side. β scales the
    # (C, d) rows before the product rather than the (C, C) product: half the memory traffic at C = 2 d.
    k_beta = k * beta  # (B, H, n, C, d_k)
    a = k_beta @ k_t  # (B, H, n, C, C): A_ij = β_i k_i·k_j, used for j < i
    rhs = torch.cat([k_beta, v * beta], dim=-1)  # (B, H, n, C, d_k + d_v)
    wu = torch.linalg.solve_triangular(a, rhs, upper=False, unitriangular=True)  # [W, U]

    # Across chunks: S_{c+1} = (I - K_cᵀ W_c) S_c + K_cᵀ U_c. The transitions and inputs are computed for all
    # chunks at once; the loop is one fused multiply-add per chunk on (B * H) small matrices. Chunk index
    # first, so that each chunk's matrices are contiguous; unbind (not indexing) keeps the backward to one
    # stack instead of a zero-filled copy per chunk.
    kw, ku = (k_t @ wu).permute(2, 0, 1, 3, 4).reshape(n, B * H, d_k, d_k + d_v).split([d_k, d_v], dim=-1)
    transition = torch.eye(d_k, dtype=k.dtype, device=k.device) - kw  # (n, B*H, d_k, d_k)
    states = [k.new_zeros(B * H, d_k, d_v)]  # the state each chunk starts from
    for transition_c, written_c in zip(transition.unbind(0)[:-1], ku.unbind(0)[:-1], strict=True):
        states.append(torch.baddbmm(written_c, transition_c, states[-1]))
    s = torch.stack(states, dim=1).view(B * H * n, d_k, d_v)  # (B*H*n, d_k, d_v), chunk order as in q

    # Outputs: what the chunk's starting state answers, plus the chunk's own corrections seen by the query
    # (position i sees j <= i, itself included because S_i already holds its own write).
    w, u = (t.reshape(B * H * n, C, -1) for t in wu.split([d_k, d_v], dim=-1))
    corrections = torch.baddbmm(u, w, s, alpha=-1)  # (B*H*n, C, d_v): U' = U - W S
    scores = (q @ k_t).tril_().view(B * H * n, C, C)  # causal within the chunk, diagonal included (in place)
    o = torch.baddbmm(scores @ corrections, q.reshape(B * H * n, C, d_k), s)  # Q S + tril(Q Kᵀ) U'
    return o.view(B, H, n, C, d_v)


def unit(x: Tensor, scale: float = 1.0) -> Tensor:
    """x scaled to norm ``scale`` along its last dimension (as the reference: x / sqrt(|x|² + 1e-6))."""
    return x * (torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-6) * scale)


class DeltaRule(nn.Module):
    """The DeltaNet sequence mixer: (B, L, width) -> (B, L, width), ``num_heads`` delta-rule heads.

    Per position: q, k, v projections (width each, no bias) and the β logits (one per head, no bias); a
    depthwise causal convolution over q, k, v, then SiLU; q and k L2-normalised per head (q also scaled by
    1/sqrt(d_k) as in the reference); β = sigmoid(logit), or 2 sigmoid(logit) with ``negative_eigenvalues``.
    After the delta rule, an RMSNorm per head (one weight vector of d_v shared by the heads) and an output
    projection (no bias).
    """

    def __init__(
        self, width: int, num_heads: int, conv_size: int, chunk_size: int, negative_eigenvalues: bool = False
    ) -> None:
        super().__init__()
        self.width, self.num_heads, self.head_dim = width, num_heads, width // num_heads
        self.chunk_size = chunk_size
        self.beta_max = 2.0 if negative_eigenvalues else 1.0  # β = beta_max * sigmoid(logit)
        self.qkv = nn.Linear(width, 3 * width, bias=False)  # q, k, v side by side
        self.beta = nn.Linear(width, num_heads, bias=False)
        self.conv = CausalConv1d(3 * width, conv_size)
        self.norm_eps = 1e-5
        self.norm = nn.RMSNorm(self.head_dim, eps=self.norm_eps)
        self.out = nn.Linear(width, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, L, _ = x.shape
        H, d, C = self.num_heads, self.head_dim, min(self.chunk_size, L)
        pad = -L % C  # zero positions at the end: they come after every real one, so they change no output
        x = F.pad(x, (0, 0, 0, pad)) if pad else x
        n = (L + pad) // C
        # q, k, v in (B, L, 3 width) memory: the convolution's kernel reads it as it is, and its backward
        # (models/layers.py) runs on contiguous tensors (channels-first memory made it 1.3x slower there).
        qkv = self.qkv(x)  # (B, L + pad, 3 width)
        qkv = self.conv(qkv).reshape(B, n, C, 3, H, d).permute(3, 0, 4, 1, 2, 5)  # (3, B, H, n, C, d)
        q, k, v = F.silu(qkv.contiguous()).unbind(0)  # each (B, H, n, C, d), one copy into chunk layout
        q, k = unit(q, d**-0.5), unit(k)
        beta = self.beta_max * torch.sigmoid(self.beta(x))  # (B, L + pad, H)
        beta = beta.view(B, n, C, H).permute(0, 3, 1, 2)  # (B, H, n, C)
        o = chunked_delta_rule(q, k, v, beta.unsqueeze(-1)).view(B, H, n * C, d)  # (B, H, L + pad, d_v)
        o = rms_norm(o, self.norm.weight, self.norm_eps)  # per head (self.norm's weight, one autograd node)
        return self.out(o.transpose(1, 2).flatten(2))[:, :L]  # heads side by side -> (B, L, width)

    def step(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (B, width); state: the convolution's last inputs (B, conv_size - 1, 3 width) and the fast
        weights S (B, H, d_k, d_v), zeros at the start."""
        conv_state, s = (None, None) if state is None else state
        qkv, conv_state = self.conv.step(self.qkv(x), conv_state)
        q, k, v = F.silu(qkv).view(-1, 3, self.num_heads, self.head_dim).unbind(1)  # (B, H, d)
        q, k = unit(q, self.head_dim**-0.5), unit(k)
        beta = self.beta_max * torch.sigmoid(self.beta(x)).unsqueeze(-1)  # (B, H, 1)
        if s is None:
            s = x.new_zeros(x.shape[0], self.num_heads, self.head_dim, self.head_dim)
        stored = (k.unsqueeze(-2) @ s).squeeze(-2)  # (B, H, d_v): Sᵀ k, what the key retrieves now
        s = s + k.unsqueeze(-1) * (beta * (v - stored)).unsqueeze(-2)  # rank-one write k (β (v - Sᵀ k))ᵀ
        o = (q.unsqueeze(-2) @ s).squeeze(-2)  # (B, H, d_v): Sᵀ q, read after the write
        return self.out(rms_norm(o, self.norm.weight, self.norm_eps).flatten(1)), (conv_state, s)

    def state_size(self, seq_len: int) -> int:
        return self.conv.state_size(seq_len) + self.num_heads * self.head_dim * self.head_dim


class DeltaNet(MixerStack):
    """Args:
        width: residual-stream width (d_model); also the total key and value width (d_k = d_v =
            width / num_heads per head, the reference's expand_k = expand_v = 1).
        num_layers: residual blocks, each a delta-rule mixer and an MLP.
        num_heads: delta-rule heads per layer (must divide width). Each holds a d_k x d_v state, so fewer
            heads carry more state (width² / num_heads floats per layer).
        d_ff: hidden width of each block's MLP; ``None`` is 3.5 x width (224 at width 64, which puts the
            default model at the matched ~106k parameters; 4 x width would give 115k); 0 drops the MLP.
        conv_size: kernel of the short causal convolution on q, k, v (4 in the paper; 1 is no mixing).
        chunk_size: positions per chunk of the training form: a speed knob only (outputs are the same).
        negative_eigenvalues: the range of β, hence of the state transition's eigenvalues. The transition
            I - β_t k_t k_tᵀ (unit k_t) has the eigenvalue 1 - β_t along k_t and 1 elsewhere. false (the
            reference's): β = sigmoid(logit) in (0, 1), eigenvalues in (0, 1]. true (the extended range of
            Grazzi et al. 2025, "Unlocking state-tracking in linear RNNs through negative eigenvalues", the
            reference's ``allow_neg_eigval``): β = 2 sigmoid(logit) in (0, 2), eigenvalues in (-1, 1]; at
            β = 2 the transition is a reflection, which flips the stored value along k_t: what tracking
            parity needs, and, composed over layers, permutations. Same parameters and initialisation (β
            starts near 1 instead of 0.5); the chunked form is exact for any β (its triangular system has
            a unit diagonal whatever β is). conf/model/deltanet_negeig.yaml.

    Initialisation: PyTorch's defaults (Kaiming-uniform Linear and convolution weights, the convolution's
    bias uniform, norms at weight 1), as for this project's Transformer. The reference initialises every
    Linear and convolution N(0, 0.02), a scale meant for widths of 1024 and more: at width 64 the v
    projection would give values of std 0.16 and the 0.02-scaled convolution would shrink them to about
    0.006, so the per-head outputs' mean square would sit near the output RMSNorm's eps (1e-5) instead of far
    above it. Nothing else here depends much on the scale: q and k are L2-normalised (only their direction
    matters) and β starts near sigmoid(0) = 0.5, half-strength writes, either way. Unlike the reference,
    the convolution has a bias (the project's shared :class:`CausalConv1d`).
    """

    def __init__(
        self,
        width: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        d_ff: int | None = None,
        conv_size: int = 4,
        chunk_size: int = 32,
        negative_eigenvalues: bool = False,
    ) -> None:
        for key, value in (("width", width), ("num_layers", num_layers), ("num_heads", num_heads)):
            if value < 1:
                raise ValueError(f"model.{key}={value}; allowed: an integer >= 1")
        if width % num_heads:
            raise ValueError(f"model.num_heads={num_heads} must divide model.width={width}")
        if d_ff is not None and d_ff < 0:
            raise ValueError(f"model.d_ff={d_ff}; allowed: null (3.5 x width), 0 (no MLP) or an integer > 0")
        if conv_size < 1:
            raise ValueError(f"model.conv_size={conv_size}; allowed: an integer >= 1")
        if chunk_size < 1:
            raise ValueError(f"model.chunk_size={chunk_size}; allowed: an integer >= 1")
        if not isinstance(negative_eigenvalues, bool):
            raise ValueError(f"model.negative_eigenvalues={negative_eigenvalues!r}; allowed: true or false")
        d_ff = 7 * width // 2 if d_ff is None else d_ff

        def make_mixer(layer: int) -> DeltaRule:
            return DeltaRule(width, num_heads, conv_size, chunk_size, negative_eigenvalues)

        super().__init__(width, num_layers, make_mixer, d_ff)

"""Mamba-2 SSD block: a selective state-space model with one scalar decay per head, in plain PyTorch.

Paper: Tri Dao and Albert Gu (2024), "Transformers are SSMs: Generalized Models and Efficient Algorithms
Through Structured State Space Duality" (Mamba-2), building on Albert Gu and Tri Dao (2023), "Mamba:
Linear-Time Sequence Modeling with Selective State Spaces". Public reference read (not copied):
state-spaces/mamba, ``mamba_ssm/modules/mamba2.py`` and ``mamba2_simple.py`` (block layout, initialisation,
the recurrent ``step``), ``mamba_ssm/modules/ssd_minimal.py`` (the chunked SSD algorithm),
``mamba_ssm/ops/triton/layernorm_gated.py`` (``rms_norm_ref``: the gated RMSNorm),
``mamba_ssm/models/mixer_seq_simple.py`` (``_init_weights``: output projection scaled by 1/sqrt(layers)),
and ``mamba_simple.py`` / ``ops/selective_scan_interface.py`` (Mamba-1's ``selective_scan_ref``).

Each head h carries a matrix state S (head_dim x d_state) and, at every position t, with an input-dependent
step size dt_t = softplus(w . u_t + dt_bias) and input-dependent B_t, C_t (d_state each, shared by the heads):

    S_t = exp(dt_t A_h) S_{t-1} + dt_t x_t B_t^T,        y_t = S_t C_t + D_h x_t

Why Mamba-2 and not Mamba-1: Mamba-1's A is diagonal per channel *and* per state dimension, so any parallel
form of its scan materialises (B, L, d_inner, d_state) decays (its reference ``selective_scan_ref`` loops
over positions instead). Mamba-2 restricts A to one scalar per head, so the decay between two positions is
one number per head, and the scan splits into chunks: inside a chunk it is a masked (Q x Q) "attention"
(C B^T weighted by the decays), between chunks a short recurrence over the chunk states. That is the SSD
algorithm; per head it costs O(L Q (head_dim + d_state)) for the (Q x Q) blocks and O(L head_dim d_state)
for the chunk states, linear in L, in matmuls.

Training form: the chunked SSD algorithm (a Python loop over chunks only, for passing the state from chunk
to chunk). Recurrent form: the per-step recurrence above, with the short convolution's buffer.

The eigenvalue knob (``negative_eigenvalues``, conf/model/mamba_negeig.yaml): a head's state transition is
the decay exp(dt_t A_h) times the identity, so the decay is its eigenvalue, in (0, 1); with the knob it
becomes 2 exp(dt_t A_h) - 1 in (-1, 1) (Grazzi et al. 2025), so that a token can flip the state's sign,
which parity needs. The chunked form carries the signs apart from the log magnitudes (:func:`ssd_scan`).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import BackwardCFunction, FunctionCtx

from longrange.models.layers import CausalConv1d, MixerStack, rms_norm

MixerState = tuple[Tensor, Tensor, Tensor]  # conv buffers of x and [B, C], SSM state (b, H, P, N)


def ssd_scan(
    x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int, negative_eigenvalues: bool = False
) -> Tensor:
    """The selective scan over a whole sequence, chunked (state starts at zero).

    x (b, L, H, P) inputs per head, dt (b, L, H) step sizes, A (H,) negative decay rates,
    B and C (b, L, N) input and output projections of the state, shared by the heads.
    Returns y (b, L, H, P) with y_t = sum_{s <= t} (prod_{s < r <= t} a_r) (C_t . B_s) dt_s x_s, where the
    decay a_r = exp(dt_r A) (in (0, 1]) or, with ``negative_eigenvalues``, 2 exp(dt_r A) - 1 (in (-1, 1]).

    The chunked algorithm works with log decays (their cumulative sums). A signed decay is split into its
    magnitude, whose log the algorithm takes as before, and its sign: with sigma_t = prod_{r <= t} sign(a_r)
    (over the whole sequence), prod_{s < r <= t} sign(a_r) = sigma_t sigma_s, so the signs go into the
    inputs (sigma_s dt_s x_s) and out of the outputs (sigma_t y_t) and the scan in between is unchanged:
    exact, whatever the chunk borders, with the same hand-written backward.
    """
    b, L, H, P = x.shape
    chunk = min(chunk, L)  # a short sequence is one chunk, unpadded
    pad = -L % chunk  # zero-pad to whole chunks: dt = 0 there, so padded positions change nothing before them
    if pad:
        x, dt, B, C = (F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    c, N = x.shape[1] // chunk, B.shape[-1]
    log_decay = dt * A  # (b, L, H): log a_t <= 0
    xdt = x * dt[..., None]  # (b, L, H, P): dt_s x_s
    if negative_eigenvalues:
        log_decay, negative = signed_decay(log_decay)
        sigma = 1 - 2 * (negative.cumsum(1) % 2).to(x.dtype)  # (b, L, H): sign of prod_{r <= t} a_r
        xdt = xdt * sigma[..., None]
    B, C = B.reshape(b, c, chunk, N), C.reshape(b, c, chunk, N)  # (b, c, Q, N)
    cum = log_decay.view(b, c, chunk, H).cumsum(2)  # (b, c, Q, H): log decay from the chunk's start, <= 0
    y = ChunkedScan.apply(xdt.view(b, c, chunk, H, P), cum, B, C).reshape(b, c * chunk, H, P)
    if negative_eigenvalues:
        y = y * sigma[..., None]
    return y[:, :L]


# The smallest decay magnitude of the extended range: |2 exp(dt A) - 1| is raised to it, in both forms
# alike. Its log (-13.8) keeps the chunked form's cumulative sums finite, and the gradient of the magnitude
# through the log (1 / |a|) bounded where a crosses zero.
MIN_DECAY = 1e-6


def signed_decay(log_decay: Tensor) -> tuple[Tensor, Tensor]:
    """The extended range's decay a = 2 exp(log_decay) - 1 in (-1, 1], as log(max(|a|, MIN_DECAY)) and
    the mask a < 0 (both the shape of ``log_decay``)."""
    a = 2 * log_decay.exp() - 1
    return a.abs().clamp_min(MIN_DECAY).log(), a < 0


class ChunkedScan(torch.autograd.Function):
    """SSD's four steps on chunked inputs, with a hand-written backward.

    Autograd's backward of the same steps was 15-20% slower here: it makes extra passes (masks, broadcast
    reductions, copies) over the two big tensors, the (Q x Q) weights per head and the states per chunk,
    and on a CPU those passes cost as much as the matmuls. The backward was checked against autograd's
    (``torch.autograd.gradcheck`` in float64, and gradients equal to 1e-14 through padded sequences).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, xdt: Tensor, cum: Tensor, B: Tensor, C: Tensor) -> Tensor:
        """xdt (b, c, Q, H, P), cum (b, c, Q, H), B and C (b, c, Q, N) -> y (b, c, Q, H, P)."""
        b, c, Q, H, P = xdt.shape
        N = B.shape[-1]
        # 1. Within each chunk: masked (Q x Q) "attention" of C_t on B_s, weighted by the decay from s to t.
        # The cumulative sums restart at every chunk, so the differences stay small (no cancellation).
        scores = C @ B.transpose(-1, -2)  # (b, c, Q, Q): C_t . B_s, shared by the heads
        decay = _decay(cum)  # (b, c, H, Q, Q)
        weights = scores[:, :, None] * decay  # (b, c, H, Q, Q)
        y = (weights @ xdt.transpose(2, 3)).transpose(2, 3)  # (b, c, Q, H, P)

        # 2. Each chunk's contribution to the state at its end, sum_s exp(cum_end - cum_s) dt_s x_s B_s^T,
        # all heads in one matmul: (H P, Q) @ (Q, N).
        to_end = (cum[:, :, -1:] - cum).exp()[..., None]  # (b, c, Q, H, 1)
        chunk_states = (xdt * to_end).view(b, c, Q, H * P).transpose(-1, -2) @ B  # (b, c, H P, N)

        # 3. Pass the state from chunk to chunk (c steps, not L): the state entering each chunk, stacked
        # once at the end (no zero-filled tensor written chunk by chunk).
        chunk_decay = cum[:, :, -1, :, None, None].exp()  # (b, c, H, 1, 1): decay across a whole chunk
        chunk_states = chunk_states.view(b, c, H, P, N)
        states = [xdt.new_zeros(b, H, P, N)]
        for k in range(c - 1):
            states.append(torch.addcmul(chunk_states[:, k], states[-1], chunk_decay[:, k]))
        entering = torch.stack(states, dim=1)  # (b, c, H, P, N)

        # 4. The entering state read out by C_t, decayed from the chunk's start to t: (Q, N) @ (N, H P).
        # Kept for the backward after the decay (its gradient w.r.t. cum is itself), scaled in place.
        read = (C @ entering.view(b, c, H * P, N).transpose(-1, -2)).view(b, c, Q, H, P)
        read.mul_(cum.exp()[..., None])  # (b, c, Q, H, P)
        ctx.save_for_backward(xdt, cum, B, C, scores, decay, weights, entering, read)
        return y.add_(read)

    @staticmethod
    def backward(ctx: BackwardCFunction, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # backward's ctx is the autograd node (a BackwardCFunction); its stub types saved_tensors as a 1-tuple
        saved = cast("tuple[Tensor, ...]", ctx.saved_tensors)
        xdt, cum, B, C, scores, decay, weights, entering, read = saved
        b, c, Q, H, P = xdt.shape
        N = B.shape[-1]
        # 4. y += read, read = C E^T exp(cum) (saved after the exp).
        g_cum = (grad * read).sum(-1)  # (b, c, Q, H)
        g_read = grad * cum.exp()[..., None]  # (b, c, Q, H, P)
        g_read = g_read.view(b, c, Q, H * P)
        g_C = g_read @ entering.view(b, c, H * P, N)  # (b, c, Q, N)
        g_entering = (g_read.transpose(-1, -2) @ C).view(b, c, H, P, N)

        # 3. entering[k + 1] = entering[k] * chunk_decay[k] + chunk_states[k], backwards over the chunks.
        chunk_decay = cum[:, :, -1, :, None, None].exp()  # (b, c, H, 1, 1)
        g_chunk_decay = cum.new_zeros(b, c, H)
        totals = [torch.zeros_like(entering[:, 0])]  # the last chunk's own states reach nothing
        total = g_entering[:, c - 1]  # gradient of the state entering chunk k + 1, all paths
        for k in range(c - 2, -1, -1):
            totals.append(total)
            g_chunk_decay[:, k] = (total * entering[:, k]).sum((-1, -2))
            total = torch.addcmul(g_entering[:, k], total, chunk_decay[:, k])
        g_states = torch.stack(totals[::-1], dim=1)  # (b, c, H, P, N): gradient of chunk_states
        g_cum_end = g_chunk_decay * chunk_decay[..., 0, 0]  # (b, c, H)

        # 2. chunk_states = (xdt * to_end)^T B.
        to_end = (cum[:, :, -1:] - cum).exp()[..., None]  # (b, c, Q, H, 1)
        g_states = g_states.view(b, c, H * P, N)
        g_B = (xdt * to_end).view(b, c, Q, H * P) @ g_states  # (b, c, Q, N)
        g_weighted = (B @ g_states.transpose(-1, -2)).view(b, c, Q, H, P)  # gradient of xdt * to_end
        g_xdt = g_weighted * to_end
        g_to_end = (g_weighted * xdt).sum(-1) * to_end[..., 0]  # (b, c, Q, H), through the exp
        g_cum -= g_to_end
        g_cum_end += g_to_end.sum(2)

        # 1. y = (scores * decay) @ xdt per head.
        grad_h = grad.transpose(2, 3)  # (b, c, H, Q, P)
        g_xdt += (weights.transpose(-1, -2) @ grad_h).transpose(2, 3)
        g_weights = grad_h @ xdt.transpose(2, 3).transpose(-1, -2)  # (b, c, H, Q, Q)
        g_scores = (g_weights * decay).sum(2)  # (b, c, Q, Q)
        g_log_decay = g_weights.mul_(weights)  # through the exp: gradient of cum_t - cum_s
        g_cum += (g_log_decay.sum(-1) - g_log_decay.sum(-2)).transpose(2, 3)
        g_C += g_scores @ B
        g_B += g_scores.transpose(-1, -2) @ C
        g_cum[:, :, -1] += g_cum_end
        return g_xdt, g_cum, g_B, g_C


def _decay(cum: Tensor) -> Tensor:
    """cum (b, c, Q, H) -> (b, c, H, Q, Q): exp(cum_t - cum_s) for s <= t, 0 above the diagonal."""
    cum_h = cum.transpose(2, 3)  # (b, c, H, Q)
    segsum = cum_h[..., :, None] - cum_h[..., None, :]  # log decay from s to t
    causal = torch.ones(cum.shape[2], cum.shape[2], dtype=torch.bool, device=cum.device).tril()
    return segsum.masked_fill_(~causal, -math.inf).exp_()


class GatedRMSNorm(nn.Module):
    """RMSNorm(y * silu(z)) * weight over the whole inner width (Mamba-2's norm before ``out_proj``,
    ``norm_before_gate=False``, one group). Mamba-1 had none; Mamba-2 adds it for stability, since the
    scale of the scan's output depends on the decays and on the state size."""

    def __init__(self, width: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        return rms_norm(y, self.weight, self.eps, gate=z)  # one autograd node (models/layers.py)


class Mamba2Mixer(nn.Module):
    """One Mamba-2 mixer, width -> width: projections to z, x, [B, C] and dt, short causal conv + SiLU
    on x and [B, C], the selective scan, D skip, gated RMSNorm with z, out_proj. Initialisation: see
    :class:`Mamba2`."""

    def __init__(
        self,
        width: int,
        num_layers: int,
        expand: int,
        d_state: int,
        head_dim: int,
        d_conv: int,
        chunk_size: int,
        A_init_min: float,
        A_init_max: float,
        dt_min: float,
        dt_max: float,
        negative_eigenvalues: bool,
    ) -> None:
        super().__init__()
        self.negative_eigenvalues = negative_eigenvalues
        self.d_inner, self.d_state, self.head_dim = expand * width, d_state, head_dim
        self.num_heads, self.chunk_size = self.d_inner // head_dim, chunk_size
        H = self.num_heads
        # The reference's in_proj to [z, x, B, C, dt] and its depthwise conv over [x, B, C], split by part
        # (the same parameters and init): one output split in parts makes the backward concatenate the
        # gradients, a pass over the largest tensors that cost 25% of the projections' time here.
        self.in_z = nn.Linear(width, self.d_inner, bias=False)  # the gate branch
        self.in_x = nn.Linear(width, self.d_inner, bias=False)  # the SSM's input, all heads
        self.in_BC = nn.Linear(width, 2 * d_state, bias=False)  # B and C, shared by the heads
        self.in_dt = nn.Linear(width, H, bias=False)  # step sizes, one per head
        self.conv_x, self.conv_BC = CausalConv1d(self.d_inner, d_conv), CausalConv1d(2 * d_state, d_conv)
        # dt_bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max] (floor 1e-4)
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = log_dt.exp().clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log = nn.Parameter(torch.empty(H).uniform_(A_init_min, A_init_max).log())  # A = -exp(A_log)
        self.D = nn.Parameter(torch.ones(H))  # skip connection x -> y, one per head
        self.norm = GatedRMSNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, width, bias=False)
        with torch.no_grad():  # PyTorch's default (kaiming-uniform) scaled by 1/sqrt(layers), as GPT-2 does
            self.out_proj.weight /= math.sqrt(num_layers)

    def _output(self, y: Tensor, x: Tensor, z: Tensor) -> Tensor:
        """y, x (..., H, P), z (..., d_inner) -> (..., width): D skip, gated norm, out_proj."""
        y = torch.addcmul(y, x, self.D[:, None]).flatten(-2)  # (..., d_inner): y + D x
        return self.out_proj(self.norm(y, z))

    def forward(self, u: Tensor) -> Tensor:
        x = F.silu(self.conv_x(self.in_x(u))).unflatten(-1, (self.num_heads, self.head_dim))  # (b, L, H, P)
        B, C = F.silu(self.conv_BC(self.in_BC(u))).chunk(2, dim=-1)  # (b, L, N) each
        dt = F.softplus(self.in_dt(u) + self.dt_bias)  # (b, L, H)
        A = -torch.exp(self.A_log)
        y = ssd_scan(x, dt, A, B, C, self.chunk_size, self.negative_eigenvalues)  # (b, L, H, P)
        return self._output(y, x, self.in_z(u))

    def step(self, u: Tensor, state: MixerState | None) -> tuple[Tensor, MixerState]:
        """u (b, width); state: the convs' buffers (b, d_conv - 1, d_inner) and (b, d_conv - 1, 2 N), and
        the SSM state (b, H, P, N)."""
        conv_x, conv_BC, ssm = (None, None, None) if state is None else state
        x, conv_x = self.conv_x.step(self.in_x(u), conv_x)
        BC, conv_BC = self.conv_BC.step(self.in_BC(u), conv_BC)
        x = F.silu(x).unflatten(-1, (self.num_heads, self.head_dim))  # (b, H, P)
        B, C = F.silu(BC).chunk(2, dim=-1)  # (b, N) each
        dt = F.softplus(self.in_dt(u) + self.dt_bias)  # (b, H)
        log_decay = dt * -torch.exp(self.A_log)  # (b, H)
        if self.negative_eigenvalues:  # 2 exp(dt A) - 1, its magnitude raised to MIN_DECAY as in forward
            magnitude, negative = signed_decay(log_decay)
            decay = torch.where(negative, -magnitude.exp(), magnitude.exp())
        else:
            decay = log_decay.exp()  # exp(dt A) in (0, 1]
        update = (dt[..., None] * x)[..., None] * B[:, None, None, :]  # (b, H, P, N): dt x B^T
        ssm = update if ssm is None else ssm * decay[..., None, None] + update
        y = ssm @ C[:, None, :, None]  # (b, H, P, 1): S C
        return self._output(y[..., 0], x, self.in_z(u)), (conv_x, conv_BC, ssm)

    def state_size(self, seq_len: int) -> int:
        conv_buffers = self.conv_x.state_size(seq_len) + self.conv_BC.state_size(seq_len)
        return self.num_heads * self.head_dim * self.d_state + conv_buffers


class Mamba2(MixerStack):
    """Mamba-2 backbone: ``num_layers`` pre-LayerNorm residual blocks around :class:`Mamba2Mixer`, no MLP
    (the mixer is expanded and gated instead), then a final LayerNorm.

    Args:
        width: residual-stream width (d_model).
        num_layers: Mamba-2 blocks.
        expand: inner width d_inner = expand x width (the x and z branches).
        d_state: N, the state size per channel (and the width of B and C).
        num_heads: heads, each with its own decay A and step size dt, over d_inner / num_heads channels
            (head_dim P); it must divide d_inner, so any even width works with the default 4.
        d_conv: kernel of the short causal depthwise convolutions on x and on [B, C].
        chunk_size: Q, positions per chunk of the SSD algorithm (speed only, the result is the same).
        A_init_min, A_init_max: A = -a per head, a drawn uniformly in [A_init_min, A_init_max].
        dt_min, dt_max: range of the initial step sizes, drawn log-uniformly.
        negative_eigenvalues: the range of the per-step decay a_t, the state transition's one eigenvalue
            per head. false (Mamba-2's own): a_t = exp(dt_t A) in (0, 1), the state only fades. true (the
            extended range of Grazzi et al. 2025, "Unlocking state-tracking in linear RNNs through negative
            eigenvalues"): a_t = 2 exp(dt_t A) - 1 in (-1, 1), so a token can flip the state's sign, which
            tracking parity needs (a_t = -1 at a 1, +1 at a 0) and no decay in (0, 1) can do. Same
            parameters and initialisation (the initial decays 0.2..0.999 become -0.6..0.998); magnitudes
            below 1e-6 are raised to 1e-6 (``MIN_DECAY``) in both forms. conf/model/mamba_negeig.yaml.

    Defaults (106,361 parameters with the default task, like the LSTM's 107,225): Mamba's own expand = 2,
    and the width (80) chosen to match the parameter count; d_state = 32 rather than Mamba-2's 64-128,
    which are cheap on a GPU's tensor cores but not on a CPU, where the state's cost grows with d_state;
    4 heads of 40 channels; chunks of 32 (a little faster than 64 here).

    Initialisation (Mamba-2's, ``mamba2.py``; these details decide whether it trains): A_log = log a with
    a ~ U[1, 16] per head; ``dt_bias`` = softplus^-1(dt), dt log-uniform in [1e-3, 1e-1] (floor 1e-4), so
    the initial per-step decays exp(-dt a) range from 0.999 (memory over ~1000 positions) to 0.2; D = 1;
    gated-RMSNorm weight 1; input projections, convs and out_proj PyTorch's defaults (no bias in the
    projections, bias in the convs), then out_proj divided by sqrt(num_layers) (``_init_weights`` in
    ``mixer_seq_simple.py``, one residual branch per layer). A_log, dt_bias and D are vectors, so the
    shared optimiser leaves them out of weight decay, as the reference does. Not followed: the reference
    draws the embedding from N(0, 0.02); here the shared LightningModule owns the embedding (PyTorch's
    N(0, 1)), and the pre-norm makes the mixers insensitive to its scale.
    """

    def __init__(
        self,
        width: int = 80,
        num_layers: int = 2,
        expand: int = 2,
        d_state: int = 32,
        num_heads: int = 4,
        d_conv: int = 4,
        chunk_size: int = 32,
        A_init_min: float = 1.0,
        A_init_max: float = 16.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        negative_eigenvalues: bool = False,
    ) -> None:
        sizes = {"width": width, "num_layers": num_layers, "expand": expand, "d_state": d_state}
        sizes |= {"num_heads": num_heads, "d_conv": d_conv, "chunk_size": chunk_size}
        for key, value in sizes.items():
            if value < 1:
                raise ValueError(f"model.{key}={value} is out of range; allowed: an integer >= 1")
        if (expand * width) % num_heads:
            inner = expand * width
            raise ValueError(f"model.num_heads={num_heads}; allowed: a divisor of expand x width = {inner}")
        head_dim = expand * width // num_heads
        if not 0 < A_init_min <= A_init_max:
            raise ValueError(
                f"model.A_init_min={A_init_min}, model.A_init_max={A_init_max}; allowed: 0 < min <= max"
            )
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"model.dt_min={dt_min}, model.dt_max={dt_max}; allowed: 0 < min <= max")
        if not isinstance(negative_eigenvalues, bool):
            raise ValueError(f"model.negative_eigenvalues={negative_eigenvalues!r}; allowed: true or false")

        def make_mixer(layer: int) -> Mamba2Mixer:
            sizes = (expand, d_state, head_dim, d_conv, chunk_size)
            init = (A_init_min, A_init_max, dt_min, dt_max)
            return Mamba2Mixer(width, num_layers, *sizes, *init, negative_eigenvalues)

        super().__init__(width, num_layers, make_mixer, d_ff=0)

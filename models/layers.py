"""Parts the modern models share: a stack of pre-norm residual blocks around a sequence *mixer*, and a
short causal convolution. A mixer is the part that moves information along the sequence (attention,
linear attention, a state-space scan); everything else in a block is per position.

A mixer follows the backbone contract's three methods on its own, with width in and width out:
``forward(x)`` (B, L, width) -> (B, L, width), causal; ``step(x, state)`` (B, width) -> (B, width) and
the next state; ``state_size(seq_len)``. :class:`MixerStack` turns a mixer into a backbone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import BackwardCFunction, FunctionCtx

from longrange.models import State


class CausalConv1d(nn.Module):
    """Depthwise causal convolution over the sequence: each channel mixes its own last ``kernel`` positions.

    It gives a mixer cheap access to the order of nearby tokens ("a" right before "movie"), which sums over
    the whole past (linear attention, state-space scans) cannot see. Initialisation: PyTorch's default.
    Recurrent state: the last ``kernel - 1`` inputs, (B, kernel - 1, channels).
    """

    def __init__(self, channels: int, kernel: int = 4) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(channels, channels, kernel, groups=channels)  # weight (C, 1, kernel)

    def forward(self, x: Tensor) -> Tensor:
        return _CausalDepthwise.apply(x, self.conv.weight[:, 0], self.conv.bias)  # (B, L, C)

    def step(self, x: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        """x (B, C); state: the previous ``kernel - 1`` inputs (B, kernel - 1, C), zeros at the start."""
        if state is None:
            state = x.new_zeros(x.shape[0], self.kernel - 1, x.shape[1])
        window = torch.cat([state, x[:, None]], dim=1)  # (B, kernel, C), oldest first
        weight = self.conv.weight[:, 0].transpose(0, 1)  # (kernel, C)
        return (window * weight).sum(1) + self.conv.bias, window[:, 1:]  # type: ignore[operator]

    def state_size(self, seq_len: int) -> int:
        return (self.kernel - 1) * self.conv.in_channels


def _depthwise(x: Tensor, weight: Tensor, bias: Tensor | None, left: int, right: int) -> Tensor:
    """x (B, L, C) padded with ``left`` and ``right`` zero positions, each channel cross-correlated
    with its own row of ``weight`` (C, kernel): (B, L + left + right - kernel + 1, C).

    Run as a (1, kernel) depthwise conv2d on channels-last memory, which is (B, L, C) memory as it is: on the
    CPU that kernel took 2/3 of the time of conv1d's (B = 64, L = 1024, 192 channels)."""
    padded = F.pad(x, (0, 0, left, right)).transpose(1, 2)[:, :, None]  # (B, C, 1, L + left + right)
    padded = padded.contiguous(memory_format=torch.channels_last)  # a no-op view for contiguous x
    y = F.conv2d(padded, weight[:, None, None, :], bias, groups=weight.shape[0])  # (B, C, 1, L')
    return y[:, :, 0].transpose(1, 2)  # (B, L', C)


class _CausalDepthwise(torch.autograd.Function):
    """y_t = bias + sum_j weight[:, j] x_{t - kernel + 1 + j}, with a hand-written backward.

    The depthwise kernel's own backward took 5x its forward on the CPU (B = 64, L = 1024, 192 channels).
    Here the input's gradient is the same forward kernel run on the output's gradient with the taps reversed
    (padded on the right: y_t reaches back, so x_s's gradient reaches forward), and the weight's gradient one
    product per tap, summed over batch and positions: 0.7x the time of the built-in backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return _depthwise(x, weight, bias, weight.shape[1] - 1, 0)

    @staticmethod
    def backward(ctx: BackwardCFunction, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, weight = cast("tuple[Tensor, Tensor]", ctx.saved_tensors)
        kernel, L = weight.shape[1], x.shape[1]
        grad = grad.to(x.dtype).contiguous()  # (B, L, C); under autocast the forward's output was bf16
        grad_x = _depthwise(grad, weight.flip(1), None, 0, kernel - 1)  # (B, L, C)
        products = torch.empty_like(grad)  # one buffer for the taps' products (lag j: grad_t x_{t - j})
        grad_weight = weight.new_empty(weight.shape)  # (C, kernel)
        for lag in range(kernel):
            if lag >= L:
                grad_weight[:, kernel - 1 - lag] = 0
                continue
            torch.mul(grad[:, lag:], x[:, : L - lag], out=products[:, lag:])
            grad_weight[:, kernel - 1 - lag] = products[:, lag:].sum((0, 1))
        return grad_x, grad_weight, grad.sum((0, 1))


def rms_norm(x: Tensor, weight: Tensor, eps: float, gate: Tensor | None = None) -> Tensor:
    """RMSNorm over the last dimension, h * weight / sqrt(mean(h²) + eps), of h = x, or with ``gate`` of
    h = x * silu(gate) (Mamba-2's gated norm): the same numbers as ``F.rms_norm`` (after the gating), in
    one hand-written autograd node (:class:`_RMSNorm`)."""
    return _RMSNorm.apply(x, gate, weight, eps)


class _RMSNorm(torch.autograd.Function):
    """``rms_norm`` with a hand-written backward. PyTorch's RMSNorm on the CPU is composed of elementwise
    steps (square, mean, rsqrt, two products), each a new tensor the size of x, forward and backward; here
    the forward makes two (the gate's SiLU and the output) and the backward four, the rest in place."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, gate: Tensor | None, weight: Tensor, eps: float) -> Tensor:
        h = x if gate is None else F.silu(gate).mul_(x)  # (..., n)
        n = h.shape[-1]
        r = torch.linalg.vector_norm(h, dim=-1, keepdim=True).square_().div_(n).add_(eps).rsqrt_()  # (..., 1)
        ctx.save_for_backward(x, gate, weight, h, r)  # type: ignore[arg-type]  # gate may be None
        return (h * r).mul_(weight)

    @staticmethod
    def backward(ctx: BackwardCFunction, grad: Tensor) -> tuple[Tensor, Tensor | None, Tensor, None]:
        x, gate, weight, h, r = cast(
            "tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor]", ctx.saved_tensors
        )
        n = h.shape[-1]
        gh = grad * h  # (..., n)
        grad_weight = gh.reshape(-1, n).T @ r.reshape(-1)  # sum over positions of grad h r
        dot = (gh @ weight)[..., None]  # (..., 1): sum_j grad_j weight_j h_j
        # d/dh of h r w: r (grad w) - h r³ (grad w . h) / n
        grad_h = (grad * weight).mul_(r).addcmul_(h, r.pow(3).mul_(dot), value=-1 / n)
        if gate is None:
            return grad_h, None, grad_weight, None
        s = torch.sigmoid(gate)
        gs = torch.mul(gate, s)  # silu(gate)
        grad_x = grad_h * gs
        # silu'(g) = s + g s (1 - s) = 1 + (1 - s)(g s - 1), in the buffers of s and g s
        one_minus_s = s.neg_().add_(1)
        grad_gate = gs.sub_(1).mul_(one_minus_s).add_(1).mul_(x).mul_(grad_h)
        return grad_x, grad_gate, grad_weight, None


class Mixer(Protocol):
    """What a block needs of its mixer (an ``nn.Module``): the contract above, width in and width out."""

    def __call__(self, x: Tensor, /) -> Tensor: ...  # nn.Module's call runs forward

    def step(self, x: Tensor, state: State | None, /) -> tuple[Tensor, State]: ...

    def state_size(self, seq_len: int, /) -> int: ...


class MLP(nn.Module):
    """Per-position feed-forward: Linear -> GELU -> Linear."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """x + mixer(norm(x)), then x + mlp(norm(x)) (pre-norm, as in GPT-2, Mamba and DeltaNet)."""

    def __init__(self, width: int, mixer: Mixer, d_ff: int) -> None:
        super().__init__()
        self.norm1, self.mixer = nn.LayerNorm(width), mixer
        self.norm2: nn.LayerNorm | None = nn.LayerNorm(width) if d_ff else None
        self.mlp: MLP | None = MLP(width, d_ff) if d_ff else None

    def _mlp(self, x: Tensor) -> Tensor:
        return x if self.mlp is None or self.norm2 is None else x + self.mlp(self.norm2(x))

    def forward(self, x: Tensor) -> Tensor:
        return self._mlp(x + self.mixer(self.norm1(x)))

    def step(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        mixed, state = self.mixer.step(self.norm1(x), state)
        return self._mlp(x + mixed), state


class MixerStack(nn.Module):
    """A backbone of ``num_layers`` blocks around mixers made by ``make_mixer(layer)``, then a LayerNorm.

    Embeddings go straight into the residual stream (``d_input = d_output = width``). ``d_ff = 0`` leaves
    out the MLPs (Mamba's own blocks have none: its mixer is gated and expanded instead).
    """

    def __init__(self, width: int, num_layers: int, make_mixer: Callable[[int], Mixer], d_ff: int) -> None:
        super().__init__()
        self.d_input = self.d_output = width
        self.max_len: int | None = None
        self.blocks = nn.ModuleList(Block(width, make_mixer(i), d_ff) for i in range(num_layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)  # (B, L, width)
        return self.norm(x)

    def step(self, x: Tensor, state: list[State] | None) -> tuple[Tensor, list[State]]:
        states = []
        for i, block in enumerate(self._blocks()):
            x, layer_state = block.step(x, None if state is None else state[i])
            states.append(layer_state)
        return self.norm(x), states

    def state_size(self, seq_len: int) -> int:
        return sum(block.mixer.state_size(seq_len) for block in self._blocks())

    def _blocks(self) -> Iterable[Block]:
        return cast("Iterable[Block]", self.blocks)  # an nn.ModuleList yields plain nn.Modules to mypy

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
        # Left-pad by kernel - 1 (causal), then run it as a (1, kernel) depthwise conv2d on channels-last
        # memory: on the CPU that kernel took 2/3 of the time of conv1d's, forward and backward (B = 64,
        # L = 1024, 192 channels), for the same numbers.
        padded = F.pad(x, (0, 0, self.kernel - 1, 0)).transpose(1, 2)[:, :, None]  # (B, C, 1, L + kernel - 1)
        padded = padded.contiguous(memory_format=torch.channels_last)
        weight = self.conv.weight[:, :, None]  # (C, 1, 1, kernel)
        y = F.conv2d(padded, weight, self.conv.bias, groups=self.conv.in_channels)  # (B, C, 1, L)
        return y[:, :, 0].transpose(1, 2)  # (B, L, C)

    def step(self, x: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        """x (B, C); state: the previous ``kernel - 1`` inputs (B, kernel - 1, C), zeros at the start."""
        if state is None:
            state = x.new_zeros(x.shape[0], self.kernel - 1, x.shape[1])
        window = torch.cat([state, x[:, None]], dim=1)  # (B, kernel, C), oldest first
        weight = self.conv.weight[:, 0].transpose(0, 1)  # (kernel, C)
        return (window * weight).sum(1) + self.conv.bias, window[:, 1:]  # type: ignore[operator]

    def state_size(self, seq_len: int) -> int:
        return (self.kernel - 1) * self.conv.in_channels


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

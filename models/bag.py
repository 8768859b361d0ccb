"""Order-free baseline: a causal running mean of the embeddings, read together with the current token.

The control every long-range claim needs. At position t the features are an MLP of [mean of x_1..x_t,
x_t]: the model knows *which* tokens came before and how often, but not in what order, not how far back,
and not which word was bound to which (in "i read a book ... i watched a movie ... i watched the", the
mean holds both nouns and both relations, not their pairing). It has no recurrence and no attention; its
state is a running sum. A task it solves needs no memory of order or binding; a model scoring below it
failed to *learn* the task rather than to *hold* what it needs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Bag(nn.Module):
    """Args:
    d_input: embedding width read at each position.
    width: hidden width of the MLP (also the feature width).
    num_layers: MLP layers (>= 1), each Linear + GELU.

    Initialisation: PyTorch's default for Linear (Kaiming-uniform).
    """

    def __init__(self, d_input: int = 64, width: int = 224, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"model.num_layers={num_layers} is out of range; allowed: >= 1")
        self.d_input, self.d_output, self.max_len = d_input, width, None
        sizes = [2 * d_input] + [width] * num_layers
        layers = [m for i in range(num_layers) for m in (nn.Linear(sizes[i], sizes[i + 1]), nn.GELU())]
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        count = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[:, None]  # (L, 1)
        mean = x.cumsum(dim=1) / count  # (B, L, d_input): mean of the embeddings up to each position
        return self.mlp(torch.cat([mean, x], dim=-1))  # (B, L, width)

    def step(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """State: the running sum (B, d_input) and the count of positions (B, 1)."""
        total, count = (torch.zeros_like(x), x.new_zeros(len(x), 1)) if state is None else state
        total, count = total + x, count + 1
        return self.mlp(torch.cat([total / count, x], dim=-1)), (total, count)

    def state_size(self, seq_len: int) -> int:
        return self.d_input + 1  # the running sum and the count

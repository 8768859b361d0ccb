"""GRU backbone: a stack of ``torch.nn.GRU`` layers with a configurable update-gate bias."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GRU(nn.Module):
    """Args:
    d_input: embedding width read at each position.
    width: state width (also the feature width).
    num_layers: stacked GRU layers.
    update_bias: initial update-gate bias. PyTorch's GRU computes h' = (1 - z) * n + z * h, so a
        positive bias on z makes the cell carry its state forward by default, the GRU analogue of
        the LSTM's forget bias (sigmoid(1) = 0.73 of the state kept per step). 0 is PyTorch's.
    dropout: dropout between stacked layers.

    Initialisation: PyTorch's default (uniform in +-1/sqrt(width)), then the update-gate bias.
    """

    def __init__(
        self,
        d_input: int = 64,
        width: int = 140,
        num_layers: int = 1,
        update_bias: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.d_input, self.d_output, self.max_len = d_input, width, None
        self.rnn = nn.GRU(d_input, width, num_layers, batch_first=True, dropout=dropout)
        with torch.no_grad():  # gate order is (reset, update, new); the two biases add up
            for layer in range(num_layers):
                getattr(self.rnn, f"bias_ih_l{layer}")[width : 2 * width].fill_(update_bias)
                getattr(self.rnn, f"bias_hh_l{layer}")[width : 2 * width].zero_()

    def forward(self, x: Tensor) -> Tensor:
        features, _ = self.rnn(x)  # (B, L, width)
        return features

    def step(self, x: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        h = None if state is None else state.transpose(0, 1).contiguous()  # (layers, B, width)
        features, h = self.rnn(x[:, None], h)  # (B, 1, width)
        return features[:, 0], h.transpose(0, 1)  # state batch first: (B, layers, width)

    def state_size(self, seq_len: int) -> int:
        return self.rnn.num_layers * self.rnn.hidden_size

"""LSTM backbone: a stack of ``torch.nn.LSTM`` layers with a configurable forget-gate bias."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LSTM(nn.Module):
    """Args:
    d_input: embedding width read at each position.
    hidden_size: state width (also the feature width).
    num_layers: stacked LSTM layers.
    forget_bias: initial forget-gate bias. PyTorch initialises it near 0, so the cell starts by
        forgetting about half of its state each step (sigmoid(0) = 0.5) and gradients vanish over long
        gaps. 1.0 is the standard remedy (Gers et al. 2000; Jozefowicz et al. 2015): sigmoid(1) = 0.73.
    dropout: dropout between stacked layers.
    """

    def __init__(
        self,
        d_input: int = 64,
        hidden_size: int = 120,
        num_layers: int = 1,
        forget_bias: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.d_input, self.d_output, self.max_len = d_input, hidden_size, None
        self.rnn = nn.LSTM(d_input, hidden_size, num_layers, batch_first=True, dropout=dropout)
        h = hidden_size
        with torch.no_grad():  # gate order is (input, forget, cell, output); the two biases add up
            for layer in range(num_layers):
                getattr(self.rnn, f"bias_ih_l{layer}")[h : 2 * h].fill_(forget_bias)
                getattr(self.rnn, f"bias_hh_l{layer}")[h : 2 * h].zero_()

    def forward(self, x: Tensor) -> Tensor:
        features, _ = self.rnn(x)  # (B, L, hidden_size): the hidden state after each position
        return features

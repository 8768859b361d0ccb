"""LSTM backbone: a stack of ``torch.nn.LSTM`` layers with a configurable forget-gate bias."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Backpropagation through a long sequence shrinks the gradient geometrically; below 1.2e-38 float32 values
# become *denormal*, and x86 CPUs compute on them 10-100x slower: a step at L=1024 took 12x longer per
# token than at L=128. Flushing them to zero (FTZ/DAZ; the values are lost in rounding anyway) keeps the
# step time linear in L. The flag is per thread: set here, at import, before torch starts its thread pool
# (new threads inherit it), and again in forward() for the thread that runs the model.
torch.set_flush_denormal(True)


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
        torch.set_flush_denormal(True)
        features, _ = self.rnn(x)  # (B, L, hidden_size): the hidden state after each position
        return features

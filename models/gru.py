"""GRU backbone: a stack of ``torch.nn.GRU`` layers with a configurable update-gate bias."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Backpropagation through a long sequence shrinks the gradient geometrically; below 1.2e-38 float32 values
# become *denormal*, and x86 CPUs compute on them 10-100x slower: a step at L=1024 took 12x longer per
# token than at L=128. Flushing them to zero (FTZ/DAZ; the values are lost in rounding anyway) keeps the
# step time linear in L. The flag is per thread: set here, at import, before torch starts its thread pool
# (new threads inherit it), and again in forward() for the thread that runs the model.
torch.set_flush_denormal(True)


class GRU(nn.Module):
    """Args:
    d_input: embedding width read at each position.
    hidden_size: state width (also the feature width).
    num_layers: stacked GRU layers.
    update_bias: initial update-gate bias. PyTorch's GRU computes h' = (1 - z) * n + z * h, so a
        positive bias on z makes the cell carry its state forward by default, the GRU analogue of
        the LSTM's forget bias of 1.0 (sigmoid(1) = 0.73 of the state kept per step). 0 is PyTorch's.
    dropout: dropout between stacked layers.
    """

    def __init__(
        self,
        d_input: int = 64,
        hidden_size: int = 140,
        num_layers: int = 1,
        update_bias: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.d_input, self.d_output, self.max_len = d_input, hidden_size, None
        self.rnn = nn.GRU(d_input, hidden_size, num_layers, batch_first=True, dropout=dropout)
        h = hidden_size
        with torch.no_grad():  # gate order is (reset, update, new); the two biases add up
            for layer in range(num_layers):
                getattr(self.rnn, f"bias_ih_l{layer}")[h : 2 * h].fill_(update_bias)
                getattr(self.rnn, f"bias_hh_l{layer}")[h : 2 * h].zero_()

    def forward(self, x: Tensor) -> Tensor:
        torch.set_flush_denormal(True)
        features, _ = self.rnn(x)  # (B, L, hidden_size)
        return features

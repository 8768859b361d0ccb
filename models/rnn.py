"""Elman RNN backbone (tanh): the classic baseline whose gradients vanish over long gaps."""

from __future__ import annotations

from torch import Tensor, nn


class RNN(nn.Module):
    """Args:
    d_input: embedding width read at each position.
    hidden_size: state width (also the feature width).
    num_layers: stacked layers.
    dropout: dropout between stacked layers.

    Initialisation: PyTorch's default, uniform in +-1/sqrt(hidden_size) for every weight.
    """

    def __init__(
        self, d_input: int = 64, hidden_size: int = 240, num_layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.d_input, self.d_output, self.max_len = d_input, hidden_size, None
        self.rnn = nn.RNN(
            d_input, hidden_size, num_layers, nonlinearity="tanh", batch_first=True, dropout=dropout
        )

    def forward(self, x: Tensor) -> Tensor:
        features, _ = self.rnn(x)  # (B, L, hidden_size): the state after each position
        return features

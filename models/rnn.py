"""Elman RNN backbone (tanh): the classic baseline whose gradients vanish over long gaps."""

from __future__ import annotations

from torch import Tensor, nn


class RNN(nn.Module):
    """Args:
    d_input: embedding width read at each position.
    width: state width (also the feature width).
    num_layers: stacked layers.
    dropout: dropout between stacked layers.

    Initialisation: PyTorch's default, uniform in +-1/sqrt(width) for every weight.
    """

    def __init__(
        self, d_input: int = 64, width: int = 240, num_layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.d_input, self.d_output, self.max_len = d_input, width, None
        self.rnn = nn.RNN(d_input, width, num_layers, nonlinearity="tanh", batch_first=True, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        features, _ = self.rnn(x)  # (B, L, width): the state after each position
        return features

    def step(self, x: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        h = None if state is None else state.transpose(0, 1).contiguous()  # (layers, B, width)
        features, h = self.rnn(x[:, None], h)  # (B, 1, width)
        return features[:, 0], h.transpose(0, 1)  # state batch first: (B, layers, width)

    def state_size(self, seq_len: int) -> int:
        return self.rnn.num_layers * self.rnn.hidden_size

"""Sequence backbones and the one LightningModule that trains them.

The backbone contract (every model file in this folder follows it; :class:`Backbone` states it as code):

* an ``nn.Module`` whose constructor takes only plain config values, each with a default, and names its
  main width ``width`` (the recurrent state of the LSTM, GRU and RNN, the residual stream of the others),
  so that ``model=lstm,gru,attention model.width=32,128`` sweeps every model's width with one key;
* attributes ``d_input`` (width of the token embeddings it reads), ``d_output`` (width of the features it
  returns) and ``max_len`` (longest sequence it accepts, or ``None`` for any length);
* ``forward(x)``: embeddings ``(B, L, d_input)`` -> per-position features ``(B, L, d_output)``, causal:
  the features at position t depend only on inputs at positions <= t. This is the *training form*
  (parallel or chunked over the sequence, whatever is fast);
* ``step(x, state)``: the *recurrent form*: one position's embeddings ``(B, d_input)`` and the state
  carried from the previous position (``None`` at the start) -> that position's features
  ``(B, d_output)`` and the new state. The state is a tensor or a tuple / list of tensors with the batch
  as their first dimension. Fed a sequence one position at a time, ``step`` returns what ``forward``
  returns (the tests check it in float64 for every model);
* ``state_size(seq_len)``: the number of floats per sample the recurrent form carries from one position
  to the next after reading ``seq_len`` tokens (an LSTM 2 x width per layer whatever the length,
  attention its key/value cache, which grows with it). The tests count the elements of the state
  ``step`` really returns and compare;
* optionally ``attention_maps(x)`` -> one ``(B, H, L, L)`` tensor of attention weights per layer.

The shared :class:`~longrange.models.module.LongRangeModule` owns the embedding, the readout at the answer
positions, the loss, the metrics and the optimiser, so a new variant is one file here plus one YAML in
``conf/model/``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

State = Any  # a tensor, or a tuple / list of tensors (nested), each (B, ...)


@runtime_checkable
class Backbone(Protocol):
    """The contract above, for readers and type checkers (``isinstance`` checks the methods exist)."""

    d_input: int
    d_output: int
    max_len: int | None

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, d_input) -> (B, L, d_output), causal."""
        ...

    def __call__(self, x: Tensor) -> Tensor: ...  # nn.Module's call runs forward

    def step(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """(B, d_input) and the previous state -> (B, d_output) and the next state."""
        ...

    def state_size(self, seq_len: int) -> int:
        """Floats per sample carried from position ``seq_len`` to the next one by :meth:`step`."""
        ...


@runtime_checkable
class HasAttentionMaps(Protocol):
    def attention_maps(self, x: Tensor) -> list[Tensor]:
        """One (B, H, L, L) tensor of attention weights per layer."""
        ...


def state_tensors(state: State) -> list[Tensor]:
    """The tensors of a state, flattened (nested tuples and lists), in order."""
    if isinstance(state, Tensor):
        return [state]
    if isinstance(state, tuple | list):
        return [t for part in state for t in state_tensors(part)]
    if state is None:
        return []
    raise TypeError(f"a state holds tensors, tuples and lists; got {type(state).__name__}")

"""Parity: "0 1 1 0 1 =" -> 1, the parity of the bits since the previous query (1: an odd number of 1s).

The simplest state to track: one bit, flipped by every 1. A sample is K segments (``segments``), each
D + 1 random bits followed by the query ``=``; at each query (an *answer position*) the model must produce
the running parity of its segment's bits, ``0`` or ``1``, and the next segment starts again from 0. It is
modular arithmetic with m = 2 (``datasets/modular.py``, whose layout, distance, segments and sample space
it shares), kept as a task of its own because the literature states its results on it:

* Deletang et al. 2023 ("Neural networks and the Chomsky hierarchy"): the LSTM generalises parity to
  longer sequences than it was trained on, the Transformer does not.
* Grazzi et al. 2025 ("Unlocking state-tracking in linear RNNs through negative eigenvalues"): a linear
  recurrence h_t = a_t h_{t-1} + b_t needs a_t = -1 to flip its state at a 1; DeltaNet and Mamba, whose
  transition eigenvalues lie in [0, 1], cannot learn parity, and learn it once the range is [-1, 1]
  (``model=deltanet_negeig``, ``model=mamba_negeig``).

Distance ``D`` is the length over which the parity is tracked: a segment's first bit sits D + 1 positions
before its query, with D tokens strictly between them. Layout (L = K (D + 2) + 1)::

    <bos> | b_1 ... b_{D+1} = | b_1 ... b_{D+1} = | ...      answer at each "=": its segment's parity

Worked example (``Parity(distance=4, segments=3)``, decoded with ``task.vocab.decode`` from
``task.sample(1, 4, torch.Generator().manual_seed(0))``)::

    <bos> 0 1 1 0 1 = 1 1 1 1 1 = 1 0 0 1 0 =                  -> 1, 1 and 0 at the three "="

(three 1s: odd; five: odd; two: even). Chance level is 1 / 2: an answer flips with any single bit of its
segment. The sample space is 2^(K (D+1)) samples: with the default K = 8 segments, D >= 1 (2**16
samples); D = 0 (2**8) is refused, as the disjoint hash splits need at least 2**12.
"""

from __future__ import annotations

from longrange.datasets.modular import ModularSum


class Parity(ModularSum):
    """At each query, produce the parity of the D + 1 bits since the previous query.

    Args:
        distance: D, tokens strictly between a segment's first bit and its query (a segment holds D + 1
            bits); an int or a list.
        eval_distance: distances for validation/test (default: ``distance``); set it beyond the training
            distances to measure length extrapolation.
        segments: K (1..1024), segments per sample, each ended by its query: K answers per sample.
    """

    modulus_is_a_key = False

    def __init__(
        self, distance: int | list[int] = 16, eval_distance: int | list[int] | None = None, segments: int = 8
    ) -> None:
        super().__init__(distance, eval_distance, modulus=2, segments=segments)

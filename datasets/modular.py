"""Modular arithmetic: "4 4 3 0 =" -> 1, the running sum of small numbers modulo m, segment after segment.

A state-tracking task (the other side of memory: a state that every token updates, where the recall tasks
ask for one token kept unchanged). A sample is K *segments* (``segments``), each D + 1 numbers drawn
uniformly from 0..m-1 (m = ``modulus``) followed by the query ``=``; at each query (an *answer position*)
the model must produce the sum of its segment's numbers modulo m. The query also ends the segment: the
next sum starts from 0 after it, so every answer of a sample tracks exactly D + 1 updates, and a sample
gives K answers (one distance per sample, as every task's batch format requires). ``modulus: 2`` is
parity (``datasets/parity.py``). Deletang et al. 2023 ("Neural networks and the Chomsky hierarchy":
"modular arithmetic" without brackets, "parity check") find that LSTMs learn such counters at any length
while Transformers fail beyond their trained lengths.

Distance ``D`` is the length over which the state is tracked: a segment's first number sits D + 1
positions before its query, with D tokens strictly between them (the recall tasks' convention: the
diagnostics' "antecedent" ``p - D - 1`` is the segment's first number; here every number of the segment
matters equally). Layout (L = K (D + 2) + 1)::

    <bos> | x_1 ... x_{D+1} = | x_1 ... x_{D+1} = | ...      answer at each "=": its segment's sum mod m
    0       1       D+1   D+2                  2(D+2)

Worked example (``ModularSum(distance=3, modulus=5, segments=2)``, decoded with ``task.vocab.decode``
from ``task.sample(1, 3, torch.Generator().manual_seed(0))``)::

    <bos> 4 4 3 0 = 3 4 2 3 =                                    -> 1 at the first "=", 2 at the second

(4 + 4 + 3 + 0 = 11 = 1 mod 5, then 3 + 4 + 2 + 3 = 12 = 2 mod 5.) The numbers and the answers share the
tokens ``0`` .. ``m-1``. Chance level is 1 / m: each answer is uniform and independent of every proper
part of its segment.

What it measures: whether a model keeps an exact, bounded state over many updates. A recurrent state can
hold the residue at any length (a rotation by 2 pi x / m per number; a sign flip per 1 for parity, which
a linear recurrence can only make with a negative eigenvalue: Grazzi et al. 2025), while attention must
recompute it from all the segment's positions at once, and its position codes past the trained lengths
are new to it. Train short, test long with ``eval_distance`` (``experiment=state_tracking``): learning
needs short segments first, so train on several distances starting near the shortest allowed one
(measured: with one segment per sample, a GRU trained on parity at D = 12 and 16 stayed at chance after
1000 steps; with 8 segments and D = 1..16 it solved all three tasks within 1500 steps, at every length up
to 128).
Controls: a sum is commutative, but the segments are not: the order-free control (``model=bag``: a
running mean of every embedding so far) cannot tell which numbers came after the last query (past the
first segment, where the mean holds the counts it needs, if not in a form it reads at unseen lengths).

The sample space is m^(K (D+1)) samples; parameters that allow fewer than 2**12 are refused (the disjoint
hash splits need more), e.g. D = 0 for parity with the default K = 8.
"""

from __future__ import annotations

import math

import torch

from longrange.datasets.base import MIN_SAMPLE_BITS, SyntheticTask, TaskBatch, Vocabulary, check_int

SPECIALS = ("<pad>", "<bos>")
QUERY = "="


class ModularSum(SyntheticTask):
    """At each query, produce the sum of the D + 1 numbers since the previous query, modulo ``modulus``.

    Args:
        distance: D, tokens strictly between a segment's first number and its query (a segment holds
            D + 1 numbers); an int or a list.
        eval_distance: distances for validation/test (default: ``distance``); set it beyond the training
            distances to measure length extrapolation.
        modulus: m (2..64): the numbers are drawn from 0..m-1 and each answer is a sum modulo m;
            chance level is 1 / m.
        segments: K (1..1024), segments per sample, each ended by its query: K answers per sample.
    """

    modulus_is_a_key = True  # a config key of this task (not of Parity, where it is 2): error messages

    def __init__(
        self,
        distance: int | list[int] = 16,
        eval_distance: int | list[int] | None = None,
        modulus: int = 5,
        segments: int = 8,
    ) -> None:
        super().__init__(distance, eval_distance)
        self.modulus = check_int("data.modulus", modulus, 2, 64)
        self.segments = check_int("data.segments", segments, 1, 1024)
        self.numbers = [str(i) for i in range(modulus)]
        self.vocab = Vocabulary(SPECIALS, self.numbers, [QUERY])
        self.number_ids = self.vocab.ids(self.numbers)  # (m,): id of the number i at index i
        smallest = min(self.train_distances + self.eval_distances)
        bits = segments * (smallest + 1) * math.log2(modulus)  # log2 of m^(K (D+1)), the sample space
        self.check_sample_space(
            2.0 ** min(bits, 1000),  # a float: capped, never an overflow
            f"data.distance={smallest} with data.segments={segments}"
            + (f" and data.modulus={modulus}" if self.modulus_is_a_key else ""),
            f"raise data.distance (>= {self.min_distance} here) or data.segments",
        )

    @property
    def min_distance(self) -> int:
        """The shortest distance whose sample space passes the check: m^(K (D+1)) >= 2**MIN_SAMPLE_BITS."""
        return max(0, math.ceil(MIN_SAMPLE_BITS / (self.segments * math.log2(self.modulus)) - 1e-9) - 1)

    @property
    def chance_level(self) -> float:
        return 1.0 / self.modulus

    def seq_len(self, distance: int) -> int:
        return self.segments * (distance + 2) + 1

    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        B, K, D, m = batch_size, self.segments, distance, self.modulus
        numbers = torch.randint(0, m, (B, K, D + 1), generator=generator)  # (B, K, D + 1) values
        answer = numbers.sum(2) % m  # (B, K): each segment's sum
        query = torch.full((B, K, 1), self.vocab.index[QUERY])
        segments = torch.cat([self.number_ids[numbers], query], dim=2).view(B, K * (D + 2))
        tokens = torch.cat([torch.full((B, 1), self.vocab.index["<bos>"]), segments], dim=1)  # (B, L)
        position = (D + 2) * torch.arange(1, K + 1).expand(B, K)  # (B, K): the queries
        return TaskBatch.with_answers(tokens, position, self.number_ids[answer], D)

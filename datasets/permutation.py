"""Permutation composition: "102 120 210 1" -> 1, where a ball ends up after a sequence of shuffles.

The word problem of a finite group, the canonical state-tracking task (Merrill, Petty and Sabharwal 2024,
"The illusion of state in state-space models"). A sample is K segments (``segments``), each D + 1
permutations of the n points 0..n-1, drawn uniformly from a group G, followed by one point e; at e (an
*answer position*) the model must produce where the segment's permutations send e, applied in turn:
e -> pi_1(e) -> pi_2(pi_1(e)) -> ..., i.e. (pi_{D+1} o ... o pi_1)(e), a ball moved by every shuffle.
Since e comes last, the model must carry the whole composed permutation (one of |G| states), not one
ball; after the query the next segment composes from the identity again. Each permutation is one token in
one-line notation: ``201`` sends 0 to 2, 1 to 0 and 2 to 1. The group is a knob:

* ``S3`` (the 6 permutations of 3 points) and ``A4`` (the 12 even permutations of 4 points) are solvable:
  their word problem is in TC0, so Merrill et al.'s bound does not rule out fixed-depth attention or
  state-space models (whether they *learn* it is what the task measures);
* ``S5`` (the 120 permutations of 5 points) is not solvable: its word problem is NC1-complete (Barrington
  1989), so no fixed-depth Transformer or diagonal state-space model tracks it at every length (Merrill et
  al., unless TC0 = NC1), while an RNN with a nonlinear state update can, and so can, in principle,
  non-diagonal linear recurrences such as DeltaNet with beta in [0, 2] and several layers (Grazzi et al.).

Distance ``D`` is the length over which the state is tracked: a segment's first permutation sits D + 1
positions before its query point, with D tokens strictly between them. Layout (L = K (D + 2) + 1)::

    <bos> | pi_1 ... pi_{D+1} e | pi_1 ... pi_{D+1} e | ...   answer at each e: (pi_{D+1} o ... o pi_1)(e)

Worked example (``PermutationComposition(distance=2, group="S3", segments=2)``, decoded with
``task.vocab.decode`` from ``task.sample(1, 2, torch.Generator().manual_seed(0))``)::

    <bos> 102 120 210 1 012 021 120 1                            -> 1 at the first query, 0 at the second

First segment: the ball starts at 1 (the query point, last); ``102`` sends it to 0, ``120`` sends 0 to 1
and ``210`` leaves 1 where it is: 1. Second: from 1, ``012`` (the identity) keeps it at 1, ``021`` sends
it to 2 and ``120`` sends 2 to 0: 0. Chance level is 1 / n (the composed permutation is uniform on G, a
transitive group, so the ball's end is uniform on the n points).

Where the point sits is a knob, ``point``: ``last`` (the default, above) asks for the whole composed
permutation to be carried (|G| states: 6 for S3, 120 for S5) because the point is named only after the
shuffles; ``first`` names the ball before its shuffles and asks for it at a query mark ``=`` after them,
so the model need only carry where the ball is (n states), the "who holds the ball after the passes" form.
Both are the group's word problem for S5 (the group acts faithfully on the points, so recognising where
the ball ends is NC1-complete too), but ``first`` is far easier to learn: the state is 5 points, and each
shuffle a map of 5 points to learn, not a 120 x 120 product table. Layout with ``point=first``
(L = K (D + 3) + 1; D still counts the tokens strictly between the first permutation and the query)::

    <bos> | e pi_1 ... pi_{D+1} = | e pi_1 ... pi_{D+1} = | ...   answer at each =: where e ends

The worked example above, drawn with ``point="first"``, decodes as ``<bos> 1 102 120 210 = 1 012 021 120 =``
with the same answers, 1 and 0 (the same shuffles and balls, each ball named before its shuffles).

Controls: the group is not commutative, so the order-free control (``model=bag``) cannot know the
composed permutation; its accuracy is what the multiset of shuffles (mixed over the segments) says about
the ball. Sample space: (|G|^(D+1) n)^K samples; parameters that allow fewer than 2**12 are refused
(with one segment: S3 needs D >= 4, A4 D >= 2, S5 D >= 1; with the default 8 segments any D passes).
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch

from longrange.datasets.base import MIN_SAMPLE_BITS, SyntheticTask, TaskBatch, Vocabulary, check_int

SPECIALS = ("<pad>", "<bos>")


def _even(perm: tuple[int, ...]) -> bool:
    """Whether a permutation (one-line notation) is even: its number of inversions is even."""
    return sum(a > b for a, b in itertools.combinations(perm, 2)) % 2 == 0


# group name -> its permutations in one-line notation (perm[i] is the image of point i), identity first
GROUPS: dict[str, list[tuple[int, ...]]] = {
    "S3": list(itertools.permutations(range(3))),
    "A4": [p for p in itertools.permutations(range(4)) if _even(p)],
    "S5": list(itertools.permutations(range(5))),
}


class PermutationComposition(SyntheticTask):
    """At each query point e, produce its image under the composition of its segment's permutations.

    Args:
        distance: D, tokens strictly between a segment's first permutation and its query point (a segment
            holds D + 1 permutations); an int or a list.
        eval_distance: distances for validation/test (default: ``distance``); set it beyond the training
            distances to measure length extrapolation.
        group: the group the permutations are drawn from (uniformly): "S3" and "A4" (solvable) or "S5"
            (not solvable); chance level is 1 / (number of points: 3, 4 or 5).
        segments: K (1..1024), segments per sample, each ended by its query point: K answers per sample.
        point: where the query point sits: "last" (after the shuffles: carry the composed permutation) or
            "first" (before them, the answer asked at a closing "=": carry only where the ball is).
    """

    def __init__(
        self,
        distance: int | list[int] = 16,
        eval_distance: int | list[int] | None = None,
        group: Literal["S3", "A4", "S5"] = "S3",
        segments: int = 8,
        point: Literal["last", "first"] = "last",
    ) -> None:
        super().__init__(distance, eval_distance)
        self.segments = check_int("data.segments", segments, 1, 1024)
        if group not in GROUPS:
            raise ValueError(f"data.group={group!r}; allowed: {', '.join(GROUPS)}")
        self.group = group
        if point not in ("last", "first"):
            raise ValueError(f"data.point={point!r}; allowed: last, first")
        self.point = point
        perms = GROUPS[group]
        self.num_points = len(perms[0])
        points = [str(i) for i in range(self.num_points)]
        words = ["".join(map(str, p)) for p in perms]
        self.vocab = Vocabulary(SPECIALS + (("=",) if point == "first" else ()), points, words)
        self.point_ids, self.perm_ids = self.vocab.ids(points), self.vocab.ids(words)
        self.table = torch.tensor(perms)  # (|G|, n): table[g, i] = image of point i under permutation g
        smallest = min(self.train_distances + self.eval_distances)
        bits = segments * ((smallest + 1) * math.log2(len(perms)) + math.log2(self.num_points))
        self.check_sample_space(
            2.0 ** min(bits, 1000),  # (|G|^(D+1) n)^K samples; a float: capped, never an overflow
            f"data.distance={smallest} with data.group={group} and data.segments={segments}",
            f"raise data.distance (>= {self.min_distance} here) or data.segments",
        )

    @property
    def min_distance(self) -> int:
        """The shortest distance whose sample space, (|G|^(D+1) n)^K, passes the check."""
        bits = MIN_SAMPLE_BITS / self.segments - math.log2(self.num_points)
        return max(0, math.ceil(bits / math.log2(len(self.table)) - 1e-9) - 1)

    @property
    def chance_level(self) -> float:
        return 1.0 / self.num_points

    def seq_len(self, distance: int) -> int:
        return self.segments * self._segment_len(distance) + 1

    def _segment_len(self, distance: int) -> int:
        """D + 1 permutations and the point, and the "=" where the point comes first."""
        return distance + (3 if self.point == "first" else 2)

    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        B, K, D = batch_size, self.segments, distance
        perms = torch.randint(0, len(self.table), (B, K, D + 1), generator=generator)  # (B, K, D + 1)
        start = torch.randint(0, self.num_points, (B, K), generator=generator)  # (B, K) query points e
        ball = start
        for t in range(D + 1):  # the balls' positions after each permutation: D + 1 gathers of (B, K)
            ball = self.table[perms[:, :, t], ball]
        S = self._segment_len(D)
        parts = [self.perm_ids[perms], self.point_ids[start, None]]  # (B, K, D + 1), (B, K, 1)
        if self.point == "first":  # e pi_1 ... pi_{D+1} =
            parts = [parts[1], parts[0], torch.full((B, K, 1), self.vocab.index["="])]
        segments = torch.cat(parts, dim=2).view(B, K * S)
        tokens = torch.cat([torch.full((B, 1), self.vocab.index["<bos>"]), segments], dim=1)  # (B, L)
        position = S * torch.arange(1, K + 1).expand(B, K)  # (B, K): the query points, or the "=" marks
        return TaskBatch.with_answers(tokens, position, self.point_ids[ball], D)

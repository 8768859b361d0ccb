"""Multi-query associative recall (MQAR): "k3 v7 ... k9 v1 ... k3" -> "v7", for every pair at once.

Zoology's benchmark (Arora, Eyuboglu et al. 2023) with an exact distance. A sample lists N key-value pairs,
then queries every key again; at each query position (the repeated key) the model must produce the value
that followed that key. Keys and values come from disjoint halves of ``vocab_size`` symbols, all keys of a
sample are distinct (so each query has exactly one correct answer) and so are its values; every other
position holds the filler ``.``.

Distance ``D`` is the exact number of tokens strictly between a pair's value and the query of its key, the
same for all N queries of a sample (zoology's "gap between a key-value pair and its query", there drawn
from a power law, here the knob). The pairs sit in a region of ``2N + spacing`` tokens, ``spacing``
filler tokens spread at random between them (0: back to back, zoology's layout), so where the pairs and
the queries sit varies from sample to sample. Every query comes after the whole region, which bounds the
distance from below: ``D >= 2N + spacing - 2``. The exact distance has two consequences worth knowing: the
queries come in the order of their pairs, and with a single training distance every answer sits exactly
D + 1 tokens back, so a model may answer by position instead of by key (attention trained at D = 16 scored
1.0 there and 0.11, 0.09, 0.02 at D = 14, 24, 32). Train on several distances (``distance: [16, 24, 32]``)
to require the associative lookup itself. Layout (L = 2N + spacing + D + 2)::

    <bos> | k v . k v k v . . | . . k . k . k . .      each query at (its pair's value position) + D + 1
    0       pairs and spacing   queries among filler

Worked example (``MQAR(distance=8, num_pairs=3, vocab_size=16, spacing=2)``, decoded with
``task.vocab.decode`` from ``task.sample(1, 8, torch.Generator().manual_seed(0))``)::

    <bos> k2 v4 k3 v5 . . k4 v6 . . k2 . k3 . . . k4        queries k2 -> v4, k3 -> v5, k4 -> v6

``v4`` sits at position 2 and its query ``k2`` at 11: 8 tokens lie between them, as for the other pairs.

That is ``layout: ordered`` (the default). ``layout: random`` is zoology's: the same keys, values and pair
region (keys and values distinct, drawn without replacement as zoology draws them; zoology has no spacing),
but the N queries sit at random distinct positions of the D + 1 tokens after the pair region, in random
order, so each query has its own distance. ``D`` keeps the sequence length (L above) and becomes the
longest distance: query i lies at most D tokens after its value, at distance 0 .. D (uniform over all such
placements; zoology draws its gaps from a power law instead). Answers at their exact distances would give
the metrics distances nobody configured (``val/acc`` counts only answers at a training distance, and
``acc/d=...`` gets one entry per distance seen), so each answer's distance is binned up to the next
configured distance (training or evaluation) at or below the batch's D: with ``distance: [16, 24, 32]``,
``acc/d=24`` is the accuracy over the queries at distances 17 .. 24, from batches at D = 24 and D = 32.
With one distance every answer reads D ("at most D"). The same task in the random layout::

    <bos> k2 v4 k3 v5 . . k4 v6 k2 . . . k3 . k4 . .        queries k2 -> v4, k3 -> v5, k4 -> v6

at exact distances 6, 8 and 6 (``distances`` reads 8, 8, 8: the only configured distance); seed 0 happened to
keep the pair order. With ``distance=[8, 12, 16]``, ``task.sample(1, 16, torch.Generator().manual_seed(0))``::

    <bos> k2 v4 k3 v5 . . k4 v6 . . . . k4 . . k3 k2 . . . . . . . .

queries k4, k3, k2 at exact distances 4, 11 and 14, binned to 8, 12 and 16. The diagnostics (attention
mass on the source, memory probe, gradient flow) need each answer's exact source position, so a run in the
random layout skips them (``exact_distances`` is false).

**Constant density** (``pairs_every``, with ``num_pairs: null``): the number of pairs grows with the
distance, N = max(1, D // pairs_every) at each distance D, so a longer gap also means more to hold, the
way a longer text holds more facts. ``MQAR(distance=[16, 32], num_pairs=None, pairs_every=8,
vocab_size=32, spacing=0)``: a sample at D = 16 holds 2 pairs, at D = 32 4 pairs (``task.sample(1, D,
torch.Generator().manual_seed(0))``, decoded)::

    <bos> k12 v11 k2 v2 . . . . . . . . . . . . . . k12 . k2                    D = 16, L = 22
    <bos> k12 v11 k2 v2 k3 v12 k13 v3 . . . (21 more) . . k12 . k2 . k3 . k13    D = 32, L = 42

``experiment=density`` sweeps D = 16, 32, 64 with one pair every 4 tokens (4, 8, 16 pairs). The
sequence length is 2N + spacing + D + 2 with N the pairs at that D.

Chance level is 2 / vocab_size (a uniform guess among the values); a model that only learned to answer with
some value of the sample scores 1 / num_pairs. Zoology's headline, which ``experiment=zoo_sweep`` with
``data.num_pairs=4,2`` measures at a small scale: attention solves MQAR at every number of pairs, a
recurrent model needs its state to grow with the number of pairs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from longrange.datasets.base import SyntheticTask, TaskBatch, Vocabulary, check_int, distinct

SPECIALS = ("<pad>", "<bos>")
FILLER = "."
LAYOUTS = ("ordered", "random")


class MQAR(SyntheticTask):
    """Recall the value of every key at its query, each query exactly D tokens after the pair's value.

    Args:
        distance: D, tokens strictly between a value and the query of its key; an int or a list
            (D >= 2 * num_pairs + spacing - 2: all queries follow the pairs).
        eval_distance: distances for validation/test (default: ``distance``).
        num_pairs: N, key-value pairs per sample, all queried (1 .. vocab_size / 2); None with
            ``pairs_every``.
        vocab_size: key and value symbols together, an even number: the first half are keys, the second
            half values (zoology's convention); chance level is 2 / vocab_size.
        spacing: filler tokens spread at random between the pairs (0: the pairs back to back).
        layout: where the queries go. ``ordered``: in pair order, each exactly D tokens after its value.
            ``random`` (zoology's): at random positions after the pairs, in random order, each query at its
            own distance of at most D, recorded in ``TaskBatch.distances`` binned up to the next configured
            distance (see the module docstring).
        pairs_every: constant density instead of a fixed N: at distance D a sample holds
            max(1, D // pairs_every) pairs (needs ``num_pairs=None``).
    """

    def __init__(
        self,
        distance: int | list[int] = 32,
        eval_distance: int | list[int] | None = None,
        num_pairs: int | None = 8,
        vocab_size: int = 128,
        spacing: int = 8,
        layout: str = "ordered",
        pairs_every: int | None = None,
    ) -> None:
        super().__init__(distance, eval_distance)
        self.vocab_size = check_int("data.vocab_size", vocab_size, 4, 16384)
        if vocab_size % 2:
            raise ValueError(
                f"data.vocab_size={vocab_size} is odd; allowed: an even integer in [4, 16384] "
                "(half keys, half values)"
            )
        self.num_symbols = vocab_size // 2  # keys, and as many values
        if (num_pairs is None) == (pairs_every is None):
            raise ValueError(
                f"data.num_pairs={num_pairs} with data.pairs_every={pairs_every}: set exactly one "
                "(a fixed number of pairs, or data.num_pairs=null with one pair every "
                "data.pairs_every tokens)"
            )
        self.pairs_every = (
            None if pairs_every is None else check_int("data.pairs_every", pairs_every, 1, 1 << 20)
        )
        self.num_pairs = (
            None if num_pairs is None else check_int("data.num_pairs", num_pairs, 1, self.num_symbols)
        )
        self.spacing = check_int("data.spacing", spacing, 0, 4096)
        if layout not in LAYOUTS:
            raise ValueError(f"data.layout={layout!r} is not a layout; allowed: {', '.join(LAYOUTS)}")
        self.layout = layout
        self.exact_distances = layout == "ordered"  # the diagnostics skip binned distances
        # The random layout's answers are binned up to these (every distance a batch may be drawn at).
        self.distance_bins = tuple(sorted(set(self.train_distances + self.eval_distances)))
        keys = [f"k{i}" for i in range(self.num_symbols)]
        values = [f"v{i}" for i in range(self.num_symbols)]
        self.vocab = Vocabulary(SPECIALS, [FILLER], keys, values)
        self.key_ids, self.value_ids = self.vocab.ids(keys), self.vocab.ids(values)
        for d in self.distance_bins:
            n = self.pairs(d)
            if n > self.num_symbols:
                raise ValueError(
                    f"data.distance={d} with data.pairs_every={pairs_every} asks for {n} pairs; allowed: at "
                    f"most {self.num_symbols} (vocab_size / 2): raise data.pairs_every or data.vocab_size"
                )
            if d < 2 * n + spacing - 2 and pairs_every is not None:  # N grows with D: not the remedy
                raise ValueError(
                    f"data.distance={d} holds {n} pairs at data.pairs_every={pairs_every}, more than fit "
                    f"before the queries with data.spacing={spacing} (D >= 2 N + spacing - 2); allowed: "
                    "data.pairs_every >= 2 with data.spacing <= 2, or a larger data.pairs_every, or a "
                    "smaller data.spacing"
                )
            if d < 2 * n + spacing - 2:
                raise ValueError(
                    f"data.distance={d} is too short for data.num_pairs={num_pairs} and "
                    f"data.spacing={spacing}: allowed distances are >= {2 * n + spacing - 2} "
                    "(2 * num_pairs + spacing - 2: every query comes after the last pair)"
                )
        if layout == "random" and pairs_every is not None and len(self.distance_bins) > 1:
            raise ValueError(
                f"data.layout=random with data.pairs_every={pairs_every} and several distances "
                f"{list(self.distance_bins)}: the random layout bins each answer down to a shorter "
                "configured distance, which would mix samples holding different numbers of pairs; allowed: "
                "data.layout=ordered, or a single data.distance"
            )
        # Distinct samples: ordered distinct keys, ordered distinct values, and where the spacing goes; the
        # random layout multiplies them by the placements of its queries, at least perm(D + 2 - N - S, N)
        # at distance D (see _random_queries: c_i - i >= i + 3 + D - 2N - S choices for query i); checked at
        # every distance (with a fixed N the shortest binds).
        for d in self.distance_bins:
            n = self.pairs(d)
            count = math.perm(self.num_symbols, n) ** 2 * math.comb(n + spacing, n)
            if layout == "random":
                count *= math.perm(d + 2 - n - spacing, n)
            self.check_sample_space(
                count,
                f"data.vocab_size={vocab_size} with {n} pairs at data.distance={d} and "
                f"data.spacing={spacing}",
                "raise data.vocab_size or " + ("data.pairs_every" if pairs_every else "data.num_pairs"),
            )

    def pairs(self, distance: int) -> int:
        """N, the pairs a sample at this distance holds: ``num_pairs``, or one per ``pairs_every`` tokens."""
        if self.num_pairs is not None:
            return self.num_pairs
        assert self.pairs_every is not None
        return max(1, distance // self.pairs_every)

    @property
    def chance_level(self) -> float:
        return 1.0 / self.num_symbols

    def seq_len(self, distance: int) -> int:
        return 2 * self.pairs(distance) + self.spacing + distance + 2

    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        B, N, S, D = batch_size, self.pairs(distance), self.spacing, distance
        L = self.seq_len(D)

        # N distinct keys and N distinct values per sample: the first N of a random permutation.
        keys = distinct(B, N, self.num_symbols, generator)
        values = distinct(B, N, self.num_symbols, generator)
        keys, values = self.key_ids[keys], self.value_ids[values]  # (B, N) ids

        # Pair i starts at 1 + offset_i + 2i with sorted offsets in [0, S]: S filler tokens spread among them.
        offsets = torch.randint(0, S + 1, (B, N), generator=generator).sort(dim=1).values
        key_position = 1 + offsets + 2 * torch.arange(N)  # (B, N)
        value_position = key_position + 1
        if self.layout == "ordered":
            query_position = value_position + D + 1  # > 2N + S: after the pair region
        else:
            query_position = self._random_queries(value_position, D, generator)

        tokens = torch.full((B, L), self.vocab.index[FILLER], dtype=torch.long)
        tokens[:, 0] = self.vocab.index["<bos>"]
        tokens.scatter_(1, key_position, keys)
        tokens.scatter_(1, value_position, values)
        tokens.scatter_(1, query_position, keys)

        if self.layout == "ordered":
            return TaskBatch.with_answers(tokens, query_position, values, D)
        # Each answer's own distance, binned up to the next configured distance (or D itself).
        bins = torch.tensor(sorted({d for d in self.distance_bins if d < D} | {D}))
        exact = query_position - value_position - 1  # (B, N) in [0, D]
        return TaskBatch.with_answers(tokens, query_position, values, bins[torch.bucketize(exact, bins)])

    def _random_queries(self, value_position: Tensor, distance: int, generator: torch.Generator) -> Tensor:
        """(B, N) query positions of the random layout: distinct, after the pair region, the query of pair
        i at most ``distance`` tokens after its value; uniform over all such placements.

        The query region holds slots 0 .. D (positions 2N + S + 1 + slot); pair i may use slots below
        c_i = value_i + D + 1 - 2N - S. These sets grow with i, so drawing pair 0's slot first, then pair
        1's among the remaining ones, and so on, offers c_i - i >= 1 choices at every step whatever came
        before: each placement has the same probability, the product of 1 / (c_i - i)."""
        B, N = value_position.shape
        start = 2 * N + self.spacing + 1  # first position after the pair region
        slots = torch.arange(distance + 1)  # (D + 1,)
        limit = value_position + distance + 1 - start + 1  # (B, N) c_i: slots < c_i are allowed
        taken = torch.zeros(B, distance + 1, dtype=torch.bool)
        chosen = torch.empty(B, N, dtype=torch.long)
        rows = torch.arange(B)
        for i in range(N):  # a uniform free slot among the allowed ones: the smallest random score
            scores = torch.rand(B, distance + 1, generator=generator)
            scores.masked_fill_(taken | (slots >= limit[:, i : i + 1]), 2.0)
            chosen[:, i] = scores.argmin(1)
            taken[rows, chosen[:, i]] = True
        return start + chosen

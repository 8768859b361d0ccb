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

Chance level is 2 / vocab_size (a uniform guess among the values); a model that only learned to answer with
some value of the sample scores 1 / num_pairs. Zoology's headline, which ``experiment=zoo_sweep`` with
``data.num_pairs=4,2`` measures at a small scale: attention solves MQAR at every number of pairs, a
recurrent model needs its state to grow with the number of pairs.
"""

from __future__ import annotations

import math

import torch

from longrange.datasets.base import SyntheticTask, TaskBatch, Vocabulary, check_int, distinct

SPECIALS = ("<pad>", "<bos>")
FILLER = "."


class MQAR(SyntheticTask):
    """Recall the value of every key at its query, each query exactly D tokens after the pair's value.

    Args:
        distance: D, tokens strictly between a value and the query of its key; an int or a list
            (D >= 2 * num_pairs + spacing - 2: all queries follow the pairs).
        eval_distance: distances for validation/test (default: ``distance``).
        num_pairs: N, key-value pairs per sample, all queried (1 .. vocab_size / 2).
        vocab_size: key and value symbols together, an even number: the first half are keys, the second
            half values (zoology's convention); chance level is 2 / vocab_size.
        spacing: filler tokens spread at random between the pairs (0: the pairs back to back).
    """

    def __init__(
        self,
        distance: int | list[int] = 32,
        eval_distance: int | list[int] | None = None,
        num_pairs: int = 8,
        vocab_size: int = 128,
        spacing: int = 8,
    ) -> None:
        super().__init__(distance, eval_distance)
        self.vocab_size = check_int("data.vocab_size", vocab_size, 4, 16384)
        if vocab_size % 2:
            raise ValueError(
                f"data.vocab_size={vocab_size} is odd; allowed: an even integer in [4, 16384] "
                "(half keys, half values)"
            )
        self.num_symbols = vocab_size // 2  # keys, and as many values
        self.num_pairs = check_int("data.num_pairs", num_pairs, 1, self.num_symbols)
        self.spacing = check_int("data.spacing", spacing, 0, 4096)
        keys = [f"k{i}" for i in range(self.num_symbols)]
        values = [f"v{i}" for i in range(self.num_symbols)]
        self.vocab = Vocabulary(SPECIALS, [FILLER], keys, values)
        self.key_ids, self.value_ids = self.vocab.ids(keys), self.vocab.ids(values)
        for d in self.train_distances + self.eval_distances:
            if d < self.min_distance:
                raise ValueError(
                    f"data.distance={d} is too short for data.num_pairs={num_pairs} and "
                    f"data.spacing={spacing}: allowed distances are >= {self.min_distance} "
                    "(2 * num_pairs + spacing - 2: every query comes after the last pair)"
                )
        # Distinct samples: ordered distinct keys, ordered distinct values, and where the spacing goes.
        self.check_sample_space(
            math.perm(self.num_symbols, num_pairs) ** 2 * math.comb(num_pairs + spacing, num_pairs),
            f"data.vocab_size={vocab_size} with data.num_pairs={num_pairs} and data.spacing={spacing}",
            "raise data.vocab_size or data.num_pairs",
        )

    @property
    def min_distance(self) -> int:
        return max(0, 2 * self.num_pairs + self.spacing - 2)

    @property
    def chance_level(self) -> float:
        return 1.0 / self.num_symbols

    def seq_len(self, distance: int) -> int:
        return 2 * self.num_pairs + self.spacing + distance + 2

    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        B, N, S, D = batch_size, self.num_pairs, self.spacing, distance
        L = self.seq_len(D)

        # N distinct keys and N distinct values per sample: the first N of a random permutation.
        keys = distinct(B, N, self.num_symbols, generator)
        values = distinct(B, N, self.num_symbols, generator)
        keys, values = self.key_ids[keys], self.value_ids[values]  # (B, N) ids

        # Pair i starts at 1 + offset_i + 2i with sorted offsets in [0, S]: S filler tokens spread among them.
        offsets = torch.randint(0, S + 1, (B, N), generator=generator).sort(dim=1).values
        key_position = 1 + offsets + 2 * torch.arange(N)  # (B, N)
        value_position = key_position + 1
        query_position = value_position + D + 1  # > 2N + S: after the pair region

        tokens = torch.full((B, L), self.vocab.index[FILLER], dtype=torch.long)
        tokens[:, 0] = self.vocab.index["<bos>"]
        tokens.scatter_(1, key_position, keys)
        tokens.scatter_(1, value_position, values)
        tokens.scatter_(1, query_position, keys)

        return TaskBatch.with_answers(tokens, query_position, values, D)

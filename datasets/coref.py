"""Coreference recall: "I watched a movie ... [filler] ... the" -> "movie".

The lecture's example made measurable. A sample introduces an antecedent noun through a relation
("i watched a movie"), continues with natural-language-like filler, and ends with a cue; at the cue's last
token (the *answer position*) the model must produce the antecedent noun.

Distance ``D`` is the exact number of tokens strictly between the antecedent noun and the answer position.
Load ``K`` places K distractor nouns in the filler, each bound to a different relation ("read a book"); the
cue then names the antecedent's relation ("i watched the"), so the answer stays unique. K=0 uses the bare
cue "the", the lecture's example. The antecedent clause starts after o ~ U{0..P} filler words (P =
``max_offset``), so its absolute position varies, and filler pads the sample after the answer position
to L = D + 6 + P tokens for every K and o::

    <bos> | o words | i REL a NOUN | D tokens: filler, K x "REL' a NOUN'", "i REL" if K>0 | the | P - o words
    0                 noun at o + 4                                 answer position o + D + 5, target NOUN

Worked example: the first training sample of ``CorefRecall(distance=12, load=1)`` with seed 0
(``task.generate("train", 1, 12, seed=0)``, decoded with ``task.vocab.decode``)::

    <bos> we walked slowly we laughed it was i watched a tent later that painted a pizza we laughed so
    we walked i watched the tired                                                   -> target: tent

Offset o = 7: the antecedent "tent" sits at position 11, the answer position ("the") at 24, and the 12
tokens between them hold filler, the distractor "painted a pizza" (bound to another relation, so only
"tent" answers "i watched the") and the cue's "i watched". The word after the answer pads the sample to
L = 12 + 6 + 8 = 26 and cannot influence the answer of a causal model.
Chance level is 1 / num_nouns.
"""

from __future__ import annotations

import math

import torch

from longrange.datasets.base import PhraseFiller, SyntheticTask, TaskBatch, Vocabulary, check_int, distinct

SPECIALS = ("<pad>", "<bos>")
CUE_WORDS = ("i", "a", "the")
RELATIONS = ("watched", "read", "ate", "bought", "painted", "visited", "cooked", "fixed")
NOUNS = (
    "movie", "book", "pizza", "guitar", "bicycle", "museum", "garden", "kite",
    "lamp", "sandwich", "novel", "concert", "castle", "boat", "camera", "piano",
    "poem", "soup", "cake", "bridge", "clock", "radio", "tent", "violin",
    "statue", "puzzle", "jacket", "lantern", "carpet", "mirror", "fountain", "tractor",
)  # fmt: skip
FILLER_PHRASES = (
    "with my friend", "yesterday", "had dinner", "and then", "went home", "later that day",
    "we talked for hours", "it was late", "so we walked slowly", "after work", "on sunday morning",
    "my sister called", "it rained all day", "we laughed", "before noon", "that evening",
    "after lunch", "everyone was tired", "my neighbour waved", "then", "quietly", "for hours",
    "nobody said much", "it felt warm outside", "we stayed up late", "somebody sang",
)  # fmt: skip


class CorefRecall(SyntheticTask):
    """Recall the antecedent noun at a controlled distance, with K distractor nouns in between.

    Args:
        distance: D, tokens strictly between antecedent and answer position; an int or a list.
        eval_distance: distances for validation/test (default: ``distance``).
        load: K, distractor nouns in the filler (0 <= K < number of relations, and 3K + 2 <= D); the
            default 1 is the headline task's (the cue then names the relation, so remembering which nouns
            occurred is not enough); 0 is the lecture's bare cue "the".
        num_nouns: candidate answer nouns (2..32); chance level is 1 / num_nouns.
        max_offset: P, the antecedent clause starts after a random number of filler words, 0..P (uniform
            per sample; the sample is padded with filler after the answer position to a common length).
            Without it the antecedent would always sit at position 4, and attention could find it by
            absolute position alone. 0 gives a fixed layout.

    Parameters that allow fewer than 2**12 distinct samples (e.g. distance 1 without an offset: a noun, a
    relation and one filler word) are refused: the disjoint hash splits need a larger sample space.
    """

    def __init__(
        self,
        distance: int | list[int] = 32,
        eval_distance: int | list[int] | None = None,
        load: int = 1,
        num_nouns: int = 32,
        max_offset: int = 8,
    ) -> None:
        super().__init__(distance, eval_distance)
        self.load = check_int("data.load", load, 0, len(RELATIONS) - 1)
        self.max_offset = check_int("data.max_offset", max_offset, 0)
        self.num_nouns = check_int("data.num_nouns", num_nouns, max(2, load + 1), len(NOUNS))
        filler_words = dict.fromkeys(w for phrase in FILLER_PHRASES for w in phrase.split())
        self.vocab = Vocabulary(SPECIALS, CUE_WORDS, RELATIONS, NOUNS[:num_nouns], filler_words)
        self.noun_ids, self.relation_ids = self.vocab.ids(NOUNS[:num_nouns]), self.vocab.ids(RELATIONS)
        self.filler = PhraseFiller(self.vocab, FILLER_PHRASES)
        self.i_a_the = self.vocab.ids(["i", "a", "the"])  # the sentence's fixed words (sample)
        smallest = min(self.train_distances + self.eval_distances)
        if smallest < self.min_distance:
            key = "data.distance" if smallest in self.train_distances else "data.eval_distance"
            raise ValueError(
                f"{key} contains {smallest}, too short for data.load={load}: allowed distances are >= "
                f"{self.min_distance} (3 tokens per distractor + the cue 'i REL')"
            )
        # Distinct samples, a lower bound: the antecedent's and the distractors' nouns and relations, the
        # filler between them when the distractors come last, and the o + (P - o) filler words around.
        middle = smallest - (3 * load + 2 if load else 0)
        around = sum(self.filler.count(o) * self.filler.count(max_offset - o) for o in range(max_offset + 1))
        count = math.perm(num_nouns, load + 1) * math.perm(len(RELATIONS), load + 1)
        self.check_sample_space(
            count * self.filler.count(middle) * around,
            f"data.distance={smallest} with data.num_nouns={num_nouns} and data.max_offset={max_offset}",
            "raise data.distance, data.max_offset or data.num_nouns",
        )

    @property
    def min_distance(self) -> int:
        return 0 if self.load == 0 else 3 * self.load + 2

    @property
    def chance_level(self) -> float:
        return 1.0 / self.num_nouns

    def seq_len(self, distance: int) -> int:
        return distance + 6 + self.max_offset

    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        B, K, D, P = batch_size, self.load, distance, self.max_offset
        L = self.seq_len(D)
        v = self.vocab.index

        # K + 1 distinct relations and nouns per sample: column 0 the antecedent's, then the distractors'.
        relation = self.relation_ids.take(distinct(B, K + 1, len(RELATIONS), generator))  # (B, K + 1)
        noun = self.noun_ids.take(distinct(B, K + 1, self.num_nouns, generator))  # (B, K + 1)

        # Where the antecedent noun and the answer position go: after o ~ U{0..P} filler words.
        antecedent = torch.randint(4, 4 + P + 1, (B, 1), generator=generator)  # (B, 1) column 4 + o
        answer = antecedent + (D + 1)  # (B, 1) column: D tokens strictly between

        # Filler everywhere, then the sentence written over it in one scatter_ (a value at a column of each
        # row; a handful of tensor operations in all: at short lengths each costs as much as the data).
        # Columns relative to the antecedent noun: "i REL a NOUN" at -3..0 and "the" at D + 1.
        tokens = self.filler(B, L, generator)  # (B, L)
        tokens[:, 0] = v["<bos>"]
        layout = [-2, 0, -3, -1, D + 1]  # REL, NOUN, then the fixed words i, a, the
        values = [relation[:, :1], noun[:, :1], self.i_a_the.expand(B, 3)]
        if K > 0:  # K "REL a NOUN" at sorted random offsets among the D - 2 tokens before "i REL the"
            i, a = self.i_a_the[:1], self.i_a_the[1:2]
            offsets = torch.randint(0, D - 2 - 3 * K + 1, (B, K), generator=generator).sort(1).values
            starts = offsets + 3 * torch.arange(K)  # (B, K) after the antecedent, non-overlapping
            layout += [D - 1, D]  # the cue's "i REL" before "the"
            values += [i.expand(B, 1), relation[:, :1], relation[:, 1:], a.expand(B, K), noun[:, 1:]]
            columns = torch.cat([torch.tensor(layout).expand(B, -1), starts + 1, starts + 2, starts + 3], 1)
        else:
            columns = torch.tensor(layout)
        tokens.scatter_(1, antecedent + columns, torch.cat(values, 1))

        return TaskBatch.with_answers(tokens, answer, noun[:, :1], D)

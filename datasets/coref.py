"""Coreference recall: "I watched a movie ... [filler] ... the" -> "movie".

The lecture's example made measurable. A sample introduces an antecedent noun through a relation
("i watched a movie"), continues with natural-language-like filler, and ends with a cue; at the cue's last
token (the *answer position*) the model must produce the antecedent noun.

Distance ``D`` is the exact number of tokens strictly between the antecedent noun and the answer position.
Load ``K`` places K distractor nouns in the filler, each bound to a different relation ("read a book"); the
cue then names the antecedent's relation ("i watched the"), so the answer stays unique. K=0 uses the bare
cue "the", the lecture's example. Layout (L = D + 6 for every K)::

    <bos> i REL a NOUN | filler with K x "REL' a NOUN'" | cue           answer position = last token
    0     1 2   3 4      5 ...                                          L-1, target NOUN
    cue = "the" (K=0) or "i REL the" (K>0);  D = (L-1) - 4 - 1

Worked example (``CorefRecall(distance=12, load=1)``, seed 0; decoded with ``task.vocab.decode``)::

    <bos> i fixed a kite then everyone was bought a lamp tired we i fixed the  -> kite

Here the antecedent "kite" sits at position 4, the answer position at 17: 12 tokens lie between them.
The distractor "bought a lamp" is bound to another relation, so only "kite" answers "i fixed the".
Chance level is 1 / num_nouns.
"""

from __future__ import annotations

import torch
from longrange.datasets.base import IGNORE, SyntheticTask, TaskBatch, Vocabulary, check_int
from torch import Tensor

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
        load: K, distractor nouns in the filler (0 <= K < number of relations, and 3K + 2 <= D).
        num_nouns: candidate answer nouns (2..32); chance level is 1 / num_nouns.
    """

    def __init__(
        self,
        distance: int | list[int] = 32,
        eval_distance: int | list[int] | None = None,
        load: int = 0,
        num_nouns: int = 32,
    ) -> None:
        super().__init__(distance, eval_distance)
        self.load = check_int("data.load", load, 0, len(RELATIONS) - 1)
        self.num_nouns = check_int("data.num_nouns", num_nouns, 2, len(NOUNS))
        filler_words = dict.fromkeys(w for phrase in FILLER_PHRASES for w in phrase.split())
        filler_words = [w for w in filler_words if w not in CUE_WORDS]
        self.vocab = Vocabulary(SPECIALS, CUE_WORDS, RELATIONS, NOUNS[:num_nouns], filler_words)
        self.noun_ids = self.vocab.ids(NOUNS[:num_nouns])
        self.relation_ids = self.vocab.ids(RELATIONS)
        # Filler phrases as one flat id tensor plus start offsets and lengths (for vectorised gathers).
        phrases = [self.vocab.ids(p.split()) for p in FILLER_PHRASES]
        self.phrase_tokens = torch.cat(phrases)
        self.phrase_len = torch.tensor([len(p) for p in phrases])
        self.phrase_start = torch.cumsum(self.phrase_len, 0) - self.phrase_len
        smallest = self.min_distance
        for d in self.train_distances + self.eval_distances:
            if d < smallest:
                raise ValueError(
                    f"data.distance={d} is too short for data.load={load}: "
                    f"allowed distances are >= {smallest} (3 tokens per distractor + the cue 'i REL')"
                )

    @property
    def min_distance(self) -> int:
        return 0 if self.load == 0 else 3 * self.load + 2

    @property
    def chance_level(self) -> float:
        return 1.0 / self.num_nouns

    def seq_len(self, distance: int) -> int:
        return distance + 6

    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        B, K, D = batch_size, self.load, distance
        cue_len = 1 if K == 0 else 3
        middle = D - cue_len + 1  # filler tokens (distractors included) between the noun and the cue
        L = D + 6
        v = self.vocab.index

        # Antecedent and distractors: K+1 distinct relations and K+1 distinct nouns per sample.
        relations = torch.rand(B, len(RELATIONS), generator=generator).argsort(dim=1)[:, : K + 1]
        nouns = torch.rand(B, self.num_nouns, generator=generator).argsort(dim=1)[:, : K + 1]
        relations, nouns = self.relation_ids[relations], self.noun_ids[nouns]  # (B, K+1); column 0 = answer

        tokens = torch.empty(B, L, dtype=torch.long)
        tokens[:, 0], tokens[:, 1], tokens[:, 3] = v["<bos>"], v["i"], v["a"]
        tokens[:, 2], tokens[:, 4] = relations[:, 0], nouns[:, 0]
        tokens[:, 5 : 5 + middle] = self._filler(B, middle, generator)  # (B, middle)

        if K > 0:  # K non-overlapping "REL a NOUN" slots: sorted offsets in [0, middle - 3K], spaced by 3
            offsets = torch.randint(0, middle - 3 * K + 1, (B, K), generator=generator).sort(dim=1).values
            starts = 5 + offsets + 3 * torch.arange(K)  # (B, K)
            tokens.scatter_(1, starts, relations[:, 1:])
            tokens.scatter_(1, starts + 1, torch.full((B, K), v["a"]))
            tokens.scatter_(1, starts + 2, nouns[:, 1:])
            tokens[:, L - 3], tokens[:, L - 2] = v["i"], relations[:, 0]
        tokens[:, L - 1] = v["the"]

        targets = torch.full((B, L), IGNORE, dtype=torch.long)
        distances = torch.full((B, L), IGNORE, dtype=torch.long)
        targets[:, L - 1], distances[:, L - 1] = nouns[:, 0], D
        return TaskBatch(tokens, targets, distances)

    def _filler(self, batch_size: int, length: int, generator: torch.Generator) -> Tensor:
        """(B, length) ids: random filler phrases concatenated, the last one cut at ``length``."""
        if length <= 0:
            return torch.empty(batch_size, 0, dtype=torch.long)
        num_phrases = length // int(self.phrase_len.min()) + 1
        phrases = torch.randint(0, len(self.phrase_len), (batch_size, num_phrases), generator=generator)
        ends = torch.cumsum(self.phrase_len[phrases], dim=1)  # (B, P) end offset of each phrase
        position = torch.arange(length).expand(batch_size, length).contiguous()  # (B, length)
        which = torch.searchsorted(ends, position, right=True)  # phrase index holding each position
        phrase = phrases.gather(1, which)
        within = position - (ends.gather(1, which) - self.phrase_len[phrase])
        return self.phrase_tokens[self.phrase_start[phrase] + within]

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

With ``max_offset`` P > 0 (default 8) each sample additionally gets o ~ U{0..P} filler words right
after ``<bos>`` and P - o after the answer position, so the antecedent's absolute position varies
(L = D + 6 + P); the distance D is unchanged.

Worked example: the first training sample of ``CorefRecall(distance=12, load=1)`` with seed 0
(``task.generate("train", 1, 12, seed=0)``, decoded with ``task.vocab.decode``)::

    <bos> warm outside went home before noon i cooked a book it fixed a jacket before noon after lunch
    after lunch i cooked the it felt                                                 -> target: book

Offset o = 6: the antecedent "book" sits at position 10, the answer position ("the") at 23, and the 12
tokens between them hold filler, the distractor "fixed a jacket" (bound to another relation, so only
"book" answers "i cooked the") and the cue's "i cooked". The two words after the answer pad the sample
to L = 12 + 6 + 8 = 26 and cannot influence the answer of a causal model.
Chance level is 1 / num_nouns.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from longrange.datasets.base import IGNORE, SyntheticTask, TaskBatch, Vocabulary, check_int

SPECIALS = ("<pad>", "<bos>")
PHRASES_PER_UNIT = 3  # filler phrases drawn at once (see CorefRecall._with_filler)
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
        max_offset: the antecedent clause starts after a random number of filler words, 0..max_offset
            (uniform per sample; the sample is padded with filler after the answer position to a common
            length). Without it the antecedent would always sit at position 4, and attention could find
            it by absolute position alone. 0 gives the fixed layout above.
    """

    def __init__(
        self,
        distance: int | list[int] = 32,
        eval_distance: int | list[int] | None = None,
        load: int = 0,
        num_nouns: int = 32,
        max_offset: int = 8,
    ) -> None:
        super().__init__(distance, eval_distance)
        self.load = check_int("data.load", load, 0, len(RELATIONS) - 1)
        self.max_offset = check_int("data.max_offset", max_offset, 0)
        self.num_nouns = check_int("data.num_nouns", num_nouns, max(2, self.load + 1), len(NOUNS))
        filler_words = dict.fromkeys(w for phrase in FILLER_PHRASES for w in phrase.split())
        filler_words = [w for w in filler_words if w not in CUE_WORDS]
        self.vocab = Vocabulary(SPECIALS, CUE_WORDS, RELATIONS, NOUNS[:num_nouns], filler_words)
        self.noun_ids = self.vocab.ids(NOUNS[:num_nouns])
        self.relation_ids = self.vocab.ids(RELATIONS)
        # Nouns and relations are consecutive ids: a uniform draw is one randint from the first id on.
        self._first_noun, self._first_relation = int(self.noun_ids[0]), int(self.relation_ids[0])
        assert torch.equal(self.noun_ids, torch.arange(self._first_noun, self._first_noun + num_nouns))
        assert torch.equal(self.relation_ids, torch.arange(self._first_relation, self._first_relation + 8))
        self._build_filler_table([self.vocab.ids(p.split()) for p in FILLER_PHRASES])
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
        return distance + 6 + self.max_offset

    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        B, K, D = batch_size, self.load, distance
        cue_len = 1 if K == 0 else 3
        middle = D - cue_len + 1  # filler tokens (distractors included) between the noun and the cue
        L = D + 6
        v = self.vocab.index

        # Antecedent and distractors: K+1 distinct relations and K+1 distinct nouns per sample.
        relations = self._distinct(B, K + 1, self._first_relation, len(RELATIONS), generator)
        nouns = self._distinct(B, K + 1, self._first_noun, self.num_nouns, generator)  # column 0 = answer

        tokens = self._filled(B, L, middle, generator)  # <bos> i <pad> a <pad> filler ...
        tokens[:, 2], tokens[:, 4] = relations[:, 0], nouns[:, 0]

        if K > 0:  # K non-overlapping "REL a NOUN" slots: sorted offsets in [0, middle - 3K], spaced by 3
            offsets = torch.randint(0, middle - 3 * K + 1, (B, K), generator=generator).sort(dim=1).values
            starts = 5 + offsets + 3 * torch.arange(K)  # (B, K)
            tokens.scatter_(1, starts, relations[:, 1:])
            tokens.scatter_(1, starts + 1, torch.full((B, K), v["a"]))
            tokens.scatter_(1, starts + 2, nouns[:, 1:])
            tokens[:, L - 3], tokens[:, L - 2] = v["i"], relations[:, 0]
        tokens[:, L - 1] = v["the"]

        if self.max_offset == 0:
            targets = torch.full((B, L), IGNORE, dtype=torch.long)
            distances = torch.full((B, L), IGNORE, dtype=torch.long)
            targets[:, L - 1], distances[:, L - 1] = nouns[:, 0], D
            return TaskBatch(tokens, targets, distances)
        tokens, answer = self._offset(tokens, generator)  # answer: (B, 1) column of the answer position
        targets = torch.full(tokens.shape, IGNORE, dtype=torch.long).scatter_(1, answer, nouns[:, :1])
        distances = torch.full(tokens.shape, IGNORE, dtype=torch.long).scatter_(1, answer, D)
        return TaskBatch(tokens, targets, distances)

    def _offset(self, tokens: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Move everything after <bos> right by a random o in [0, max_offset] per sample; the o columns
        opened after <bos> and the max_offset - o columns after the answer get filler words.

        The P = max_offset extra words are a filler stream E of P words: the sample becomes <bos>, E[P-o:],
        the old sample after <bos>, E[:P-o]; that is a window starting at P - o of the row
        [<bos>, E, old sample after <bos>, E], so the whole batch is one gather.
        Returns the (B, L + P) tokens and the (B, 1) column of each answer position.
        """
        (B, L), P = tokens.shape, self.max_offset
        shift = torch.randint(0, P + 1, (B, 1), generator=generator)  # o
        extra = self._filled(B, 6 + P, P, generator)[:, 5 : 5 + P]  # (B, P): E
        source = torch.cat([tokens[:, :1], extra, tokens[:, 1:], extra], dim=1)  # (B, L + 2P)
        windows = source.unfold(1, L + P, 1)  # (B, P + 1, L + P) view: the windows starting at 0..P
        shifted = windows[torch.arange(B), P - shift.squeeze(1)]  # row b: window P - o, copied row-wise
        shifted[:, 0] = tokens[:, 0]  # <bos> (column 0 of the window is one before E[P-o])
        return shifted, shift.add_(L - 1)

    @staticmethod
    def _distinct(batch_size: int, count: int, first: int, n: int, generator: torch.Generator) -> Tensor:
        """(B, count) ids in [first, first + n), distinct within a row, in uniformly random order."""
        if count == 1:
            return torch.randint(first, first + n, (batch_size, 1), generator=generator)
        return torch.rand(batch_size, n, generator=generator).topk(count, dim=1).indices.add_(first)

    # --- filler: random phrases, concatenated and cut at the wanted length ----------------------------
    # The filler is a stream of independent, uniformly drawn phrases, drawn in *units* of
    # PHRASES_PER_UNIT consecutive phrases: a uniform unit is that many independent uniform phrases, so
    # the stream's distribution is the same, with a third of the draws and bookkeeping. The words of
    # every unit lie in one flat table, and a whole batch of samples is one gather from that table, at
    # indices built with one running sum (see ``_filled``): no Python per word, no variable-length copies.

    def _build_filler_table(self, phrases: list[Tensor]) -> None:
        phrase_len = torch.tensor([len(p) for p in phrases])
        phrase_first = phrase_len.cumsum(0) - phrase_len
        units = torch.cartesian_prod(*[torch.arange(len(phrases))] * PHRASES_PER_UNIT)  # (U, phrases)
        sequence = units.flatten()  # the phrases of all units, unit after unit
        lengths = phrase_len[sequence]
        within = torch.arange(int(lengths.sum())) - (lengths.cumsum(0) - lengths).repeat_interleave(lengths)
        unit_words = torch.cat(phrases)[phrase_first[sequence].repeat_interleave(lengths) + within]
        # Table: [0, <bos> i <pad> a <pad>] (read by columns 0-4), every unit's words, 3 spare entries
        # (the up to 3 columns after the filler read on past the last unit's words).
        header = self.vocab.ids(["<pad>", "<bos>", "i", "<pad>", "a", "<pad>"])
        self._table = torch.cat([header, unit_words, torch.zeros(3, dtype=torch.long)])
        unit_len = phrase_len[units].sum(1)
        self._unit_len = unit_len.int()
        self._unit_first = (len(header) + unit_len.cumsum(0) - unit_len).int()  # table index of word 0
        self._unit_last = self._unit_first + self._unit_len - 1  # table index of the last word
        self._min_unit_len = int(unit_len.min())
        self._unit_len_mean = unit_len.double().mean().item()
        self._unit_len_std = unit_len.double().std().item()

    def _units_needed(self, length: int) -> int:
        """Units per row that reach ``length`` words: surely, or in all but ~1e-7 of rows (5 std. dev.)."""
        mean, std = self._unit_len_mean, self._unit_len_std
        root = (5 * std + math.sqrt(25 * std**2 + 4 * mean * length)) / (2 * mean)  # P*mean - 5*std*sqrt(P)
        return max(1, min(math.ceil(root**2) + 1, -(-length // self._min_unit_len)))

    def _filled(self, batch_size: int, seq_len: int, length: int, generator: torch.Generator) -> Tensor:
        """(B, seq_len) ids: ``<bos> i <pad> a <pad>`` in columns 0-4, then ``length`` words of random
        filler phrases (the last one cut); any ids in the columns after, to be overwritten by the caller.

        All of it is one gather from the table at a running sum over the columns: +1 per column within
        the header and within a unit, and at each unit's first column (5 + its offset in the filler) a
        jump from the previous unit's last word (the header's last entry, 5, for the first unit).
        """
        units = torch.randint(
            0, len(self._unit_len), (batch_size, self._units_needed(length)), generator=generator
        )
        lengths = self._unit_len.take(units)  # (B, P) int32
        ends = lengths.cumsum(1, dtype=torch.long)
        if units.shape[1] * self._min_unit_len < length:  # unsure: append units to every row that fell short
            while int(ends[:, -1].min()) < length:
                more = torch.randint(0, len(self._unit_len), (batch_size, 4), generator=generator)
                units, lengths = (
                    torch.cat([units, more], 1),
                    torch.cat([lengths, self._unit_len.take(more)], 1),
                )
                ends = lengths.cumsum(1, dtype=torch.long)
        starts = ends.sub_(lengths)  # each unit's offset in the filler
        jumps = self._unit_first.take(units)  # (B, P) int32
        jumps[:, 1:].sub_(self._unit_last.take(units[:, :-1]))
        jumps[:, 0].sub_(5)
        jumps.masked_fill_(starts >= length, 1)  # units past the filler all land on its end column: +1
        index = torch.ones(batch_size, seq_len, dtype=torch.int32)
        index.scatter_(1, starts.clamp_(max=length).add_(5), jumps)
        return self._table.index_select(0, index.cumsum_(1).view(-1)).view(batch_size, seq_len)

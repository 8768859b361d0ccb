"""Pronoun coreference: "the big cat sat on a mat ... because it" -> "cat".

Several entities of different kinds, each with a property, are mentioned as "the ADJ NOUN" among
natural-language-like filler. The sample ends with a referring expression that picks out exactly one of
them, the *referent*; at its last token (the *answer position*) the model must produce the referent's noun:

* a pronoun, "because he / she / it / they": every noun has a pronoun class (man -> he, queen -> she,
  box -> it, children -> they);
* a definite description, "the ADJ": the property named in the referent's mention ("the red" -> box).

The K competing entities differ from the referent in both pronoun class and property, so either expression
has exactly one correct answer. The referent is not always the first entity: a random number of the
competitors is mentioned between it and the expression (uniform in 0..K, or in 0..(D - 1) // 3 when fewer
fit in the D - 1 tokens between the referent and the cue), the others before it.

Distance ``D`` is the exact number of tokens strictly between the referent's noun and the answer position.
Layout (L = D + 3K + 5; prefix and middle hold the competitors' mentions "the ADJ NOUN" among filler)::

    <bos> | prefix, 3K tokens | the ADJ NOUN | middle, D - 1 tokens | because PRONOUN  or  the ADJ
    0       1 .. 3K             referent noun at 3K + 3               answer position L - 1
    D = (L - 1) - (3K + 3) - 1 >= 1 (the cue's first word lies between)

Worked examples (``PronounCoref(distance=14, competitors=3)``, decoded with ``task.vocab.decode`` from
``task.sample(1, 14, torch.Generator().manual_seed(seed))``)::

    seed 0: <bos> sunday sat on a mat was tired said nothing the tall uncle the red horse mat slept the
            blue mother around then the big horse because he                          -> uncle
    seed 2: <bos> the red princess the red cats the small princess the old father sat on a mat then in a
            hurry felt warm sat on a the old                                           -> father

In the first the referent "uncle" sits at position 12 and the answer position ("he") at 27: 14 tokens lie
between them; "he" rules out the horses and the mother. In the second "the old" rules out the princesses
and the cats, all mentioned before the father. Chance level is 1 / 24 (a uniform guess among the nouns);
guessing among the K + 1 mentioned entities gives 1 / (K + 1).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from longrange.datasets.base import PhraseFiller, SyntheticTask, TaskBatch, Vocabulary, check_int

SPECIALS = ("<pad>", "<bos>")
CUE_WORDS = ("the", "because")
NOUNS_BY_PRONOUN = {
    "he": ("man", "boy", "king", "father", "uncle", "prince"),
    "she": ("woman", "girl", "queen", "mother", "aunt", "princess"),
    "it": ("cat", "dog", "horse", "box", "car", "lamp"),
    "they": ("children", "cats", "dogs", "boxes", "cars", "soldiers"),
}
PRONOUNS = tuple(NOUNS_BY_PRONOUN)
ADJECTIVES = ("red", "blue", "green", "old", "young", "big", "small", "tall")
FILLER_PHRASES = (
    "sat on a mat", "was tired", "looked around", "for a while", "and then", "walked home", "ran off",
    "came back", "stood still", "on sunday", "after lunch", "in a hurry", "said nothing", "felt warm",
    "waited", "slept", "later", "quietly", "smiled", "then",
)  # fmt: skip
CUES = ("pronoun", "description", "mixed")
MENTION = 3  # "the ADJ NOUN"


class PronounCoref(SyntheticTask):
    """Resolve a pronoun or a definite description to one of K + 1 entities, D tokens after the referent.

    Args:
        distance: D, tokens strictly between the referent's noun and the answer position; an int or a list
            (D >= 1: the cue's first word lies between).
        eval_distance: distances for validation/test (default: ``distance``).
        competitors: K, entities other than the referent (0..8), each of another pronoun class and with
            another property.
        cue: "pronoun" ("because it"), "description" ("the red") or "mixed" (either, at random per sample).
    """

    def __init__(
        self,
        distance: int | list[int] = 32,
        eval_distance: int | list[int] | None = None,
        competitors: int = 2,
        cue: Literal["pronoun", "description", "mixed"] = "mixed",
    ) -> None:
        super().__init__(distance, eval_distance)
        self.competitors = check_int("data.competitors", competitors, 0, 8)
        if cue not in CUES:
            raise ValueError(f"data.cue={cue!r}; allowed: {', '.join(CUES)}")
        self.cue = cue
        nouns = [noun for group in NOUNS_BY_PRONOUN.values() for noun in group]
        filler_words = dict.fromkeys(w for phrase in FILLER_PHRASES for w in phrase.split())
        self.vocab = Vocabulary(SPECIALS, CUE_WORDS, PRONOUNS, ADJECTIVES, nouns, filler_words)
        self.noun_ids = self.vocab.ids(nouns).view(len(PRONOUNS), -1)  # (classes, nouns per class)
        self.pronoun_ids, self.adjective_ids = self.vocab.ids(PRONOUNS), self.vocab.ids(ADJECTIVES)
        self.filler = PhraseFiller(self.vocab, FILLER_PHRASES)
        # Constant tables of ``sample`` (they depend on the parameters only): the cues by pronoun class
        # ("because he") and by adjective ("the red"), and the layout of the mentions.
        because, the = self.vocab.index["because"], self.vocab.index["the"]
        self.pronoun_cues = torch.stack([torch.full_like(self.pronoun_ids, because), self.pronoun_ids], 1)
        self.description_cues = torch.stack([torch.full_like(self.adjective_ids, the), self.adjective_ids], 1)
        self.the = torch.tensor([the])
        self.mention_columns = torch.arange(MENTION)  # "the ADJ NOUN" from a mention's first column
        self.slot = torch.arange(self.competitors)  # slot index within a region
        referent = 1 + MENTION * self.competitors  # the referent's mention: after <bos> and the prefix
        self.referent_column = torch.tensor([referent])
        # First column of slot j of each region if all earlier slots' mentions sit at offset 0: prefix from
        # column 1, middle right after the referent's mention.
        region_start = torch.tensor([[1], [referent + MENTION]])  # (2, 1)
        self.slot_columns = region_start + MENTION * self.slot  # (2, K)
        smallest = min(self.train_distances + self.eval_distances)
        if smallest < 1:
            raise ValueError(
                f"data.distance={smallest} is too short: allowed distances are >= 1 (the cue's first word "
                "lies between the referent and the answer position)"
            )
        # Distinct samples, a lower bound: the referent, the cue, the competitors (all before the referent)
        # and the D - 1 filler words after it.
        referent = len(ADJECTIVES) * len(nouns) * (2 if cue == "mixed" else 1)
        competitor = (len(ADJECTIVES) - 1) * (len(nouns) - self.noun_ids.shape[1])
        self.check_sample_space(
            referent * competitor**competitors * self.filler.count(smallest - 1),
            f"data.distance={smallest} with data.competitors={competitors}",
            "raise data.distance or data.competitors",
        )

    @property
    def chance_level(self) -> float:
        return 1.0 / self.noun_ids.numel()

    def seq_len(self, distance: int) -> int:
        return distance + MENTION * self.competitors + 5

    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        B, K, D = batch_size, self.competitors, distance
        L = self.seq_len(D)
        classes, per_class = self.noun_ids.shape
        adjectives = len(ADJECTIVES)

        # The referent (column 0), then 2K candidate competitors (K prefix slots, K middle slots; K of them
        # are used): each of another pronoun class and with another adjective than the referent.
        # (Few tensor operations on purpose: at short lengths each costs as much as the data it makes.)
        klass = torch.randint(0, classes, (B, 1), generator=generator)
        klass = torch.cat([klass, klass + torch.randint(1, classes, (B, 2 * K), generator=generator)], 1)
        klass %= classes  # (B, 1 + 2K)
        adjective = torch.randint(0, adjectives, (B, 1), generator=generator)
        shift = torch.randint(1, adjectives, (B, 2 * K), generator=generator)
        adjective = torch.cat([adjective, adjective + shift], 1)
        adjective %= adjectives  # (B, 1 + 2K)
        noun = torch.randint(0, per_class, (B, 1 + 2 * K), generator=generator)
        noun = self.noun_ids.take(noun.add_(klass, alpha=per_class))  # (B, 1 + 2K) word ids

        # Where the mentions go: `after` ~ U[0, min(K, what fits)] competitors in the middle, the rest before,
        # each region's mentions at sorted random offsets among its filler (`_starts`).
        after = torch.randint(0, min(K, (D - 1) // MENTION) + 1, (B, 1), generator=generator)
        starts = self._starts(after, D, generator)  # (B, 1 + 2K), 0 for the unused slots

        # Filler, then every mention "the ADJ NOUN" in one scatter_; the unused slots write to column 0,
        # which <bos> overwrites.
        tokens = self.filler(B, L, generator)  # (B, L)
        mentions = torch.stack([self.the.expand(B, 1 + 2 * K), self.adjective_ids.take(adjective), noun], 2)
        columns = starts[:, :, None] + self.mention_columns * (starts[:, :, None] > 0)  # (B, 1 + 2K, 3)
        tokens.scatter_(1, columns.view(B, -1), mentions.view(B, -1))
        tokens[:, 0] = self.vocab.index["<bos>"]

        # The cue: "because PRONOUN" or "the ADJ", the referent's own.
        pronoun_cue = self.pronoun_cues[klass[:, 0]]  # (B, 2)
        description_cue = self.description_cues[adjective[:, 0]]
        if self.cue == "mixed":
            pronoun = torch.rand(B, 1, generator=generator) < 0.5
            tokens[:, L - 2 :] = torch.where(pronoun, pronoun_cue, description_cue)
        else:
            tokens[:, L - 2 :] = pronoun_cue if self.cue == "pronoun" else description_cue

        return TaskBatch.with_answers(tokens, torch.full((B, 1), L - 1), noun[:, :1], D)

    def _starts(self, after: Tensor, distance: int, generator: torch.Generator) -> Tensor:
        """(B, 1 + 2K) first columns of the mentions: the referent's (fixed), then K prefix slots and K
        middle slots, of which the first K - after and the first ``after`` (B, 1) are used: sorted random
        offsets among each region's filler, spaced by a mention. Unused slots get 0."""
        B, K = len(after), self.competitors
        counts = torch.cat([K - after, after], 1)[:, :, None]  # (B, 2, 1) mentions in the prefix, middle
        lengths = torch.tensor([[MENTION * K], [distance - 1]])  # (2, 1) tokens of each region
        free = lengths - MENTION * counts  # (B, 2, 1) filler tokens around the mentions of each region
        used = self.slot < counts  # (B, 2, K): the first `counts` slots of each region
        offsets = (torch.rand(B, 2, K, generator=generator) * (free + 1)).long()  # uniform in [0, free]
        offsets = torch.where(used, offsets, free + 1).sort(dim=2).values  # used slots first, sorted
        starts = (offsets + self.slot_columns) * used  # (B, 2, K)
        return torch.cat([self.referent_column.expand(B, 1), starts.view(B, 2 * K)], 1)

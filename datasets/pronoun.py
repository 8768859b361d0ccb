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

import math
from typing import Literal

import torch
from torch import Tensor

from longrange.datasets.base import (
    IGNORE,
    MIN_SAMPLE_BITS,
    SyntheticTask,
    TaskBatch,
    Vocabulary,
    check_int,
)

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
        # Filler phrases as one flat id tensor plus start offsets and lengths (for vectorised gathers).
        phrases = [self.vocab.ids(p.split()) for p in FILLER_PHRASES]
        self.phrase_tokens = torch.cat(phrases)
        self.phrase_len = torch.tensor([len(p) for p in phrases])
        self.phrase_start = torch.cumsum(self.phrase_len, 0) - self.phrase_len
        smallest = min(self.train_distances + self.eval_distances)
        if smallest < 1:
            raise ValueError(
                f"data.distance={smallest} is too short: allowed distances are >= 1 (the cue's first word "
                "lies between the referent and the answer position)"
            )
        # Distinct samples, a lower bound: the referent, the cue, the competitors, and the D - 1 filler
        # tokens when made of one-word phrases only.
        single = sum(1 for p in FILLER_PHRASES if " " not in p)
        bits = math.log2(len(ADJECTIVES) * len(nouns) * (2 if cue == "mixed" else 1))
        bits += competitors * math.log2((len(ADJECTIVES) - 1) * (len(nouns) - self.noun_ids.shape[1]))
        bits += (smallest - 1) * math.log2(single)
        if bits < MIN_SAMPLE_BITS:
            raise ValueError(
                f"data.distance={smallest} with data.competitors={competitors} allows only about "
                f"2**{bits:.1f} distinct samples; allowed: >= 2**{MIN_SAMPLE_BITS} (the hash split into "
                "train/val/test needs a large sample space): raise data.distance or data.competitors"
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
        the = self.vocab.index["the"]

        # The referent, then 2K candidate competitors (K prefix slots, K middle slots; K of them are used):
        # each of another pronoun class and with another adjective than the referent.
        klass = torch.randint(0, classes, (B, 1), generator=generator)
        klass = torch.cat(
            [klass, (klass + torch.randint(1, classes, (B, 2 * K), generator=generator)) % classes], 1
        )
        adjective = torch.randint(0, len(ADJECTIVES), (B, 1), generator=generator)
        shift = torch.randint(1, len(ADJECTIVES), (B, 2 * K), generator=generator)
        adjective = torch.cat([adjective, (adjective + shift) % len(ADJECTIVES)], 1)  # (B, 1 + 2K)
        noun = self.noun_ids[klass, torch.randint(0, per_class, (B, 1 + 2 * K), generator=generator)]
        adjective = self.adjective_ids[adjective]

        # Where the mentions go: `after` ~ U[0, min(K, what fits)] competitors in the middle, the rest before.
        prefix_len, middle_len, referent = MENTION * K, D - 1, 1 + MENTION * K  # referent mention start
        after = torch.randint(0, min(K, middle_len // MENTION) + 1, (B, 1), generator=generator)
        slot = torch.arange(K).expand(B, K)
        starts = torch.cat(
            [
                self._starts(1, prefix_len, slot < K - after, generator),
                torch.full((B, 1), referent),
                self._starts(referent + MENTION, middle_len, slot < after, generator),
            ],
            dim=1,
        )  # (B, 1 + 2K) in the order prefix slots, referent, middle slots; unused slots write to <bos> at 0
        order = torch.cat(
            [torch.arange(1, K + 1), torch.zeros(1, dtype=torch.long), torch.arange(K + 1, 2 * K + 1)]
        )
        adjective, noun = adjective[:, order], noun[:, order]  # the same order as ``starts``

        tokens = self._filler(B, L, generator)  # (B, L)
        used = starts > 0
        tokens.scatter_(1, starts, torch.full_like(starts, the))
        tokens.scatter_(1, torch.where(used, starts + 1, 0), adjective)
        tokens.scatter_(1, torch.where(used, starts + 2, 0), noun)
        tokens[:, 0] = self.vocab.index["<bos>"]  # after the unused slots' writes

        # The cue: "because PRONOUN" or "the ADJ", the referent's own.
        if self.cue == "mixed":
            pronoun_cue = torch.rand(B, generator=generator) < 0.5
        else:
            pronoun_cue = torch.full((B,), self.cue == "pronoun")
        tokens[:, L - 2] = torch.where(pronoun_cue, self.vocab.index["because"], the)
        tokens[:, L - 1] = torch.where(pronoun_cue, self.pronoun_ids[klass[:, 0]], adjective[:, K])

        targets = torch.full((B, L), IGNORE, dtype=torch.long)
        distances = torch.full((B, L), IGNORE, dtype=torch.long)
        targets[:, L - 1], distances[:, L - 1] = noun[:, K], D
        return TaskBatch(tokens, targets, distances)

    def _starts(self, first: int, length: int, used: Tensor, generator: torch.Generator) -> Tensor:
        """(B, K) starts of non-overlapping mentions in ``[first, first + length)`` for the used slots (the
        first ones of each row): sorted random offsets, spaced by a mention. Unused slots get 0."""
        B, K = used.shape
        free = length - MENTION * used.sum(1, keepdim=True)  # (B, 1) filler tokens around the used mentions
        offsets = (torch.rand(B, K, generator=generator) * (free + 1)).long()  # uniform in [0, free]
        offsets = torch.where(used, offsets, free + 1).sort(dim=1).values  # used slots first, sorted
        return torch.where(used, first + offsets + MENTION * torch.arange(K), 0)

    def _filler(self, batch_size: int, length: int, generator: torch.Generator) -> Tensor:
        """(B, length) ids: random filler phrases concatenated, the last one cut at ``length``."""
        num_phrases = length // int(self.phrase_len.min()) + 1
        phrases = torch.randint(0, len(self.phrase_len), (batch_size, num_phrases), generator=generator)
        ends = torch.cumsum(self.phrase_len[phrases], dim=1)  # (B, P) end offset of each phrase
        position = torch.arange(length).expand(batch_size, length).contiguous()  # (B, length)
        which = torch.searchsorted(ends, position, right=True)  # phrase index holding each position
        phrase = phrases.gather(1, which)
        within = position - (ends.gather(1, which) - self.phrase_len[phrase])
        return self.phrase_tokens[self.phrase_start[phrase] + within]

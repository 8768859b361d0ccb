"""The coref generator as it was before the performance work (commit 02f9741), kept only as the
"before" side of the generator benchmark: per-position phrase lookup with ``searchsorted``, row
filtering by boolean masks and concatenation. Same task, same invariants, slower."""

from __future__ import annotations

import torch
from torch import Tensor

from longrange.datasets.base import (
    IGNORE,
    NUM_BUCKETS,
    SPLIT_BUCKETS,
    TaskBatch,
    sample_bucket,
    stream_seed,
)
from longrange.datasets.coref import FILLER_PHRASES, RELATIONS, CorefRecall


class OriginalCorefRecall(CorefRecall):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        phrases = [self.vocab.ids(p.split()) for p in FILLER_PHRASES]
        self.phrase_tokens = torch.cat(phrases)
        self.phrase_len = torch.tensor([len(p) for p in phrases])
        self.phrase_start = torch.cumsum(self.phrase_len, 0) - self.phrase_len

    def generate(self, split: str, batch_size: int, distance: int, seed: int, index: int = 0) -> TaskBatch:
        generator = torch.Generator().manual_seed(stream_seed(seed, f"{split}/d={distance}", index))
        keep_buckets = torch.tensor(SPLIT_BUCKETS[split])
        kept: list[TaskBatch] = []
        have = 0
        fraction = len(SPLIT_BUCKETS[split]) / NUM_BUCKETS
        while have < batch_size:
            draw = int((batch_size - have) / fraction * 1.2) + 8
            batch = self.sample(draw, distance, generator)
            mask = torch.isin(sample_bucket(batch.tokens), keep_buckets)
            kept.append(TaskBatch(*(t[mask] for t in batch)))
            have += int(mask.sum())
        return TaskBatch(*(torch.cat(parts)[:batch_size] for parts in zip(*kept, strict=True)))

    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        B, K, D = batch_size, self.load, distance
        cue_len = 1 if K == 0 else 3
        middle = D - cue_len + 1
        L = D + 6
        v = self.vocab.index
        relations = torch.rand(B, len(RELATIONS), generator=generator).argsort(dim=1)[:, : K + 1]
        nouns = torch.rand(B, self.num_nouns, generator=generator).argsort(dim=1)[:, : K + 1]
        relations, nouns = self.relation_ids[relations], self.noun_ids[nouns]
        tokens = torch.empty(B, L, dtype=torch.long)
        tokens[:, 0], tokens[:, 1], tokens[:, 3] = v["<bos>"], v["i"], v["a"]
        tokens[:, 2], tokens[:, 4] = relations[:, 0], nouns[:, 0]
        tokens[:, 5 : 5 + middle] = self._old_filler(B, middle, generator)
        if K > 0:
            offsets = torch.randint(0, middle - 3 * K + 1, (B, K), generator=generator).sort(dim=1).values
            starts = 5 + offsets + 3 * torch.arange(K)
            tokens.scatter_(1, starts, relations[:, 1:])
            tokens.scatter_(1, starts + 1, torch.full((B, K), v["a"]))
            tokens.scatter_(1, starts + 2, nouns[:, 1:])
            tokens[:, L - 3], tokens[:, L - 2] = v["i"], relations[:, 0]
        tokens[:, L - 1] = v["the"]
        targets = torch.full((B, L), IGNORE, dtype=torch.long)
        distances = torch.full((B, L), IGNORE, dtype=torch.long)
        targets[:, L - 1], distances[:, L - 1] = nouns[:, 0], D
        return TaskBatch(tokens, targets, distances)

    def _old_filler(self, batch_size: int, length: int, generator: torch.Generator) -> Tensor:
        if length <= 0:
            return torch.empty(batch_size, 0, dtype=torch.long)
        num_phrases = length // int(self.phrase_len.min()) + 1
        phrases = torch.randint(0, len(self.phrase_len), (batch_size, num_phrases), generator=generator)
        ends = torch.cumsum(self.phrase_len[phrases], dim=1)
        position = torch.arange(length).expand(batch_size, length).contiguous()
        which = torch.searchsorted(ends, position, right=True)
        phrase = phrases.gather(1, which)
        within = position - (ends.gather(1, which) - self.phrase_len[phrase])
        return self.phrase_tokens[self.phrase_start[phrase] + within]

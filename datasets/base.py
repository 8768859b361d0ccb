"""What every task shares: the vocabulary, the batch format, seeded streams, disjoint splits, filler text.

A task is a plain, torch-only generator. It implements ``sample(batch_size, distance, generator)``, which
returns a :class:`TaskBatch` whose every sample has exactly the requested distance, and its constructor
refuses parameters that allow too few distinct samples (``check_sample_space``). The base class turns
``sample`` into reproducible train / validation / test streams:

* every batch comes from its own ``torch.Generator`` seeded from ``(seed, split, distance, index)``, so a
  stream can be restarted at any batch (resume) and two runs with one seed see the same data; training
  batch ``step`` is batch ``step`` of the training stream;
* the splits are disjoint *by construction*: each sample's tokens are hashed, the hash picks one of
  ``NUM_BUCKETS`` buckets, validation keeps bucket 0, test bucket 1 and training the rest. A test sample
  can therefore never occur in a training stream, whatever the seed. ``generate`` draws a few more samples
  than it needs and keeps those of its split (rejection sampling); a sample space so small that a split
  gets (almost) none of its samples ends in a clear error instead of an endless loop.

Batch format (shared by every task and every model):
    tokens    (B, L) int64   input ids
    targets   (B, L) int64   the id to predict at answer positions, ``IGNORE`` elsewhere
    distances (B, L) int64   the distance of each answer position's dependency, ``IGNORE`` elsewhere
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple, overload

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

IGNORE = -100  # torch's cross-entropy ignore_index: positions that are not answers
NUM_BUCKETS = 16  # sample_bucket takes the top 4 bits of a hash
SPLIT_BUCKETS = {"val": (0,), "test": (1,), "train": tuple(range(2, NUM_BUCKETS))}
# A task whose parameters allow fewer than 2**MIN_SAMPLE_BITS distinct samples refuses them in its
# constructor (SyntheticTask.check_sample_space): every split's hash buckets must fill quickly.
MIN_SAMPLE_BITS = 12
_KEEP = {  # split -> (NUM_BUCKETS,) bool: the buckets the split keeps
    split: torch.isin(torch.arange(NUM_BUCKETS), torch.tensor(buckets))
    for split, buckets in SPLIT_BUCKETS.items()
}


class TaskBatch(NamedTuple):
    tokens: Tensor  # (B, L)
    targets: Tensor  # (B, L), IGNORE except at answer positions
    distances: Tensor  # (B, L), IGNORE except at answer positions

    @staticmethod
    def with_answers(tokens: Tensor, columns: Tensor, targets: Tensor, distance: int | Tensor) -> TaskBatch:
        """The batch of ``tokens`` (B, L) whose answer positions are ``columns`` (B, n), where the model
        must produce ``targets`` (B, n), each at ``distance`` from its source: one int for every answer, or
        a (B, n) tensor, each answer's own distance."""
        ignore = torch.full_like(tokens, IGNORE)
        distances = ignore.scatter(1, columns, distance if isinstance(distance, int) else distance.to(ignore))
        return TaskBatch(tokens, ignore.scatter(1, columns, targets), distances)


class Vocabulary:
    """An ordered list of words; ids are list positions. ``<pad>`` is always id 0."""

    def __init__(self, *word_groups: Iterable[str]) -> None:
        self.words: list[str] = []
        for group in word_groups:
            for word in group:
                if word in self.words:
                    raise ValueError(f"vocabulary word {word!r} appears twice")
                self.words.append(word)
        self.index = {word: i for i, word in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, words: Iterable[str]) -> Tensor:
        return torch.tensor([self.index[w] for w in words], dtype=torch.long)

    def encode(self, text: str) -> Tensor:
        """Words separated by spaces -> ids; an unknown word raises and lists the allowed words."""
        unknown = [w for w in text.split() if w not in self.index]
        if unknown:
            raise ValueError(f"unknown words {unknown}; allowed words: {' '.join(self.words[1:])}")
        return self.ids(text.split())

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        return " ".join(self.words[i] for i in torch.as_tensor(ids).tolist() if i != 0)


class PhraseFiller:
    """Natural-language-like filler: random phrases, drawn uniformly and independently, concatenated and
    cut at the wanted length. ``filler(B, n, generator)`` is a (B, n) tensor of word ids."""

    def __init__(self, vocab: Vocabulary, phrases: Sequence[str]) -> None:
        self.phrases = [phrase.split() for phrase in phrases]
        # (phrases, longest) word ids, each phrase padded with <pad> = 0 (no word of a phrase is <pad>)
        self.table = pad_sequence([vocab.ids(words) for words in self.phrases], batch_first=True)
        self.shortest = min(len(words) for words in self.phrases)

    def __call__(self, batch_size: int, length: int, generator: torch.Generator) -> Tensor:
        count = length // self.shortest + 1  # phrases per row: enough even if all are the shortest
        phrases = torch.randint(0, len(self.table), (batch_size, count), generator=generator)  # (B, count)
        words = self.table.index_select(0, phrases.view(-1)).view(batch_size, -1)  # (B, count * longest)
        real = words > 0  # (B, count * longest) not padding
        first = real & (real.cumsum(1) <= length)  # the first ``length`` words of each row
        return words.masked_select(first).view(batch_size, length)

    def count(self, length: int) -> float:
        """A lower bound of the distinct fillers of ``length`` words: the sequences of whole phrases of
        ``length`` words in all, made of one phrase per first word (different sequences then differ)."""
        by_first_word: dict[str, int] = {}
        for words in self.phrases:
            by_first_word[words[0]] = min(len(words), by_first_word.get(words[0], len(words)))
        ways = [1.0]  # ways[n]: such sequences of n words (a float: inf past 2**1024 is fine for a bound)
        for n in range(1, length + 1):
            ways.append(sum(ways[n - k] for k in by_first_word.values() if k <= n))
        return ways[length]


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """Raise a ValueError that names the parameter and its allowed range unless low <= value <= high."""
    allowed = f"an integer in [{low}, {'inf' if high is None else high}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is not an integer; allowed: {allowed}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name}={value} is out of range; allowed: {allowed}")
    return value


def distinct(batch_size: int, count: int, n: int, generator: torch.Generator) -> Tensor:
    """(B, count) indices in [0, n), distinct within a row, in random order: the first ``count`` of a
    random permutation of ``n`` per row, i.e. the positions of the ``count`` smallest of ``n`` random
    numbers (topk: sorting all ``n`` is slower); one index is simply a uniform one (cheaper still)."""
    if count == 1:
        return torch.randint(0, n, (batch_size, 1), generator=generator)
    return torch.rand(batch_size, n, generator=generator).topk(count, dim=1, largest=False).indices


@overload
def as_distances(name: str, value: int | Sequence[int]) -> tuple[int, ...]: ...
@overload
def as_distances(name: str, value: int | Sequence[int] | None) -> tuple[int, ...] | None: ...
def as_distances(name: str, value: int | Sequence[int] | None) -> tuple[int, ...] | None:
    """``64`` or ``[4, 8, 16]`` -> a sorted tuple of distinct non-negative integers."""
    if value is None:
        return None
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if not values:
        raise ValueError(f"{name} is empty; allowed: an integer >= 0 or a list of them")
    return tuple(sorted({check_int(name, v, 0) for v in values}))


def stream_seed(seed: int, stream: str, index: int) -> int:
    """A 63-bit seed for batch ``index`` of ``stream``: independent streams, restartable at any index."""
    digest = hashlib.blake2b(f"{seed}/{stream}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _hash_weights(length: int, seed: int = 12345) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-(2**62), 2**62, (length,), generator=g, dtype=torch.long)


_HASH_WEIGHTS = _hash_weights(1 << 16)


def sample_bucket(tokens: Tensor) -> Tensor:
    """(B, L) -> (B,) bucket in [0, NUM_BUCKETS): a hash of the whole token sequence (int64 wrap-around)."""
    length = tokens.shape[1]
    weights = _HASH_WEIGHTS[:length] if length <= len(_HASH_WEIGHTS) else _hash_weights(length, length)
    h = tokens @ weights  # (B,) linear hash, wraps modulo 2**64 (exact in any summation order)
    return ((h * 0x5851F42D4C957F2D) >> 60) & 15  # multiply-shift: the top 4 bits pick one of 16 buckets


def _draw_size(wanted: int, fraction: float) -> int:
    """Samples to draw so that ``wanted`` of them land in a split keeping ``fraction`` of all samples, in
    about 98% of draws (two standard deviations; a short draw is topped up by another, smaller one)."""
    return math.ceil((wanted + 2 * math.sqrt(wanted * (1 - fraction))) / fraction)


class SyntheticTask:
    """Base class of every task. Subclasses set ``vocab`` and implement ``sample``, ``seq_len`` and
    ``chance_level``.

    Args:
        distance: the training distance(s): one integer or a list; each training batch draws one of them.
        eval_distance: distances evaluated in validation and test (default: the training distances);
            set it wider than ``distance`` to measure length extrapolation.
    """

    vocab: Vocabulary
    exact_distances = True  # every answer's source sits exactly its recorded distance before it (the
    # diagnostics' attention mass and memory probe need it; MQAR's random layout records binned distances)

    def __init__(self, distance: int | list[int] = 32, eval_distance: int | list[int] | None = None) -> None:
        self.train_distances = as_distances("data.distance", distance)
        self.eval_distances = as_distances("data.eval_distance", eval_distance) or self.train_distances

    # --- what a task implements (and calls) ----------------------------------------------------------
    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        """``batch_size`` independent samples at ``distance``, drawn with ``generator`` only."""
        raise NotImplementedError

    def seq_len(self, distance: int) -> int:
        """Length of a sample at this distance."""
        raise NotImplementedError

    @property
    def chance_level(self) -> float:
        """Accuracy of a uniform guess among the possible answers."""
        raise NotImplementedError

    def check_sample_space(self, count: float, parameters: str, remedy: str) -> None:
        """For the constructor: refuse parameters that allow fewer than 2**MIN_SAMPLE_BITS distinct samples
        (``count``, a lower bound): a sample space that small cannot fill three disjoint hash splits."""
        if count < 2**MIN_SAMPLE_BITS:
            raise ValueError(
                f"{parameters} allows only about 2**{math.log2(max(count, 1)):.1f} distinct samples; "
                f"allowed: >= 2**{MIN_SAMPLE_BITS} (the hash split into train/val/test needs a large sample "
                f"space): {remedy}"
            )

    # --- shared machinery -------------------------------------------------------------------------
    @property
    def max_seq_len(self) -> int:
        return max(self.seq_len(d) for d in self.train_distances + self.eval_distances)

    def generate(self, split: str, batch_size: int, distance: int, seed: int, index: int = 0) -> TaskBatch:
        """Batch ``index`` of a split's stream: only samples whose hash bucket belongs to ``split``.

        Rejection sampling: draw a few more samples than needed, keep those of ``split`` (each kept sample
        stays an independent draw of the split's distribution), draw again in the rare case of too few.
        """
        generator = torch.Generator().manual_seed(stream_seed(seed, f"{split}/d={distance}", index))
        fraction = len(SPLIT_BUCKETS[split]) / NUM_BUCKETS
        parts, missing, drawn, budget = [], batch_size, 0, 1000 * _draw_size(batch_size, fraction)
        while missing:
            size = _draw_size(missing, fraction)
            drawn += size
            if drawn > budget:  # 1000x the expected need: the split gets (almost) no samples
                raise ValueError(
                    f"{type(self).__name__}: the {split!r} split at distance {distance} found only "
                    f"{batch_size - missing} of {batch_size} samples in {drawn - size} draws: the task's "
                    "sample space is too small for disjoint hash splits (lengthen the distance or enlarge "
                    "the vocabulary)"
                )
            batch = self.sample(size, distance, generator)
            rows = _KEEP[split][sample_bucket(batch.tokens)].nonzero().flatten()[:missing]
            parts.append(TaskBatch(*(t.index_select(0, rows) for t in batch)))
            missing -= len(rows)
        return parts[0] if len(parts) == 1 else TaskBatch(*map(torch.cat, zip(*parts, strict=True)))

    def train_batch(self, batch_size: int, seed: int, step: int) -> TaskBatch:
        """The training batch of optimiser step ``step``, at one of the training distances (drawn per step).

        A pure function of (seed, step, batch size), so a resumed run sees exactly the batches of an
        uninterrupted one."""
        pick = stream_seed(seed, "train/distance", step) % len(self.train_distances)
        return self.generate("train", batch_size, self.train_distances[pick], seed, step)

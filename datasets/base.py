"""What every task shares: the vocabulary, the batch format, seeded streams and disjoint splits.

A task is a plain, torch-only generator. It implements one method, ``sample(batch_size, distance,
generator)``, that returns a :class:`TaskBatch` whose every sample has exactly the requested distance.
The base class turns that into reproducible train / validation / test streams:

* every batch comes from its own ``torch.Generator`` seeded from ``(seed, split, index)``, so a stream can
  be restarted at any step (resume) and two runs with one seed see the same data (small training batches
  are generated a block of steps at a time, seeded by the block's first step: still a pure function of
  the seed and the step);
* the splits are disjoint *by construction*: each sample's tokens are hashed, the hash picks one of
  ``NUM_BUCKETS`` buckets, validation keeps bucket 0, test bucket 1 and training the rest. A test sample
  can therefore never occur in a training stream, whatever the seed or the size of the sample space
  (a sample space of a handful of samples may leave a split empty: generate() then raises).

``sample`` must return newly allocated tensors: ``generate`` may overwrite rows of another split in place.

Batch format (shared by every task and every model):
    tokens    (B, L) int64   input ids
    targets   (B, L) int64   the id to predict at answer positions, ``IGNORE`` elsewhere
    distances (B, L) int64   the distance of each answer position's dependency, ``IGNORE`` elsewhere
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

IGNORE = -100  # torch's cross-entropy ignore_index: positions that are not answers
NUM_BUCKETS = 16
# A task whose parameters allow fewer than 2**MIN_SAMPLE_BITS distinct samples refuses them in its
# constructor: every split's hash buckets must fill quickly (tasks check it with their own count).
MIN_SAMPLE_BITS = 12
SPLIT_BUCKETS = {"val": (0,), "test": (1,), "train": tuple(range(2, NUM_BUCKETS))}
_KEEP = {  # split -> (NUM_BUCKETS,) bool: the buckets the split keeps
    split: torch.isin(torch.arange(NUM_BUCKETS), torch.tensor(buckets))
    for split, buckets in SPLIT_BUCKETS.items()
}
_FRACTION = {split: len(buckets) / NUM_BUCKETS for split, buckets in SPLIT_BUCKETS.items()}
# Training batches of at least this many tokens are filtered in place (rows of another split overwritten)
# rather than copied out: fewer bytes moved for large batches, fewer tensor operations for small ones.
_IN_PLACE_MIN_TOKENS = 1 << 13
# Training batches of fewer tokens than this are generated several steps at a time (see train_batch).
_BLOCK_TOKENS, _MAX_BLOCK = 1 << 15, 16


class TaskBatch(NamedTuple):
    tokens: Tensor  # (B, L)
    targets: Tensor  # (B, L), IGNORE except at answer positions
    distances: Tensor  # (B, L), IGNORE except at answer positions


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


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """Raise a ValueError that names the parameter and its allowed range unless low <= value <= high."""
    allowed = f"an integer in [{low}, {'inf' if high is None else high}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is not an integer; allowed: {allowed}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name}={value} is out of range; allowed: {allowed}")
    return value


def as_distances(name: str, value: int | Sequence[int] | None) -> tuple[int, ...] | None:
    """``64`` or ``[4, 8, 16]`` -> a sorted tuple of distinct non-negative integers."""
    if value is None:
        return None
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if not values:
        raise ValueError(f"{name} is empty; allowed: an integer >= 0 or a list of them")
    return tuple(sorted({check_int(name, v, 0) for v in values}))


def stream_seed(seed: int, split: str, index: int) -> int:
    """A 63-bit seed for batch ``index`` of ``split``: independent streams, restartable at any index."""
    digest = hashlib.blake2b(f"{seed}/{split}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


_HASH_WEIGHTS = torch.randint(
    -(2**62), 2**62, (1 << 16,), generator=torch.Generator().manual_seed(12345), dtype=torch.long
)


def sample_bucket(tokens: Tensor) -> Tensor:
    """(B, L) -> (B,) bucket in [0, NUM_BUCKETS): a hash of the whole token sequence (int64 wrap-around)."""
    length = tokens.shape[1]
    weights = _HASH_WEIGHTS[:length] if length <= len(_HASH_WEIGHTS) else _long_weights(length)
    h = tokens @ weights + length  # linear hash, wraps modulo 2**64 (exact in any summation order)
    h ^= h >> 31  # mix the high bits down before taking a bucket
    h *= 0x5851F42D4C957F2D
    h ^= h >> 29
    return (h >> 40) & (NUM_BUCKETS - 1)


def _draw_size(wanted: int, fraction: float) -> int:
    """Samples to draw so that ``wanted`` of them land in a split keeping ``fraction`` of all samples, in
    about 98% of draws (two standard deviations; a short draw is topped up by another, smaller one)."""
    return math.ceil((wanted + 2 * math.sqrt(wanted * (1 - fraction))) / fraction)


class _DrawBudget:
    """Sizes of the extra draws of one generate() call, and an error instead of an endless loop when the
    split gets (almost) no samples: a sample space so small (e.g. distance 0 with 2 nouns: 16 distinct
    samples) that none of its samples hashes into the split's buckets."""

    def __init__(self, task: SyntheticTask, split: str, batch_size: int, distance: int) -> None:
        self.task, self.split, self.batch_size, self.distance = task, split, batch_size, distance
        self.fraction = _FRACTION[split]
        self.left = 1000 * _draw_size(batch_size, self.fraction)  # 1000x the expected need

    def draw(self, missing: int) -> int:
        size = _draw_size(missing, self.fraction)
        self.left -= size
        if self.left < 0:
            raise ValueError(
                f"{type(self.task).__name__}: the {self.split!r} split at distance {self.distance} found "
                f"only {self.batch_size - missing} of {self.batch_size} samples in "
                f"{1000 * _draw_size(self.batch_size, self.fraction)} draws: the task's sample space is too "
                "small for disjoint hash splits (lengthen the distance or enlarge the vocabulary)"
            )
        return size


def _owned(tensor: Tensor) -> Tensor:
    """``tensor`` itself if it owns contiguous memory, else a copy that does (safe to write rows into)."""
    return tensor if tensor._base is None and tensor.is_contiguous() else tensor.clone()


def _long_weights(length: int) -> Tensor:
    g = torch.Generator().manual_seed(length)
    return torch.randint(-(2**62), 2**62, (length,), generator=g, dtype=torch.long)


class SyntheticTask:
    """Base class of every task. Subclasses set ``vocab`` and implement ``sample`` and ``seq_len``.

    Args:
        distance: the training distance(s): one integer or a list; each training batch draws one of them.
        eval_distance: distances evaluated in validation and test (default: the training distances);
            set it wider than ``distance`` to measure length extrapolation.
    """

    vocab: Vocabulary

    def __init__(self, distance: int | list[int] = 32, eval_distance: int | list[int] | None = None) -> None:
        self.train_distances = as_distances("data.distance", distance)
        self.eval_distances = as_distances("data.eval_distance", eval_distance) or self.train_distances

    # --- what a task implements -------------------------------------------------------------------
    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        """``batch_size`` independent samples at ``distance``, drawn with ``generator`` only.

        Return newly allocated tensors: :meth:`generate` overwrites rows of another split in place
        (views and non-contiguous tensors are copied first, so a cached template is never modified)."""
        raise NotImplementedError

    def seq_len(self, distance: int) -> int:
        """Length of a sample at this distance."""
        raise NotImplementedError

    @property
    def chance_level(self) -> float:
        """Accuracy of a uniform guess among the possible answers."""
        raise NotImplementedError

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
        keep, fraction = _KEEP[split], _FRACTION[split]
        batch = self.sample(_draw_size(batch_size, fraction), distance, generator)
        kept = keep[sample_bucket(batch.tokens)]
        if fraction >= 0.5 and batch.tokens.numel() >= _IN_PLACE_MIN_TOKENS:
            return self._filter_in_place(batch, kept, batch_size, distance, generator, split)
        parts, missing, budget = [], batch_size, _DrawBudget(self, split, batch_size, distance)
        while True:
            rows = kept.nonzero().flatten()[:missing]
            parts.append(TaskBatch(*(t.index_select(0, rows) for t in batch)))
            missing -= len(rows)
            if not missing:
                return parts[0] if len(parts) == 1 else TaskBatch(*map(torch.cat, zip(*parts, strict=True)))
            batch = self.sample(budget.draw(missing), distance, generator)
            kept = keep[sample_bucket(batch.tokens)]

    def _filter_in_place(
        self,
        batch: TaskBatch,
        kept: Tensor,
        batch_size: int,
        distance: int,
        generator: torch.Generator,
        split: str,
    ) -> TaskBatch:
        """The first ``batch_size`` drawn samples, each one of another split overwritten by the next drawn
        sample of this split: a view of the draw, without copying the whole batch."""
        out = TaskBatch(*(_owned(t)[:batch_size] for t in batch))
        holes = (~kept[:batch_size]).nonzero().flatten()
        donors = kept[batch_size:].nonzero().flatten().add_(batch_size)
        budget = _DrawBudget(self, split, batch_size, distance)
        while True:
            filled = min(len(holes), len(donors))
            rows, donors = holes[:filled], donors[:filled]
            for target, source in zip(out, batch, strict=True):
                target.index_copy_(0, rows, source.index_select(0, donors))
            holes = holes[filled:]
            if not len(holes):
                return out
            batch = self.sample(budget.draw(len(holes)), distance, generator)
            donors = _KEEP[split][sample_bucket(batch.tokens)].nonzero().flatten()

    def train_batch(self, batch_size: int, seed: int, step: int) -> TaskBatch:
        """The training batch of optimiser step ``step``; its distance is drawn from the training set.

        A pure function of (seed, step, batch size), so a resumed run sees exactly the batches of an
        uninterrupted one. Small batches are cut from a block generated for up to ``_MAX_BLOCK``
        consecutive steps at once (the steps of a block that train at one distance share one
        ``generate`` call): a call's fixed cost, ~0.1 ms, would otherwise be a few percent of a short step.
        """
        distances = self.train_distances
        pick = _pick(seed, step, len(distances))
        distance = distances[pick]
        block = min(_MAX_BLOCK, max(1, _BLOCK_TOKENS // (batch_size * self.seq_len(distance))))
        if block == 1:
            return self.generate("train", batch_size, distance, seed, step)
        first = step - step % block
        key = (seed, batch_size, first)
        blocks = self.__dict__.setdefault("_train_blocks", {})  # distance -> (key, steps, batch)
        if distance not in blocks or blocks[distance][0] != key:
            steps = [s for s in range(first, first + block) if _pick(seed, s, len(distances)) == pick]
            batch = self.generate("train", len(steps) * batch_size, distance, seed, first)
            blocks[distance] = (key, steps, batch)
        _, steps, batch = blocks[distance]
        start = steps.index(step) * batch_size
        return TaskBatch(*(t[start : start + batch_size] for t in batch))


def _pick(seed: int, step: int, count: int) -> int:
    """Which of ``count`` training distances step ``step`` trains at."""
    return stream_seed(seed, "train/distance", step) % count

"""The one LightningDataModule: turns any task into a training stream and fixed evaluation sets."""

from __future__ import annotations

from collections.abc import Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from longrange.datasets.base import SyntheticTask, TaskBatch


class TrainStream(IterableDataset):
    """Endless fresh batches; batch ``step`` is a pure function of (seed, step), so resuming at
    ``start_step`` continues the exact stream an uninterrupted run would have seen."""

    def __init__(self, task: SyntheticTask, batch_size: int, seed: int, start_step: int = 0) -> None:
        self.task, self.batch_size, self.seed, self.start_step = task, batch_size, seed, start_step

    def __iter__(self) -> Iterator[TaskBatch]:
        step = self.start_step
        while True:
            yield self.task.train_batch(self.batch_size, self.seed, step)
            step += 1


class FixedBatches(Dataset):
    def __init__(self, batches: list[TaskBatch]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> TaskBatch:
        return self.batches[index]


# Evaluation samples are generated in blocks of at most this many tokens (and at most batch_size samples):
# generating a validation or test sample draws ~16 candidates (hash splits), ~1-2 KB per kept token.
EVAL_BLOCK_TOKENS = 2**18


def samples_within(tokens: int, length: int, most: int) -> int:
    """Samples of ``length`` tokens per piece so that samples x length <= ``tokens``: at least 1 (a sample
    is never cut), at most ``most``."""
    return max(1, min(most, tokens // max(length, 1)))


class TaskDataModule(pl.LightningDataModule):
    """Training stream plus validation and test sets of ``eval_samples`` samples per evaluated distance.

    Each evaluation batch holds one distance, so no sample is padded and per-distance accuracy is exact.
    Evaluation batches hold at most ``eval_tokens`` tokens (batch x length; one sample at the least), so
    a long evaluation distance makes more, smaller batches: it takes longer, not more memory, and a stop
    request (checked by Lightning between batches) is honoured within one short batch. The samples do
    not depend on ``eval_tokens``: they are generated in blocks of ``batch_size`` samples (fewer past
    :data:`EVAL_BLOCK_TOKENS` tokens), as they always were, and only the batches are cut.
    """

    def __init__(
        self,
        task: SyntheticTask,
        batch_size: int,
        eval_samples: int,
        seed: int,
        eval_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.task, self.batch_size, self.eval_samples, self.seed = task, batch_size, eval_samples, seed
        self.eval_tokens = eval_tokens
        self._eval: dict[str, FixedBatches] = {}
        self.generating = False  # True while an evaluation set is generated: a phase that writes nothing

    def eval_set(self, split: str) -> FixedBatches:
        """The split's fixed batches, generated on first use. At long distances generation takes minutes
        (a validation sample draws ~16 candidates); :attr:`generating` tells a stop request it may end the
        job at once then (the job's SIGTERM handler reads it)."""
        if split not in self._eval:
            self.generating = True
            try:
                self._eval[split] = self._generate(split)
            finally:
                self.generating = False
        return self._eval[split]

    def _generate(self, split: str) -> FixedBatches:
        batches = []
        for distance in self.task.eval_distances or ():
            length = self.task.seq_len(distance)
            block = samples_within(EVAL_BLOCK_TOKENS, length, self.batch_size)
            piece = samples_within(self.eval_tokens or block * length, length, block)
            for index, start in enumerate(range(0, self.eval_samples, block)):
                size = min(block, self.eval_samples - start)
                generated = self.task.generate(split, size, distance, self.seed, index)
                for cut in range(0, len(generated.tokens), piece):
                    batches.append(TaskBatch(*(t[cut : cut + piece] for t in generated)))
        return FixedBatches(batches)

    def train_dataloader(self) -> DataLoader:
        start = self.trainer.global_step if self.trainer is not None else 0
        return self._loader(TrainStream(self.task, self.batch_size, self.seed, start))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_set("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_set("test"))

    @staticmethod
    def _loader(dataset: Dataset | IterableDataset) -> DataLoader:
        # Batches come ready-made. An own generator keeps the loader from drawing on the global torch
        # RNG each time it starts, so a resumed run sees the same global random stream (dropout).
        return DataLoader(dataset, batch_size=None, generator=torch.Generator().manual_seed(0))

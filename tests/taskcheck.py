"""Helpers shared by the task tests (test_tasks.py, test_coref.py, test_generator_properties.py): a task
from its conf/data/ file, where the answers are, and the checks every generated batch must pass."""

from __future__ import annotations

import torch
from helpers import compose_config
from hydra.utils import instantiate
from torch import Tensor

from longrange.datasets.base import IGNORE, SyntheticTask, TaskBatch


def task_from_config(data_name: str, **params: object) -> SyntheticTask:
    """The task of conf/data/``data_name``.yaml (its defaults list applied), with ``params`` changed."""
    return instantiate(compose_config([f"data={data_name}"]).data, **params)


def answer_positions(batch: TaskBatch) -> list[list[int]]:
    """Each sample's answer positions, in order."""
    return [row.nonzero().flatten().tolist() for row in batch.targets != IGNORE]


def single_answers(batch: TaskBatch) -> tuple[Tensor, Tensor]:
    """(B,) answer position and (B,) target of a task with exactly one answer per sample."""
    is_answer = batch.targets != IGNORE
    assert (is_answer.sum(1) == 1).all()
    position = is_answer.int().argmax(1)
    return position, batch.targets[torch.arange(len(position)), position]


def check_batch(task: SyntheticTask, batch: TaskBatch, distance: int, answers_per_sample: int) -> None:
    """Shapes, the one distance at every answer, targets only at answers, every sample starting with <bos>
    and every token a word of the vocabulary (never <pad>)."""
    B, L = batch.tokens.shape
    assert L == task.seq_len(distance) and batch.targets.shape == batch.distances.shape == (B, L)
    is_answer = batch.targets != IGNORE
    assert torch.equal(is_answer, batch.distances != IGNORE)
    assert (is_answer.sum(1) == answers_per_sample).all()
    assert (batch.distances[is_answer] == distance).all()
    assert batch.tokens.min() >= 1 and batch.tokens.max() < len(task.vocab)
    assert (batch.tokens[:, 0] == task.vocab.index["<bos>"]).all()

"""Longest job first: the order in which a sweep's jobs start, from an estimate of what each one costs.

Hydra's basic sweeper starts the grid in the order of its axes (the last one fastest), so a long job late
in the grid runs alone at the end while the other workers idle. The project's sweeper
(``conf/hydra/sweeper/longest_first.yaml``, the default of every multirun) expands the same grid with the
basic sweeper's own code and starts its jobs by decreasing :func:`job_cost`, so that the parallel
workers finish together: the sweep's wall time approaches its floor (the sum of the job times over the
workers, or the longest job).

:func:`job_cost` needs no table per model: it times the model's own training step (forward and backward
of the shared LightningModule) at two lengths on one thread, at the job's batch size (a recurrent
model's step is mostly per-step overhead at a small batch: timed at batch 8, the RNN's per-token cost came
out 5x its cost at the jobs' 64, and its jobs started before longer ones), once per model config and batch
size in the launcher (:func:`seconds_per_token`, a fraction of a second per model), and multiplies by the
tokens the job processes: ``trainer.max_steps`` x ``train.batch_size`` x the training length, plus its
evaluations (every ``trainer.val_check_interval`` steps and the test, at each evaluated distance; a
forward pass counted as a third of a training step). The estimate only orders jobs; progress lines and
the sweep's closing line report the measured times.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from longrange.experiments.run.config import instantiate, plain
from longrange.experiments.run.footprint import answer_batch, in_the_launcher, untrained
from longrange.experiments.sweep.grid import composed

LENGTHS = (64, 256)  # timed lengths: per-token time is fitted linear in L (attention's grows with L)
FORWARD_SHARE = 1 / 3  # an evaluation forward pass against a training step's forward and backward


@dataclass(frozen=True)
class Rate:
    """Seconds per token of a training step at length L: ``base + slope * L`` (fitted at two lengths)."""

    base: float
    slope: float

    def __call__(self, length: int) -> float:
        return max(self.base + self.slope * length, 1e-12)


def seconds_per_token(model: dict, vocab_size: int, batch_size: int) -> Rate:
    """The model's measured training-step time per token at two lengths, on one thread, at the job's
    batch size; cached per model config, measured ``in_the_launcher`` (the launcher's threads, random
    state and environment kept)."""
    with in_the_launcher():
        return _timed(json.dumps(model, sort_keys=True, default=str), vocab_size, batch_size)


@lru_cache(maxsize=64)
def _timed(model_json: str, vocab_size: int, batch_size: int) -> Rate:
    module, generator = untrained(model_json, vocab_size), torch.Generator().manual_seed(0)
    top = module.backbone.max_len or LENGTHS[-1]
    lengths = [min(length, top) for length in LENGTHS]
    per_token = []
    for length in lengths:
        batch = answer_batch(batch_size, length, vocab_size, generator)
        times = []
        for _ in range(2 if length == lengths[0] else 1):  # one warm-up step, then one timed per length
            start = time.perf_counter()
            logits, answers, _ = module.answer_logits(batch)
            F.cross_entropy(logits, answers).backward()
            module.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        per_token.append(times[-1] / (batch_size * length))
    if lengths[0] == lengths[1]:
        return Rate(per_token[0], 0.0)
    slope = max((per_token[1] - per_token[0]) / (lengths[1] - lengths[0]), 0.0)
    return Rate(per_token[0] - slope * lengths[0], slope)


def job_cost(cfg: DictConfig) -> float:
    """Estimated seconds of one job (a composed config without its hydra node), for ordering jobs."""
    task = instantiate(cfg.data)
    steps, batch = int(cfg.trainer.max_steps), int(cfg.train.batch_size)
    rate = seconds_per_token(plain(cfg.model), len(task.vocab.words), batch)
    train_lengths = [task.seq_len(d) for d in task.train_distances]
    length = sum(train_lengths) / len(train_lengths)
    cost = steps * batch * length * rate(int(length))
    every = cfg.trainer.get("val_check_interval") or steps
    evaluations = steps // max(int(every), 1) + 1  # validations, and the test
    for distance in task.eval_distances:
        n = task.seq_len(distance)
        cost += evaluations * int(cfg.train.eval_samples) * n * rate(n) * FORWARD_SHARE
    return cost


def longest_first(jobs: list[list[str]], costs: list[float]) -> list[list[str]]:
    """The jobs by decreasing cost; equal costs keep the grid's order."""
    order = sorted(range(len(jobs)), key=lambda i: -costs[i])
    return [jobs[i] for i in order]


def estimates(config_name: str, jobs: list[list[str]]) -> list[float]:
    """:func:`job_cost` of every job, each composed with Hydra's public compose API (inside the running
    app; the launch's check composed them already)."""
    return [job_cost(composed(config_name, job)) for job in jobs]

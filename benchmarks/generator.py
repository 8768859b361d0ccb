"""Item 1: the coref generator's tokens per second, and its share of a training step's time."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from functools import partial

import torch

from benchmarks.common import Section, alternate, median, ratios, seconds_per_call, si, spread
from benchmarks.reference import OriginalCorefRecall
from benchmarks.training import DEMO_DISTANCES, LARGE_DISTANCES, Trainee, model_names
from longrange.datasets.coref import CorefRecall

BATCH = 256
LENGTHS = (128, 1024, 8192)
TARGET = 50e6  # tokens per second


def generator_throughput(quick: bool) -> Section:
    section = Section("generator", "1. Generator throughput (coref, batch 256, 1 thread)")
    torch.set_num_threads(1)
    repeats, min_time = (2, 0.2) if quick else (5, 0.4)
    rows = []
    for length, load in [(L, 0) for L in LENGTHS] + [(1024, 3)]:
        distance = length - CorefRecall(load=load).seq_len(0)  # so that seq_len(distance) == length
        new, old = (
            CorefRecall(distance=distance, load=load),
            OriginalCorefRecall(distance=distance, load=load),
        )
        counter = itertools.count()

        def batch_seconds(task: CorefRecall, d: int = distance, counter: Iterator[int] = counter) -> float:
            return seconds_per_call(lambda: task.generate("train", BATCH, d, 0, next(counter)), min_time)

        found = alternate({"new": partial(batch_seconds, new), "old": partial(batch_seconds, old)}, repeats)
        tokens = BATCH * new.seq_len(distance)
        rate = [tokens / s for s in found["new"]]
        old_rate = [tokens / s for s in found["old"]]
        rows.append(
            [
                new.seq_len(distance),
                load,
                f"{si(median(rate))}/s",
                f"{si(max(rate))}/s",
                f"{si(median(old_rate))}/s",
                spread(ratios(found["old"], found["new"]), 1) + "x",
                "yes" if median(rate) >= TARGET else ("best repeat only" if max(rate) >= TARGET else "no"),
            ]
        )
    section.text(
        "`task.generate('train', 256, D, seed=0, index=i)` for fresh i, L = D + 6 (+ max_offset where the "
        "task has one). *before* = the generator of commit 02f9741 (benchmarks/reference.py), measured in "
        "alternation with the current one. Target: at least 50M tokens/s. *best* = the fastest repeat, the "
        "closest to an unloaded core."
    )
    section.table(
        ["L", "load K", "tokens/s (median)", "best", "before", "speed-up", ">= 50M/s"],
        rows,
    )
    return section


def generator_share(quick: bool) -> Section:
    """Generation time of one training batch over the time of a training step, per default model and size."""
    section = Section(
        "generator_share", "1b. Data generation as a share of a training step (batch 64, 1 thread)"
    )
    torch.set_num_threads(1)
    repeats, min_time = (2, 0.15) if quick else (3, 0.3)
    distances = sorted(set(DEMO_DISTANCES[:1] + DEMO_DISTANCES[-1:] + LARGE_DISTANCES[-1:]))
    rows, worst = [], 0.0
    for name in model_names():
        for distance in distances:
            trainee = Trainee(name, distance)
            counter = itertools.count()
            task = trainee.task

            def generate(task: CorefRecall = task, counter: Iterator[int] = counter) -> float:
                return seconds_per_call(lambda: task.train_batch(64, 0, next(counter)), min_time)

            def step(trainee: Trainee = trainee) -> float:
                return seconds_per_call(trainee.step, min_time, min_calls=2)

            found = alternate({"generate": generate, "step": step}, repeats)
            share = ratios(found["generate"], found["step"])
            worst = max(worst, median(share))
            rows.append(
                [
                    name,
                    task.seq_len(distance),
                    f"{median(found['generate']) * 1e6:.0f} us",
                    f"{median(found['step']) * 1e3:.1f} ms",
                    f"{100 * median(share):.2f}% ({100 * min(share):.2f}-{100 * max(share):.2f})",
                ]
            )
    section.text(
        "One `task.train_batch(64, seed, step)` against one training step (forward, backward, gradient "
        "clipping, AdamW) of the default model on a pre-generated batch, measured in alternation. "
        f"Target: below 2% at every default size (demo distances {DEMO_DISTANCES[0]}-{DEMO_DISTANCES[-1]}, "
        f"large preset to {LARGE_DISTANCES[-1]}). Worst median share: {100 * worst:.2f}%."
    )
    section.table(["model", "L", "generate", "train step", "share"], rows)
    return section

"""Item 1: what data generation costs, for every task in conf/data/: the time of one training batch, and
that time as a fraction of a training step of the default LSTM and attention models (target: below 2%)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from benchmarks.common import REPO, Section, alternate, median, ratios, seconds_per_call, si
from benchmarks.training import Trainee
from longrange.datasets.base import SyntheticTask

BATCH = 64
LENGTHS = (18, 32, 128, 512, 1024, 4096)  # 18: coref at distance 4
MODELS = ("lstm", "attention")
TARGET = 0.02  # of a training step
TASKS = sorted(p.stem for p in (REPO / "conf" / "data").glob("*.yaml"))


def task_at(name: str, length: int) -> SyntheticTask | None:
    """conf/data/NAME.yaml with its default parameters, at the distance that makes samples of ``length``
    tokens (every task's length is its distance plus a constant); None where that distance is refused."""
    with initialize_config_module("longrange.conf", version_base="1.3"):
        data = compose("config", overrides=[f"data={name}"]).data
    try:
        return instantiate(data, distance=length - instantiate(data, distance=64).seq_len(0))
    except Exception:  # too short for the task's defaults (e.g. MQAR below 2 * num_pairs + spacing - 2)
        return None


def generation(task: SyntheticTask, batch_size: int, min_time: float) -> Callable[[], float]:
    """A timer of ``task.train_batch`` (what training calls every step), each call a new step."""
    steps = itertools.count()
    return lambda: seconds_per_call(lambda: task.train_batch(batch_size, 0, next(steps)), min_time)


def training_step(trainee: Trainee, min_time: float) -> Callable[[], float]:
    """A timer of one training step on pre-generated batches."""
    return lambda: seconds_per_call(trainee.step, min_time, min_calls=2)


def generator_throughput(quick: bool) -> Section:
    """Time of one training batch of every task at every length (`generator` in benchmarks/run.py)."""
    section = Section("generator", "1. Generators: time per training batch (batch 64, 1 thread)")
    torch.set_num_threads(1)
    repeats, min_time = (2, 0.1) if quick else (3, 0.3)
    rows = []
    for length in LENGTHS:
        cells = []
        for name in TASKS:
            task = task_at(name, length)
            if task is None:
                cells.append("–")
                continue
            timer = generation(task, BATCH, min_time)
            seconds = median([timer() for _ in range(repeats)])
            cells.append(f"{seconds * 1e6:.0f} us ({si(BATCH * length / seconds)} tokens/s)")
        rows.append([length, *cells])
    section.text(
        "`task.train_batch(64, seed=0, step=i)` for fresh i (one `generate` call: draw, hash, keep the "
        "training split) of every task in conf/data/ with its default parameters, at the distance that "
        "makes samples of L tokens (– where that distance is below the task's minimum), median of "
        f"{repeats} repeats (`python -m benchmarks.run generator`). No target of its own: what counts is "
        "the fraction of a training step (1b)."
    )
    section.table(["L", *TASKS], rows)
    return section


def generator_share(quick: bool) -> Section:
    """Generation time of one training batch over the time of one training step, per model and length."""
    section = Section(
        "generator_share",
        "1b. Data generation as a fraction of a training step (LSTM and attention, batch 64, 1 thread)",
    )
    torch.set_num_threads(1)
    repeats, min_time = (2, 0.1) if quick else (3, 0.3)
    rows, worst, misses = [], (0.0, ""), []
    for model in MODELS:
        for length in LENGTHS:
            batch = 8 if (model, length) == ("attention", 4096) else BATCH  # a batch-64 step: over a minute
            trainee = Trainee(model, length - 14, batch_size=batch)  # default coref: L = distance + 6 + 8
            tasks = {name: task_at(name, length) for name in TASKS}
            timers = {name: generation(task, batch, min_time) for name, task in tasks.items() if task}
            found = alternate({"step": training_step(trainee, min_time), **timers}, repeats)
            cells = []
            for name in TASKS:
                if name not in timers:
                    cells.append("–")
                    continue
                share = median(ratios(found[name], found["step"]))
                worst = max(worst, (share, f"{name}, {model}, L = {length}"))
                if share >= TARGET:
                    misses.append(f"{name} with {model} at L = {length} ({100 * share:.2f}%)")
                cells.append(f"{100 * share:.2f}%")
            rows.append([model, length, batch, f"{median(found['step']) * 1e3:.1f} ms", *cells])
    verdict = "met everywhere" if not misses else "not met for " + "; ".join(misses)
    section.text(
        "Per repeat, one `task.train_batch(batch, seed, step)` of every task in conf/data/ (defaults, the "
        "distance that makes L tokens) against one training step (forward, backward, gradient clipping, "
        "AdamW: `Trainee` of benchmarks/training.py) of the default model on pre-generated batches of L "
        "tokens, measured in alternation so that the machine's load falls on both alike; median of "
        f"{repeats} repeats (`python -m benchmarks.run generator_share`). Attention at L = 4096 uses batch "
        f"8 on both sides. Target: below 2% at every length: {verdict}. Worst median share: "
        f"{100 * worst[0]:.2f}% ({worst[1]})."
    )
    section.table(["model", "L", "batch", "train step", *TASKS], rows)
    return section

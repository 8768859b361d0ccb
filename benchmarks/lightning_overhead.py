"""Item 3b: the module alone. The project's LightningModule under Lightning's Trainer (the run's trainer,
logger and callbacks, built as experiments/train.py builds them) against a plain PyTorch loop over the same
module: same initialisation, same data stream, the module's own AdamW and schedule, same clipping.
Validation off, no process start: the per-step cost of Lightning's loop, and the whole ``fit`` (Trainer
construction and the end-of-training diagnostics included) against the loop's set-up and steps.

The entry point users run, as a whole process, is measured against a plain loop in
benchmarks/entry_point.py (section 3); this section is the in-process, module-only measurement.
"""

from __future__ import annotations

import contextlib
import gc
import io
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from benchmarks.common import Section, alternate, median, ratios, spread
from benchmarks.training import configured_optimiser
from longrange.datasets.datamodule import TaskDataModule
from longrange.experiments.run.callbacks import build_callbacks
from longrange.experiments.run.config import TrainConfig, instantiate, plain
from longrange.models.module import LongRangeModule

WARMUP = 10  # steps left out of the steady-state figure


def config(model: str, distance: int, steps: int, out_dir: Path, *extra: str) -> DictConfig:
    overrides = [
        f"model={model}",
        f"data.distance={distance}",
        f"trainer.max_steps={steps}",
        f"trainer.default_root_dir={out_dir}",
        f"logger.save_dir={out_dir}",
        *extra,
    ]
    with initialize_config_module("longrange.conf", version_base="1.3"):
        return compose("config", overrides=overrides)


class StepClock(pl.Callback):
    """Wall and CPU time at the start of every training step."""

    def __init__(self) -> None:
        self.starts: list[tuple[float, float]] = []

    def on_train_batch_start(self, *args: object) -> None:
        self.starts.append((time.perf_counter(), time.process_time()))


def per_step(starts: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean (wall, CPU) seconds per step over the steady state: from step WARMUP to the last step."""
    count = len(starts) - 1 - WARMUP
    return tuple((starts[-1][i] - starts[WARMUP][i]) / count for i in (0, 1))  # type: ignore[return-value]


def build(cfg: DictConfig) -> tuple[LongRangeModule, Any, TrainConfig]:
    """The module and the task exactly as experiments/train.py's ``fit_and_test`` builds them."""
    torch.set_num_threads(cfg.threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    task = instantiate(cfg.data)
    train = TrainConfig(**plain(cfg.train))
    module = LongRangeModule(
        plain(cfg.model), task.vocab.words, trained_distances=list(task.train_distances),
        **train.optimisation(),
    )  # fmt: skip
    return module, task, train


def lightning_run(cfg: DictConfig) -> tuple[float, float, float]:
    """(seconds of Trainer construction + fit, steady-state wall and CPU seconds per step)."""
    gc.collect()
    start = time.perf_counter()
    module, task, train = build(cfg)
    data = TaskDataModule(task, train.batch_size, train.eval_samples, cfg.seed, cfg.resources.eval_tokens)
    clock = StepClock()
    trainer = instantiate(
        cfg.trainer,
        logger=instantiate(cfg.logger),
        callbacks=[*build_callbacks(cfg.callbacks, "benchmark"), clock],
        limit_val_batches=0,
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        trainer.fit(module, data)  # the progress bar, where enabled, writes to one of them
    total = time.perf_counter() - start
    return (total, *per_step(clock.starts))


def plain_run(cfg: DictConfig) -> tuple[float, float, float]:
    gc.collect()
    start = time.perf_counter()
    module, task, train = build(cfg)
    optimizer, scheduler = configured_optimiser(module, cfg.trainer.max_steps)
    clipped = [p for group in optimizer.param_groups for p in group["params"]]  # Lightning's order
    module.train()
    starts = []
    for step in range(cfg.trainer.max_steps):
        starts.append((time.perf_counter(), time.process_time()))
        batch = task.train_batch(train.batch_size, cfg.seed, step)
        logits, targets, _ = module.answer_logits(batch)
        loss = F.cross_entropy(logits, targets)
        if not torch.isfinite(loss):
            raise RuntimeError("diverged")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clipped, cfg.trainer.gradient_clip_val)
        optimizer.step()
        scheduler.step()
    total = time.perf_counter() - start
    return (total, *per_step(starts))


def lightning_overhead(quick: bool) -> Section:
    section = Section("lightning", "3b. The module alone: Trainer.fit vs a plain loop, in one process")
    repeats, steps = (2, 50) if quick else (3, 70)
    demo = ["trainer.enable_progress_bar=false"]
    cases = [("lstm", 8, demo), ("lstm", 32, demo)]
    if not quick:
        cases += [("gru", 8, demo), ("attention", 8, demo), ("gru", 32, demo), ("attention", 32, demo)]
    cases.append(("lstm", 8, []))  # a single run: progress bar on
    rows = []
    for model, distance, extra in cases:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = config(model, distance, steps, Path(tmp), *extra)
            found = alternate({"plain": partial(plain_run, cfg), "lightning": partial(lightning_run, cfg)},
                              repeats)  # fmt: skip
        plain_wall = [r[1] for r in found["plain"]]
        plain_cpu = [r[2] for r in found["plain"]]
        rows.append(
            [
                model,
                instantiate(cfg.data).seq_len(distance),
                "on" if not extra else "off",
                f"{median(plain_cpu) * 1e3:.2f} ms",
                spread(ratios([r[2] for r in found["lightning"]], plain_cpu)) + "x",
                spread(ratios([r[1] for r in found["lightning"]], plain_wall)) + "x",
                spread(ratios([r[0] for r in found["lightning"]], [r[0] for r in found["plain"]])) + "x",
            ]
        )
    section.text(
        f"**Module only** (not the entry point users run: that is section 3). {steps} optimiser steps at "
        "batch 64 in this process with the project's configs (conf/trainer/default.yaml, the TensorBoard "
        "logger and the callbacks of conf/callbacks/default.yaml built by `build_callbacks`; validation "
        "off on both sides). *plain* = the same module, initialisation and data stream (`task.train_batch` "
        "per step), the module's own AdamW + schedule (`configure_optimizers`) and gradient clipping in a "
        f"bare loop. Ratios are per step in the steady state (steps {WARMUP}-{steps}), on CPU time (robust "
        "to other processes on the machine) and on wall time; *whole fit* = Trainer construction + `fit` "
        "(the end-of-training diagnostics included) against the bare loop's set-up + steps. Target: per "
        "step at most 1.05x at demo sizes (progress bar off, as in the sweep presets)."
    )
    section.table(
        ["model", "L", "progress bar", "plain step (CPU)", "Lightning, CPU", "Lightning, wall", "whole fit"],
        rows,
    )
    return section

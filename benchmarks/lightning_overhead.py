"""Item 3: the project's LightningModule under Lightning's Trainer against a plain PyTorch loop doing the same
work: same module class and initialisation, same data stream, same AdamW and schedule, same clipping."""

from __future__ import annotations

import contextlib
import gc
import io
import tempfile
import time
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from torch import Tensor

from benchmarks.common import Section, alternate, median, ratios, spread
from longrange.datasets.base import TaskBatch
from longrange.datasets.datamodule import TaskDataModule
from longrange.experiments.config import instantiate, plain
from longrange.experiments.train import callbacks
from longrange.models.module import Diverged, LongRangeModule

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


class ProposedModule(LongRangeModule):
    """The change proposed for models/module.py: log the training metrics only on the steps where Lightning
    writes them (every ``trainer.log_every_n_steps``), in one ``log_dict`` call with an explicit batch size.
    Each ``self.log`` call costs ~0.3 ms of Lightning bookkeeping (``_ResultMetric.to`` walks the metric's
    ``__dict__`` with ``apply_to_collection``), whether or not the value is written."""

    def training_step(self, batch: TaskBatch, batch_idx: int) -> Tensor:
        logits, targets, _ = self.answer_logits(batch)
        loss = F.cross_entropy(logits, targets)
        if not torch.isfinite(loss):
            raise Diverged(f"non-finite training loss {loss.item()} at step {self.global_step}")
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # Lightning's own logging steps
            accuracy = (logits.argmax(-1) == targets).float().mean()
            self.log_dict({"train/loss": loss, "train/acc": accuracy}, prog_bar=True, batch_size=len(targets))
        return loss


def build(
    cfg: DictConfig, module_class: type[LongRangeModule] = LongRangeModule
) -> tuple[LongRangeModule, object, dict]:
    """The module and the task exactly as experiments/train.py builds them."""
    torch.set_num_threads(cfg.threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    config = plain(cfg)
    task = instantiate(cfg.data)
    t = config["train"]
    hparams = {k: t[k] for k in ("lr", "weight_decay", "warmup_steps", "min_lr_ratio", "threshold")}
    return module_class(model=config["model"], vocab=task.vocab.words, **hparams), task, t


def lightning_run(
    cfg: DictConfig, out_dir: Path, module_class: type[LongRangeModule] = LongRangeModule
) -> tuple[float, float, float]:
    """(seconds of Trainer construction + fit, steady-state wall and CPU seconds per step)."""
    gc.collect()
    start = time.perf_counter()
    module, task, t = build(cfg, module_class)
    data = TaskDataModule(task, t["batch_size"], t["eval_samples"], cfg.seed)
    clock = StepClock()
    trainer = instantiate(
        cfg.trainer,
        logger=instantiate(cfg.logger),
        callbacks=[*callbacks(cfg, out_dir), clock],
        limit_val_batches=0,
    )
    with contextlib.redirect_stderr(io.StringIO()):  # the progress bar, where enabled
        trainer.fit(module, data)
    total = time.perf_counter() - start
    return (total, *per_step(clock.starts))


def plain_run(cfg: DictConfig) -> tuple[float, float, float]:
    gc.collect()
    start = time.perf_counter()
    module, task, t = build(cfg)
    module.trainer = type(
        "Budget", (), {"max_steps": cfg.trainer.max_steps}
    )()  # read by configure_optimizers
    configured = module.configure_optimizers()
    module.trainer = None
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    module.train()
    starts = []
    for step in range(cfg.trainer.max_steps):
        starts.append((time.perf_counter(), time.process_time()))
        batch = task.train_batch(t["batch_size"], cfg.seed, step)
        logits, targets, _ = module.answer_logits(batch)
        loss = F.cross_entropy(logits, targets)
        if not torch.isfinite(loss):
            raise RuntimeError("diverged")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
        scheduler.step()
    total = time.perf_counter() - start
    return (total, *per_step(starts))


def lightning_overhead(quick: bool) -> Section:
    section = Section("lightning", "3. Lightning overhead: Trainer + LightningModule vs a plain loop")
    repeats, steps = (2, 50) if quick else (3, 70)
    demo = ["trainer.enable_progress_bar=false"]
    cases = [("lstm", 4, demo), ("lstm", 32, demo)]
    if not quick:
        cases += [("gru", 4, demo), ("attention", 4, demo), ("gru", 32, demo), ("attention", 32, demo)]
    cases.append(("lstm", 4, []))  # a single run: progress bar on
    rows = []
    for model, distance, extra in cases:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            cfg = config(model, distance, steps, out, *extra)
            found = alternate(
                {
                    "plain": partial(plain_run, cfg),
                    "current": partial(lightning_run, cfg, out),
                    "proposed": partial(lightning_run, cfg, out, ProposedModule),
                },
                repeats,
            )
        plain_wall = [r[1] for r in found["plain"]]
        plain_cpu = [r[2] for r in found["plain"]]
        cells = []
        for side in ("current", "proposed"):
            cells += [
                spread(ratios([r[2] for r in found[side]], plain_cpu)) + "x",
                spread(ratios([r[1] for r in found[side]], plain_wall)) + "x",
            ]
        rows.append(
            [
                model,
                instantiate(cfg.data).seq_len(distance),
                "on" if not extra else "off",
                f"{median(plain_cpu) * 1e3:.2f} ms",
                *cells,
                spread(ratios([r[0] for r in found["current"]], [r[0] for r in found["plain"]])) + "x",
            ]
        )
    section.text(
        f"{steps} optimiser steps at batch 64 with the project's configs (conf/trainer/default.yaml, the "
        "TensorBoard logger and the callbacks of experiments/train.py; validation off on both sides). "
        "*plain* = the same module class, data stream (`task.train_batch` per step), AdamW + schedule "
        "(`configure_optimizers`) and gradient clipping in a bare loop. Ratios are per step in the steady "
        f"state (steps {WARMUP}-{steps}), on CPU time (robust to other processes on the machine) and on wall "
        "time. *current* = models/module.py as it is; *proposed* = the same with the logging change of "
        "`ProposedModule` (benchmarks/lightning_overhead.py). *whole run* = Trainer construction + `fit` "
        "(incl. the end-of-training diagnostics) against the bare loop's set-up + steps, current module. "
        "Target: per step at most 1.05x at demo sizes (progress bar off, as in the sweep presets)."
    )
    section.table(
        [
            "model",
            "L",
            "progress bar",
            "plain step (CPU)",
            "current, CPU",
            "current, wall",
            "proposed, CPU",
            "proposed, wall",
            "current, whole run",
        ],
        rows,
    )
    return section

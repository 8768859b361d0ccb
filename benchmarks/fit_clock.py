"""A Lightning callback that records when a job's phases start and end, added to a `longrange-train` job from
the command line without touching the project (``benchmarks.entry_point`` passes it)::

    +callbacks.clock._target_=benchmarks.fit_clock.FitClock +callbacks.clock.path=/tmp/clock.json

It writes ``path`` (JSON) at the end of each of Lightning's runs (fit, test): timestamps
``[time.time(), time.process_time()]`` (the first comparable with the moment the parent started the
process) of ``fit start`` /
``fit end`` (Lightning's ``setup`` / ``teardown`` hooks, the whole of ``Trainer.fit`` but its first and
last few milliseconds), ``first step`` (the first training batch, fetched), ``loop end`` (the last
training batch done: what follows is ``on_train_end``, the diagnostics), ``test start`` / ``test end``;
the number and total [wall, CPU] seconds of validations (``on_validation_start`` to ``on_validation_end``) and
of what precedes each of them after the training batch (Lightning's checkpoint save, ModelCheckpoint
being its last callback, and the start of the validation loop, which generates the validation set the
first time). It imports nothing that the job has not imported, and costs microseconds a step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class FitClock(pl.Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.marks: dict[str, list[float]] = {}
        self.validations = 0
        self.seconds = {"validation": [0.0, 0.0], "checkpoint": [0.0, 0.0]}  # [wall, CPU]
        self._batch_end, self._validation_start = [0.0, 0.0], [0.0, 0.0]

    @staticmethod
    def now() -> list[float]:
        return [time.time(), time.process_time()]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.marks.setdefault(f"{getattr(stage, 'value', stage)} start", self.now())  # "fit", "test"

    def on_train_batch_start(self, *args: Any) -> None:
        self.marks.setdefault("first step", self.now())

    def on_train_batch_end(self, *args: Any) -> None:
        self._batch_end = self.marks["loop end"] = self.now()

    def _add(self, key: str, since: list[float]) -> list[float]:
        now = self.now()
        self.seconds[key] = [total + a - b for total, a, b in zip(self.seconds[key], now, since, strict=True)]
        return now

    def on_validation_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if not trainer.sanity_checking:
            self._validation_start = self._add("checkpoint", self._batch_end)

    def on_validation_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if not trainer.sanity_checking:
            self.validations += 1
            self.marks["loop end"] = self._add("validation", self._validation_start)  # after the last batch

    def on_train_end(self, *args: Any) -> None:
        self.marks["train end"] = self.now()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.marks[f"{getattr(stage, 'value', stage)} end"] = self.now()
        record = {"marks": self.marks, "validations": self.validations, "seconds": self.seconds,
                  "steps": trainer.global_step}  # fmt: skip
        self.path.write_text(json.dumps(record))

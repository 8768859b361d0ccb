"""Backbones that misbehave on purpose, for the reliability tests (each is a GRU underneath).

They follow the model contract, so a sweep runs them like any model: select one with
``model=gru model._target_=faulty_models.<Name> +model.<knob>=...`` and ``PYTHONPATH=tests``.
"""

from __future__ import annotations

import os
import time

import torch
from torch import Tensor

from longrange.models.attention import Transformer
from longrange.models.gru import GRU


def interrupt_if_asked(calls: int) -> None:
    """Raise KeyboardInterrupt at the training step named by LONGRANGE_TEST_INTERRUPT_AT, if set."""
    if os.environ.get("LONGRANGE_TEST_INTERRUPT_AT") == str(calls):
        raise KeyboardInterrupt


class FailingGRU(GRU):
    """Raises on sequences of ``fail_at_distance`` (coref length D + 6), after allocating ``hog_mb`` MB that
    the failing frame keeps referenced (a leak if the sweep kept the traceback alive)."""

    def __init__(self, fail_at_distance: int = 5, hog_mb: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fail_at_length, self.hog_mb = fail_at_distance + 6, hog_mb

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[1] == self.fail_at_length:
            hog = torch.ones(self.hog_mb * 2**18)  # float32: 2**18 elements per MB  # noqa: F841
            raise RuntimeError("injected failure")
        return super().forward(x)


class NaNGRU(GRU):
    """Returns NaN features from training step ``nan_after`` on."""

    def __init__(self, nan_after: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nan_after, self.calls = nan_after, 0

    def forward(self, x: Tensor) -> Tensor:
        features = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls > self.nan_after:
                return features * float("nan")
        return features


class SlowGRU(GRU):
    """Sleeps ``sleep_s`` per training step (to signal a run mid-fit); raises KeyboardInterrupt at the
    training step given in the environment variable LONGRANGE_TEST_INTERRUPT_AT, if set."""

    def __init__(self, sleep_s: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sleep_s, self.calls = sleep_s, 0

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.calls += 1
            time.sleep(self.sleep_s)
            interrupt_if_asked(self.calls)
        return super().forward(x)


class InterruptingTransformer(Transformer):
    """The attention model, interrupted like SlowGRU (without sleeping)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.calls += 1
            interrupt_if_asked(self.calls)
        return super().forward(x)


class LeakProbe(GRU):
    """At its first training step, fails if it sees what an earlier job in the same worker process left
    behind (an environment variable, a changed thread count), then leaves both behind itself."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not getattr(self, "probed", False):
            self.probed = True
            if "LONGRANGE_LEAK_PROBE" in os.environ:
                raise RuntimeError(
                    f"environment variable leaked from process {os.environ['LONGRANGE_LEAK_PROBE']}"
                )
            if torch.get_num_threads() != 1:
                raise RuntimeError(f"thread count {torch.get_num_threads()} leaked, configured 1")
            os.environ["LONGRANGE_LEAK_PROBE"] = str(os.getpid())
            torch.set_num_threads(2)
        return super().forward(x)

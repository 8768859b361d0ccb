"""The plumbing of one job around Lightning's run: stopping on SIGTERM, the checkpoint to resume from, what
a failure's report says. ``train`` calls these; nothing here knows about sweeps or the report."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from longrange.experiments.results import DIAGNOSTICS_FILE

log = logging.getLogger("longrange")

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for the next allocation instead of giving it back to the kernel;
    called at the start of each job, after handing back what an earlier job of the process left freed.

    By default glibc serves a large block (over its mmap threshold, 128 kB rising to 32 MB) with a fresh
    ``mmap`` and unmaps it on free, so a training step whose activations are tensors of tens of MB pays
    page faults for every one of them, every step (a 42 MB multiply: 10,244 page faults, 27.7 ms, against
    9.4 ms into memory already mapped). Serving them from the heap and not trimming it makes the process
    keep its peak, which it reaches every step anyway: an LSTM job of `make demo` ran 22% faster (system
    time 6.4 s -> 0.7 s) with 4% more peak memory (benchmarks/RESULTS.md, section 3). The numbers a job
    computes do not change. A worker reused for the next job of a sweep first returns the memory the last
    one freed (``malloc_trim``), so each job starts, and records its memory, from what it holds itself.
    Returns False where the C library is not glibc (nothing is changed there)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return False
    gc.collect()  # the last job's objects in reference cycles (Lightning's trainer), then their memory
    malloc_trim(0)
    settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 64 << 20))
    applied = [mallopt(option, value) == 1 for option, value in settings]  # every one, even after a failure
    return all(applied)


def one_line(exc: BaseException) -> str:
    """The report's reason for a failure: the root exception's own message on one line. Hydra wraps a
    constructor's error (``InstantiationException: Error in call to target ...``): the cause is what the
    user must read, e.g. ``MisconfigurationException: No supported gpu backend found!``."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def requeued_by_slurm(exc: BaseException) -> bool:
    """submitit requeues a job at its time limit or on preemption by running ``scontrol requeue``; inside
    Lightning's loop that surfaces as this command's error, while the job itself will be run again."""
    if not isinstance(exc, subprocess.CalledProcessError):
        return False
    command = exc.cmd.split() if isinstance(exc.cmd, str) else [str(part) for part in exc.cmd or []]
    return "requeue" in command


def clear(out_dir: Path) -> None:
    """What a previous run left that a run from scratch must not continue: checkpoints, events and
    diagnostics."""
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
    (out_dir / DIAGNOSTICS_FILE).unlink(missing_ok=True)


def readable_checkpoint(out_dir: Path, record: dict[str, Any]) -> Path | None:
    """The job's last checkpoint if there is one and it can be read. A damaged one (cut short by a copy
    or a full disk) is renamed ``last.ckpt.damaged-<time>`` and kept for inspection; the job then starts
    from scratch (the only checkpoint is the last one), its earlier events and diagnostics cleared, and
    ``record["checkpoint_set_aside"]`` says so."""
    path = out_dir / "checkpoints" / "last.ckpt"
    if not path.exists():
        return None
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return path
    except Exception as exc:
        aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log.warning("%s: unreadable checkpoint (%s) set aside as %s; training from scratch", out_dir, problem,
                    aside.name)  # fmt: skip
        for stale in (out_dir / "tensorboard", out_dir / DIAGNOSTICS_FILE):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        record["checkpoint_set_aside"] = {"path": str(aside), "error": problem}
        return None


class StopOnSigterm:
    """SIGTERM for the duration of one job, from construction to :meth:`restore`: between Lightning's runs
    it raises ``SIGTERMException`` at once; inside them (:meth:`deferred`) it is only recorded
    (``received``), and Lightning's own handler, which calls this one too, stops the loop at the next
    batch boundary (raising mid-step could cut a checkpoint short), except while ``interruptible()`` says
    that a long phase which writes nothing runs (generating an evaluation set: minutes at D = 100,000).
    Either way the job records ``interrupted`` instead of dying with a result that says ``running``.
    Outside the main thread (where Python cannot set handlers) nothing changes."""

    def __init__(self, interruptible: Callable[[], bool] = lambda: False) -> None:
        self.received, self._defer, self._interruptible = False, False, interruptible
        try:
            self._previous: Any = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        if not self._defer or self._interruptible():
            raise SIGTERMException

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._defer = True
        try:
            yield
        finally:
            self._defer = False

    def raise_if_received(self) -> None:
        if self.received:
            raise SIGTERMException

    def restore(self) -> None:
        """The handler from before the job (a reused worker's next job starts clean)."""
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

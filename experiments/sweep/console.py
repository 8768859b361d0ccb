"""What reaches a job's console: three library messages filtered at their source, and, inside a sweep, only
warnings, errors and the progress lines (the job's log file still gets every record).

The filter and the formatter are the console handler's in conf/hydra/job_logging/longrange.yaml; the
``progress`` callback installs :func:`silence_library_noise` in every job and turns :func:`quiet` on for the
jobs of a sweep. Plain Python at import (no torch, no Lightning).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

PROGRESS_LOGGER = "longrange.progress"  # the per-job lines; the only INFO records a sweep's console shows
_QUIET = False  # True while a sweep's job runs in this process: SweepConsole lets only warnings through

# Library messages that say nothing about the run, each matched exactly: (message regex, category, module).
# Lightning's SLURM check warns whenever `srun` exists on the machine (SLURM installed); the jobs of this
# project never run under srun by design (one process per job; submitit starts them).
SRUN_WARNING = r"The `srun` command is available on your system but is not used"
# torch 2.13 deprecated LeafSpec; Lightning 2.6's own _pytree helper still builds one at every flatten.
LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
LIGHTNING_TIP = ("💡 Tip:", "litlogger")  # Lightning's advertisement, logged at INFO once per Trainer


def silence_library_noise() -> None:
    """Filter the three library messages above at their source. Idempotent; each filter matches one
    message from one module or logger, so any other warning (from the same modules too) still shows."""
    from lightning_fabric.utilities.warnings import PossibleUserWarning

    slurm = r"lightning_fabric\.plugins\.environments\.slurm"
    pytree = r"pytorch_lightning\.utilities\._pytree"
    warnings.filterwarnings("ignore", SRUN_WARNING, PossibleUserWarning, slurm)
    warnings.filterwarnings("ignore", LEAFSPEC_WARNING, FutureWarning, pytree)
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")  # all of Lightning's info lines
    if _not_the_tip not in rank_zero.filters:
        rank_zero.addFilter(_not_the_tip)


def _not_the_tip(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (message.startswith(LIGHTNING_TIP[0]) and LIGHTNING_TIP[1] in message)


def quiet(on: bool) -> None:
    """Inside a sweep's job (on) the console shows warnings, errors and the progress lines only."""
    global _QUIET
    _QUIET = on


class SweepConsole(logging.Filter):
    """The console handler's filter: while :func:`quiet` is on, only warnings, errors and the progress lines
    pass; otherwise everything does."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET or record.levelno >= logging.WARNING or record.name == PROGRESS_LOGGER


class ConsoleFormatter(logging.Formatter):
    """Hydra's console format, except for the progress lines: bare, and red on a terminal when they
    report a failure (``extra={"alert": True}``)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name != PROGRESS_LOGGER:
            return super().format(record)
        return red(record.getMessage()) if getattr(record, "alert", False) else record.getMessage()


def red(line: str) -> str:
    """``line`` in bold red when stdout is a terminal that takes colours (https://no-color.org)."""
    return f"\033[1;31m{line}\033[0m" if colour() else line


def colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")

"""Train one model on one task and write result.json.

    python -m longrange.experiments.train model=gru data.distance=64
    python -m longrange.experiments.train -m experiment=distance_sweep      # a sweep (see conf/experiment)

Every artefact of a job (TensorBoard events, checkpoints, result.json, diagnostics.json) lands in Hydra's
output folder. A rerun in a folder whose result.json says "ok" for the same config is skipped (sweeps
resume); a job with a checkpoint but no "ok" result resumes from its last checkpoint; a folder holding
another config is cleared and retrained.

One writer per job: a job first takes its folder's lock (``jobs.JobLock``); a job that another live
process holds is skipped (status ``skipped``, nothing written, no failure). A checkpoint that cannot be
read is renamed ``last.ckpt.damaged-<time>`` and the job starts from scratch (``checkpoint_set_aside`` in
result.json). SIGTERM stops a job at the next batch boundary (training, evaluation, diagnostics) or at
once between Lightning's runs, and records ``interrupted``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from longrange.datasets.datamodule import TaskDataModule
from longrange.experiments.callbacks import Diagnostics, LogDecodedSamples, RandomState
from longrange.experiments.config import instantiate, plain, validate
from longrange.experiments.jobs import LAUNCH_ENV, SKIPPED, JobLock, describe_holder
from longrange.experiments.resources import ResourcesConfig
from longrange.experiments.results import (
    DIAGNOSTICS_FILE,
    RESULT_FILE,
    config_hash,
    is_done,
    model_name,
    peak_rss_mb,
    read_result,
    reset_peak_rss,
    rss_mb,
    write_json_atomic,
)
from longrange.experiments.tensorboard_views import tensorboard_hparams
from longrange.models.module import Diverged, LongRangeModule

log = logging.getLogger("longrange")
OPTIMISATION = ("lr", "weight_decay", "warmup_steps", "min_lr_ratio", "threshold")  # train.* for the module


@hydra.main(version_base="1.3", config_path="pkg://longrange.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra's task: one job. Returns the final validation accuracy (the sweepers' objective)."""
    runtime = HydraConfig.get().runtime
    result = train(cfg, Path(runtime.output_dir), choices=dict(runtime.choices))
    if result["status"] == SKIPPED:  # another live process runs this job: no failure, nothing written
        return None
    if result["status"] == "interrupted":  # Ctrl-C or SIGTERM: stop the whole sweep, non-zero
        sys.exit(143 if "SIGTERM" in (result["error"] or "") else 130)
    if result["status"] != "ok":  # raised here, not in train(): nothing of the failed job stays referenced
        raise RuntimeError(f"job {result['status']} in {runtime.output_dir}: {result['reason']}")
    return result["val_acc"]


def train(cfg: DictConfig, out_dir: Path, choices: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one job in ``out_dir`` and return its result record (also written to result.json).

    ``choices``: the config-group choices (e.g. {"model": "gru"}) that name the job in reports. A job
    whose folder another live process holds returns ``{"status": "skipped", "reason": "running elsewhere
    (pid P on host H since T)", ...}`` without writing anything.
    """
    config, start = plain(cfg), time.perf_counter()
    record: dict[str, Any] = {"config_hash": config_hash(config), "config": config, "run_dir": str(out_dir)}
    record["choices"] = choices or {"model": model_name(record)}
    with JobLock(out_dir) as lock:
        if not lock.acquire():
            holder = describe_holder(lock.holder())
            log.info("%s: skipped: running elsewhere (%s)", out_dir, holder)
            return record | {"status": SKIPPED, "reason": f"running elsewhere ({holder})"}
        return _train_locked(cfg, out_dir, record, start)


def _train_locked(cfg: DictConfig, out_dir: Path, record: dict[str, Any], start: float) -> dict[str, Any]:
    """``train`` once this process holds the job's lock."""
    config = record["config"]
    previous = read_result(out_dir)
    if is_done(out_dir, record["config_hash"]):
        log.info("%s: already done with this config, skipped", out_dir)
        return previous or record
    if previous and previous.get("config_hash") != record["config_hash"]:
        log.warning("%s: config changed since the last run, retraining from scratch", out_dir)
        _clear(out_dir)
    elif previous and previous.get("status") == "running":  # its process died holding nothing: stale
        log.info("%s: the last run died without a result (interrupted, stale); resuming", out_dir)
    environment = dict(os.environ)  # restored at the end: a reused worker's next job must not see changes
    task, backbone = validate(cfg)
    resources = ResourcesConfig(**(plain(cfg.resources) if "resources" in cfg else {}))
    reset_peak_rss()
    record.update(
        status="running",
        chance=task.chance_level,
        threads=cfg.threads,
        versions={"torch": torch.__version__, "lightning": pl.__version__},
        state_size={d: backbone.state_size(task.seq_len(d)) for d in task.eval_distances},
        memory_mb_at_start=rss_mb(),
        launch=os.environ.get(LAUNCH_ENV),  # the sweep launch that ran it (jobs.SweepSummary)
    )
    checkpoint = readable_checkpoint(out_dir, record)
    write_json_atomic(out_dir / RESULT_FILE, record)

    module, trainer, error, reason = None, None, None, None
    stop = StopOnSigterm()
    try:
        torch.set_num_threads(cfg.threads)  # explicit in every job: launchers change it silently otherwise
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        hparams = {key: config["train"][key] for key in OPTIMISATION}
        distances = list(task.train_distances)
        module = LongRangeModule(config["model"], task.vocab.words, trained_distances=distances, **hparams)
        record["parameters"] = module.num_parameters
        log.info("%s: %s parameters", cfg.model._target_, f"{module.num_parameters:,}")
        data = TaskDataModule(
            task, cfg.train.batch_size, cfg.train.eval_samples, cfg.seed, resources.eval_tokens
        )
        found = callbacks(cfg, out_dir, resources)
        bar = bool(cfg.trainer.get("enable_progress_bar", True)) and sys.stdout.isatty()  # none in log files
        logger = instantiate(cfg.logger)
        trainer = instantiate(cfg.trainer, logger=logger, callbacks=found, enable_progress_bar=bar)
        with stop.deferred():  # inside Lightning's runs Lightning stops at the next batch boundary
            trainer.fit(module, data, ckpt_path=checkpoint)
        stop.raise_if_received()  # a SIGTERM after the last boundary Lightning checked
        status = "interrupted" if trainer.interrupted else "ok"
        if status == "ok":
            with stop.deferred():
                trainer.test(module, data, verbose=False)
            stop.raise_if_received()  # a SIGTERM during the test's last batch
    except Diverged as exc:
        status, error, reason = "diverged", str(exc), str(exc)
    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C, or SIGTERM (Lightning then exits with 0)
        status = "interrupted"
        error = reason = "SIGTERM" if isinstance(exc, SIGTERMException) else repr(exc)
    except Exception as exc:  # keep only the text: a live traceback would pin this job's memory for the sweep
        status, error, reason = "failed", traceback.format_exc(), one_line(exc)
        if requeued_by_slurm(exc):  # submitit's requeue (time limit, preemption) surfacing in the loop
            status, reason = "interrupted", "requeued by SLURM (time limit or preemption)"
    finally:
        stop.restore()
        os.environ.clear()
        os.environ.update(environment)

    results = module.results if module is not None else {}
    val, test = results.get("val", {}), results.get("test", {})
    record.update(
        status=status,
        error=error,
        reason=reason,  # the exception's own message, one line: what the report shows
        steps=trainer.global_step if trainer is not None else 0,
        wall_time_s=time.perf_counter() - start,
        val_acc=val.get("acc"),
        val_acc_per_distance=val.get("acc_per_distance"),
        test_acc=test.get("acc"),
        test_acc_per_distance=test.get("acc_per_distance"),
        threshold=config["train"]["threshold"],
        steps_to_threshold=module.steps_to_threshold if module is not None else None,
        memory_peak_mb=peak_rss_mb(),  # this job's peak resident memory (resources.py is calibrated on it)
    )
    write_json_atomic(out_dir / RESULT_FILE, record)
    if trainer is not None:
        trainer.logger.log_hyperparams(*tensorboard_hparams(config, record))
        trainer.logger.finalize(status)
    accuracy = "–" if record["test_acc"] is None else f"{record['test_acc']:.3f}"
    log.info("%s: %s, test acc %s, %d steps in %.1f s", out_dir, status, accuracy, record["steps"],
             record["wall_time_s"])  # fmt: skip
    return record


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


def _clear(out_dir: Path) -> None:
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
    batch boundary (raising mid-step could cut a checkpoint short). Either way the job records
    ``interrupted`` instead of dying with a result that says ``running``. Outside the main thread (where
    Python cannot set handlers) nothing changes."""

    def __init__(self) -> None:
        self.received, self._defer = False, False
        try:
            self._previous: Any = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        if not self._defer:
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


def callbacks(cfg: DictConfig, out_dir: Path, resources: ResourcesConfig | None = None) -> list[pl.Callback]:
    every = cfg.trainer.val_check_interval
    resources = resources or ResourcesConfig()
    found = [
        ModelCheckpoint(
            dirpath=out_dir / "checkpoints", save_last=True, save_top_k=0, every_n_train_steps=every
        ),
        LearningRateMonitor(logging_interval="step"),
        LogDecodedSamples(),
        RandomState(),
        Diagnostics(out_dir, eval_tokens=resources.eval_tokens),
    ]
    if cfg.train.budget == "to_threshold":
        threshold = cfg.train.threshold
        found.append(EarlyStopping("val/acc", mode="max", stopping_threshold=threshold, patience=10**9))
    return found


if __name__ == "__main__":
    main()

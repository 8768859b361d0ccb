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
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from pytorch_lightning.utilities.exceptions import SIGTERMException

from longrange.datasets.datamodule import TaskDataModule
from longrange.experiments.results import (
    RESULT_FILE,
    config_hash,
    model_name,
    peak_rss_mb,
    read_result,
    reset_peak_rss,
    rss_mb,
    write_json_atomic,
)
from longrange.experiments.run.callbacks import build_callbacks, tensorboard_hparams
from longrange.experiments.run.config import TrainConfig, instantiate, plain, validate
from longrange.experiments.run.job import (
    StopOnSigterm,
    clear,
    keep_freed_memory,
    one_line,
    readable_checkpoint,
    requeued_by_slurm,
)
from longrange.experiments.sweep.jobs import LAUNCH_ENV, SKIPPED, JobLock, describe_holder
from longrange.models.module import Diverged, LongRangeModule

log = logging.getLogger("longrange")


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
    start, given, cfg = time.perf_counter(), cfg, in_folder(cfg, out_dir)
    config = plain(cfg)
    record: dict[str, Any] = {"config_hash": config_hash(config), "config": config, "run_dir": str(out_dir)}
    record["choices"] = choices or {"model": model_name(record)}
    with JobLock(out_dir) as lock:
        # 1. one writer per job: another live process holding this folder means skip, write nothing
        if not lock.acquire():
            holder = describe_holder(lock.holder())
            log.info("%s: skipped: running elsewhere (%s)", out_dir, holder)
            return record | {"status": SKIPPED, "reason": f"running elsewhere ({holder})"}
        # 2. resume: done with this config -> skip; another config -> start afresh; else go on
        previous = read_result(out_dir)
        if (
            previous
            and previous.get("status") == "ok"
            and previous.get("config_hash") == record["config_hash"]
        ):
            log.info("%s: already done with this config, skipped", out_dir)
            return previous
        if previous and previous.get("config_hash") != record["config_hash"]:
            log.warning("%s: config changed since the last run, retraining from scratch", out_dir)
            clear(out_dir)
        elif previous and previous.get("status") == "running":  # its process died holding nothing: stale
            log.info("%s: the last run died without a result (interrupted, stale); resuming", out_dir)
        # 3. the config, checked (once per process: a single run's Hydra callback already did it)
        task, backbone = validate(given)  # as given: the config the launch's check already saw
        # 4. the record says "running" before anything trains (the report tells stale from live by the lock)
        keep_freed_memory()  # no page faults for every large tensor of every step (run/job.py)
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
        # 5. fit, then test: Lightning's Trainer with the config's logger and callbacks
        module, trainer, outcome = fit_and_test(cfg, task, record, checkpoint)
        # 6. the record, complete: status, accuracies, steps, time, memory
        results = module.results if module is not None else {}
        val, test = results.get("val", {}), results.get("test", {})
        record.update(
            outcome,
            steps=trainer.global_step if trainer is not None else 0,
            wall_time_s=time.perf_counter() - start,
            val_acc=val.get("acc"),
            val_acc_per_distance=val.get("acc_per_distance"),
            test_acc=test.get("acc"),
            test_acc_per_distance=test.get("acc_per_distance"),
            threshold=config["train"]["threshold"],
            steps_to_threshold=module.steps_to_threshold if module is not None else None,
            memory_peak_mb=peak_rss_mb(),  # this job's peak resident memory (calibrates the memory estimate)
        )
        write_json_atomic(out_dir / RESULT_FILE, record)
        # 7. TensorBoard's HParams row, and one log line
        if trainer is not None and trainer.logger is not None:
            trainer.logger.log_hyperparams(*tensorboard_hparams(config, record))
            trainer.logger.finalize(record["status"])
    accuracy = "–" if record["test_acc"] is None else f"{record['test_acc']:.3f}"
    log.info("%s: %s, test acc %s, %d steps in %.1f s", out_dir, record["status"], accuracy, record["steps"],
             record["wall_time_s"])  # fmt: skip
    return record


def in_folder(cfg: DictConfig, out_dir: Path) -> DictConfig:
    """The config with its run folder set to ``out_dir``: the trainer's root (which the checkpoint and
    diagnostics callbacks follow) and the logger's folder. Under Hydra both already are its output folder;
    a caller of ``train`` (a test, a notebook) gets the same layout from ``out_dir`` alone."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.trainer.default_root_dir = str(out_dir)
        cfg.logger.save_dir = str(out_dir)
    return cfg


def fit_and_test(
    cfg: DictConfig, task: Any, record: dict[str, Any], checkpoint: Path | None
) -> tuple[LongRangeModule | None, pl.Trainer | None, dict[str, Any]]:
    """Seed, build the module (the backbone's one real build), the data, the callbacks, the logger and the
    trainer; fit (resuming from ``checkpoint``), then test. Returns the module, the trainer and the
    outcome (``status``, ``error``, ``reason``); every exception becomes a status, none escapes. The
    process's environment and SIGTERM handler are as before when it returns (a reused worker's next job
    starts clean)."""
    module, trainer, data = None, None, None
    status, error, reason = "ok", None, None
    environment = dict(os.environ)
    stop = StopOnSigterm(interruptible=lambda: data is not None and data.generating)
    try:
        torch.set_num_threads(cfg.threads)  # explicit in every job: launchers change it silently otherwise
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        train_cfg = TrainConfig(**plain(cfg.train))
        module = LongRangeModule(
            plain(cfg.model), task.vocab.words, trained_distances=list(task.train_distances),
            **train_cfg.optimisation(),
        )  # fmt: skip
        record["parameters"] = module.num_parameters
        log.info("%s: %s parameters", cfg.model._target_, f"{module.num_parameters:,}")
        data = TaskDataModule(
            task, train_cfg.batch_size, train_cfg.eval_samples, cfg.seed, cfg.resources.eval_tokens
        )
        bar = bool(cfg.trainer.get("enable_progress_bar", True)) and sys.stdout.isatty()  # none in log files
        trainer = instantiate(
            cfg.trainer,
            logger=instantiate(cfg.logger),
            callbacks=build_callbacks(cfg.callbacks, record["config_hash"]),
            enable_progress_bar=bar,
        )
        with stop.deferred():  # inside Lightning's runs Lightning stops at the next batch boundary
            trainer.fit(module, data, ckpt_path=checkpoint)
        stop.raise_if_received()  # a SIGTERM after the last boundary Lightning checked
        if trainer.interrupted:
            status = "interrupted"
        else:
            with stop.deferred():
                trainer.test(module, data, verbose=False)
            stop.raise_if_received()  # a SIGTERM during the test's last batch
    except Diverged as exc:
        status, error, reason = "diverged", str(exc), str(exc)
    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C, or SIGTERM (Lightning then exits with 0)
        status = "interrupted"
        error = reason = "SIGTERM" if isinstance(exc, SIGTERMException) or stop.received else repr(exc)
    except Exception as exc:  # keep only the text: a live traceback would pin this job's memory for the sweep
        status, error, reason = "failed", traceback.format_exc(), one_line(exc)
        if requeued_by_slurm(exc):  # submitit's requeue (time limit, preemption) surfacing in the loop
            status, reason = "interrupted", "requeued by SLURM (time limit or preemption)"
    finally:
        stop.restore()
        os.environ.clear()
        os.environ.update(environment)
    return module, trainer, {"status": status, "error": error, "reason": reason}


if __name__ == "__main__":
    main()

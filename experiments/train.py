"""Train one model on one task and write result.json.

    python -m longrange.experiments.train model=gru data.distance=64
    python -m longrange.experiments.train -m experiment=distance_sweep      # a sweep (see conf/experiment)

Every artefact of a run (TensorBoard events, checkpoints, result.json) lands in Hydra's output folder.
A rerun in a folder whose result.json says "ok" for the same config is skipped (sweeps resume); a run
with a checkpoint but no "ok" result resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from longrange.datasets.datamodule import TaskDataModule
from longrange.experiments.callbacks import LogDecodedSamples, RandomState
from longrange.experiments.config import instantiate, plain, validate
from longrange.experiments.diagnostics import Diagnostics
from longrange.experiments.results import (
    RESULT_FILE,
    config_hash,
    is_done,
    read_result,
    rss_mb,
    write_json_atomic,
)
from longrange.models.module import Diverged, LongRangeModule

log = logging.getLogger("longrange")


@hydra.main(version_base="1.3", config_path="pkg://longrange.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra's task: one job. Returns the final validation accuracy (the sweepers' objective)."""
    runtime = HydraConfig.get().runtime
    result = train(cfg, Path(runtime.output_dir), choices=dict(runtime.choices))
    if result["status"] == "interrupted":  # Ctrl-C or SIGTERM: stop the whole sweep, non-zero
        sys.exit(143 if "SIGTERM" in (result["error"] or "") else 130)
    if result["status"] != "ok":  # raised here, not in train(): nothing of the failed job stays referenced
        last_line = (result["error"] or "").strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"job {result['status']} in {runtime.output_dir}: {last_line[0]}")
    return result["val_acc"]


def train(cfg: DictConfig, out_dir: Path, choices: dict[str, str] | None = None) -> dict:
    """Run one job in ``out_dir`` and return its result record (also written to result.json).

    ``choices``: the config-group choices (e.g. {"model": "gru"}) that name the run in reports.
    """
    config, start = plain(cfg), time.perf_counter()
    choices = choices or {"model": cfg.model._target_.rsplit(".", 1)[-1].lower()}
    record = {
        "config_hash": config_hash(config),
        "config": config,
        "run_dir": str(out_dir),
        "choices": choices,
    }
    previous = read_result(out_dir)
    if is_done(out_dir, record["config_hash"]):
        log.info("%s: already done with this config, skipped", out_dir)
        return previous
    if previous and previous.get("config_hash") != record["config_hash"]:  # same folder, new config
        log.info("%s: config changed since the last run, retraining from scratch", out_dir)
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
        (out_dir / "diagnostics.json").unlink(missing_ok=True)
    environment = dict(os.environ)  # restored at the end: a reused worker's next job must not see changes
    task, _ = validate(cfg)
    versions = {"torch": torch.__version__, "lightning": pl.__version__}
    record.update(status="running", chance=task.chance_level, threads=cfg.threads, versions=versions)
    record["memory_mb_at_start"] = rss_mb()
    write_json_atomic(out_dir / RESULT_FILE, record)

    module, trainer = None, None
    error = None
    try:
        torch.set_num_threads(cfg.threads)  # explicit in every job: launchers change it silently otherwise
        torch.set_flush_denormal(True)  # denormal floats (vanishing RNN gradients) are 10-100x slower on x86
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        t = config["train"]
        hparams = {k: t[k] for k in ("lr", "weight_decay", "warmup_steps", "min_lr_ratio", "threshold")}
        module = LongRangeModule(model=config["model"], vocab=task.vocab.words, **hparams)
        record["parameters"] = module.num_parameters
        log.info("%s: %s parameters", cfg.model._target_, f"{module.num_parameters:,}")
        data = TaskDataModule(task, t["batch_size"], t["eval_samples"], cfg.seed)
        trainer = instantiate(cfg.trainer, logger=instantiate(cfg.logger), callbacks=callbacks(cfg, out_dir))
        checkpoint = out_dir / "checkpoints" / "last.ckpt"
        trainer.fit(module, data, ckpt_path=checkpoint if checkpoint.exists() else None)
        status = "interrupted" if trainer.interrupted else "ok"
        if status == "ok":
            trainer.test(module, data, verbose=False)
    except Diverged as exc:
        status, error = "diverged", str(exc)
    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C, or SIGTERM (Lightning then exits with 0)
        status, error = "interrupted", "SIGTERM" if isinstance(exc, SIGTERMException) else repr(exc)
    except Exception:  # keep only the text: a live traceback would pin this job's memory for the sweep
        status, error = "failed", traceback.format_exc()
    finally:
        os.environ.clear()
        os.environ.update(environment)

    results = module.results if module is not None else {}
    val, test = results.get("val", {}), results.get("test", {})
    record.update(
        status=status,
        error=error,
        steps=trainer.global_step if trainer is not None else 0,
        wall_time_s=time.perf_counter() - start,
        val_acc=val.get("acc"),
        val_acc_per_distance=val.get("acc_per_distance"),
        test_acc=test.get("acc"),
        test_acc_per_distance=test.get("acc_per_distance"),
        threshold=config["train"]["threshold"],
        steps_to_threshold=module.steps_to_threshold if module is not None else None,
    )
    write_json_atomic(out_dir / RESULT_FILE, record)
    if trainer is not None:
        metrics = {f"hparams/{k}": record[k] for k in ("val_acc", "test_acc") if record[k] is not None}
        trainer.logger.log_hyperparams(config | {"parameters": record.get("parameters")}, metrics)
        trainer.logger.finalize(status)
    accuracy = "–" if record["test_acc"] is None else f"{record['test_acc']:.3f}"
    log.info("%s: %s, test acc %s, %d steps in %.1f s", out_dir, status, accuracy, record["steps"],
             record["wall_time_s"])  # fmt: skip
    return record


def callbacks(cfg: DictConfig, out_dir: Path) -> list[pl.Callback]:
    every = cfg.trainer.val_check_interval
    found = [
        ModelCheckpoint(
            dirpath=out_dir / "checkpoints", save_last=True, save_top_k=0, every_n_train_steps=every
        ),
        LearningRateMonitor(logging_interval="step"),
        LogDecodedSamples(),
        RandomState(),
        Diagnostics(out_dir),
    ]
    if cfg.train.budget == "to_threshold":
        threshold = cfg.train.threshold
        found.append(EarlyStopping("val/acc", mode="max", stopping_threshold=threshold, patience=10**9))
    return found


if __name__ == "__main__":
    main()

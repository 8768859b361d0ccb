"""Train one model on one task and write result.json.

    python -m longrange.experiments.train model=gru data.distance=64
    python -m longrange.experiments.train -m experiment=distance_sweep      # a sweep (see conf/experiment)

Every artefact of a run (TensorBoard events, checkpoints, result.json) lands in Hydra's output folder.
A rerun in a folder whose result.json says "ok" for the same config is skipped (sweeps resume); a run
with a checkpoint but no "ok" result resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from longrange.datasets.datamodule import TaskDataModule
from longrange.experiments.callbacks import LogDecodedSamples
from longrange.experiments.config import instantiate, plain, validate
from longrange.experiments.results import RESULT_FILE, config_hash, is_done, read_result, write_json_atomic
from longrange.models.module import Diverged, LongRangeModule
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

log = logging.getLogger("longrange")


@hydra.main(version_base="1.3", config_path="pkg://longrange.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    return train(cfg, Path(HydraConfig.get().runtime.output_dir))


def train(cfg: DictConfig, out_dir: Path) -> float | None:
    """Run one job in ``out_dir``; returns the final validation accuracy (the sweepers' objective)."""
    config, start = plain(cfg), time.perf_counter()
    record = {"config_hash": config_hash(config), "config": config, "run_dir": str(out_dir)}
    if is_done(out_dir, record["config_hash"]):
        log.info("%s: already done with this config, skipped", out_dir)
        return read_result(out_dir)["val_acc"]
    task, _ = validate(cfg)
    torch.set_num_threads(cfg.threads)  # explicit in every job: launchers change it silently otherwise
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    t = config["train"]
    hparams = {k: t[k] for k in ("lr", "weight_decay", "warmup_steps", "min_lr_ratio", "threshold")}
    module = LongRangeModule(model=config["model"], vocab=task.vocab.words, **hparams)
    log.info("%s: %s parameters", cfg.model._target_, f"{module.num_parameters:,}")
    data = TaskDataModule(task, t["batch_size"], t["eval_samples"], cfg.seed)
    trainer = instantiate(cfg.trainer, logger=instantiate(cfg.logger), callbacks=callbacks(cfg, out_dir))
    checkpoint = out_dir / "checkpoints" / "last.ckpt"
    record.update(
        status="running",
        parameters=module.num_parameters,
        chance=task.chance_level,
        threads=cfg.threads,
        versions={"torch": torch.__version__, "lightning": pl.__version__},
    )
    write_json_atomic(out_dir / RESULT_FILE, record)

    error, exit_code = None, 0
    try:
        trainer.fit(module, data, ckpt_path=checkpoint if checkpoint.exists() else None)
        status = "interrupted" if trainer.interrupted else "ok"
        if status == "ok":
            trainer.test(module, data, verbose=False)
    except Diverged as exc:
        status, error = "diverged", str(exc)
    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C, or SIGTERM (Lightning exits 0 on it)
        status, error, exit_code = "interrupted", repr(exc), 130
    except Exception:  # keep only the text: a live traceback would pin this job's memory for the sweep
        status, error = "failed", traceback.format_exc()

    val, test = module.results.get("val", {}), module.results.get("test", {})
    record.update(
        status=status,
        error=error,
        steps=trainer.global_step,
        wall_time_s=time.perf_counter() - start,
        val_acc=val.get("acc"),
        val_acc_per_distance=val.get("acc_per_distance"),
        test_acc=test.get("acc"),
        test_acc_per_distance=test.get("acc_per_distance"),
        threshold=t["threshold"],
        steps_to_threshold=module.steps_to_threshold,
    )
    write_json_atomic(out_dir / RESULT_FILE, record)
    metrics = {f"hparams/{k}": record[k] for k in ("val_acc", "test_acc") if record[k] is not None}
    trainer.logger.log_hyperparams(config | {"parameters": record["parameters"]}, metrics)
    trainer.logger.finalize(status)
    log.info("%s: %s, val acc %s, test acc %s", out_dir, status, record["val_acc"], record["test_acc"])
    if exit_code:
        sys.exit(exit_code)
    if status != "ok":
        raise RuntimeError(f"job {status} in {out_dir}: {(error or '').strip().splitlines()[-1:]}")
    return record["val_acc"]


def callbacks(cfg: DictConfig, out_dir: Path) -> list[pl.Callback]:
    every = cfg.trainer.val_check_interval
    found = [
        ModelCheckpoint(
            dirpath=out_dir / "checkpoints", save_last=True, save_top_k=0, every_n_train_steps=every
        ),
        LearningRateMonitor(logging_interval="step"),
        LogDecodedSamples(),
    ]
    if cfg.train.budget == "to_threshold":
        threshold = cfg.train.threshold
        found.append(EarlyStopping("val/acc", mode="max", stopping_threshold=threshold, patience=10**9))
    return found


if __name__ == "__main__":
    main()

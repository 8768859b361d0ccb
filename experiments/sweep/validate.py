"""The launch's check: every job's config, before any job starts and before any folder is made."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from longrange.experiments.run import resources
from longrange.experiments.run.config import ConfigError, validate
from longrange.experiments.sweep.grid import composed, forget_composed, grid_points


class ValidateConfig(Callback):
    """Hydra callback: validate a single run, or every point of a sweep grid, before any job starts
    (and before Hydra creates any output folder), and refuse a job whose estimated peak memory exceeds
    its limit (``resources.check``: the limit of a sweep's jobs accounts for those that run at once).
    Hydra turns a callback's exceptions into warnings, so a bad config ends the process here with exit
    code 2 and the one-line message."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            cfg = _without_hydra(config)
            task, _ = validate(cfg)
            resources.check(cfg, task)
        except ConfigError as error:
            raise SystemExit(f"config error: {error}") from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        overrides = list(config.hydra.overrides.task)
        points = grid_points(sweeper.get("params"), overrides, sweeper.get("per_model"))
        parallel, reserved = resources.parallel_jobs(config.hydra.get("launcher"), len(points))
        forget_composed()  # composed once here, then read again by the sweeper's start order
        for point in points:
            try:
                cfg = composed(config.hydra.job.config_name, point)
                task, _ = validate(cfg)
                resources.check(cfg, task, parallel, reserved)
            except ConfigError as error:
                raise SystemExit(f"config error in sweep point {','.join(point)}: {error}") from None


def _without_hydra(config: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(config, [str(k) for k in config.keys() if k != "hydra"])

"""Shared fixtures: the project's real configs through Hydra's compose API, and parametrization over the
files of conf/model/ and conf/data/ (a new model or task YAML is tested without editing any test)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import CONF, compose_config
from omegaconf import DictConfig

# One torch thread, as every training job uses (config key `threads`): with the default of one thread
# per core, OpenMP's spin-waiting made small models' tests many times slower on a busy 2-core machine.
torch.set_num_threads(1)

MODEL_CONFIGS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATA_CONFIGS = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Any test taking ``model_name`` / ``data_name`` runs once per file in conf/model/ / conf/data/."""
    if "model_name" in metafunc.fixturenames:
        metafunc.parametrize("model_name", MODEL_CONFIGS)
    if "data_name" in metafunc.fixturenames:
        metafunc.parametrize("data_name", DATA_CONFIGS)


@pytest.fixture
def compose() -> Callable[..., DictConfig]:
    return compose_config


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_config("model=gru", ...)``: a tiny, fast run writing into tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose_config(["trainer=debug", "train.eval_samples=32", "data.load=0", *overrides], tmp_path)

    return make

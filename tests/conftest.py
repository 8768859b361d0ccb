"""Shared fixtures: compose the project's real configs with Hydra's compose API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from omegaconf import DictConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
MODEL_CONFIGS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATA_CONFIGS = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))


def compose_config(overrides: list[str], out_dir: Path | None = None) -> DictConfig:
    """The root config with overrides; artefacts go to ``out_dir`` (normally Hydra's output folder)."""
    extra = [] if out_dir is None else [f"trainer.default_root_dir={out_dir}", f"logger.save_dir={out_dir}"]
    with initialize_config_module("longrange.conf", version_base="1.3"):
        return hydra_compose("config", overrides=overrides + extra)


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
        return compose_config(["trainer=debug", "train.eval_samples=32", *overrides], tmp_path)

    return make

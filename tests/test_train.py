"""End to end on CPU at tiny sizes: train() and the command line write result.json and TensorBoard events."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from longrange.experiments.results import config_hash
from longrange.experiments.train import train


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    return accumulator.Reload()


def test_each_model_trains_and_logs(make_config, model_name: str, tmp_path: Path) -> None:
    cfg = make_config(f"model={model_name}", "data.distance=[4,8]")
    assert train(cfg, tmp_path)["status"] == "ok"
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "ok" and result["steps"] == 4
    assert result["config_hash"] == config_hash(result["config"])
    assert result["config"]["model"]["_target_"] == cfg.model._target_
    assert set(result["test_acc_per_distance"]) == {"4", "8"}
    assert result["parameters"] > 1000 and result["test_acc"] is not None and result["val_acc"] is not None
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()

    tags = events(tmp_path).Tags()
    assert {"train/loss", "train/acc", "val/acc", "val/acc/d=4", "val/acc/d=8", "test/acc"} <= set(
        tags["scalars"]
    )
    assert any(t.startswith("lr-AdamW") for t in tags["scalars"])  # learning rate per param group
    assert "hparams/test_acc" in tags["scalars"]  # the real final metric, not hp_metric = -1
    assert "hp_metric" not in tags["scalars"]
    assert any(t.startswith("samples") for t in tags["tensors"])  # decoded validation samples


def test_hparams_carry_the_resolved_config(make_config, tmp_path: Path) -> None:
    train(make_config("model=gru"), tmp_path)
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = events(tmp_path)
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    hparams = {k: (v.string_value or v.number_value) for k, v in info.hparams.items()}
    assert hparams["model/_target_"] == "longrange.models.gru.GRU"
    assert hparams["data/distance"] == 32 and hparams["trainer/max_steps"] == 4
    assert not any("${" in str(v) for v in hparams.values())


def test_command_line_run_writes_everything_into_its_own_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "longrange.experiments.train", "model=gru", "data.distance=8",
               "trainer=debug", "train.eval_samples=16", f"hydra.run.dir={run_dir}"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"
    assert (run_dir / "tensorboard").is_dir() and (run_dir / ".hydra" / "config.yaml").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no ./lightning_logs, nothing else
    assert "parameters" in done.stdout + done.stderr


def test_bad_override_on_the_command_line_fails_before_any_folder_exists(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "longrange.experiments.train", "data.distance=-3", "hydra.run.dir=out"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "config error: data.distance=-3 is out of range; allowed: an integer in [0, inf]" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_each_model_trains_on_gpu(make_config, model_name: str, tmp_path: Path) -> None:
    train(make_config(f"model={model_name}", "trainer=gpu", "trainer.max_steps=4"), tmp_path)
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "ok"

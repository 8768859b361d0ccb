"""Sweeps through Hydra's own launchers: collision-free folders, resume, report, TensorBoard's server."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
from helpers import get_json, run_cli, serving_tensorboard, sweep_results

from longrange.experiments.report.build import report
from longrange.experiments.sweep.order import job_cost

TINY = [
    "data.load=0",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "train.eval_samples=16",
    "train.batch_size=8",
]


def sweep(sweep_dir: Path, *overrides: str, launcher: str = "basic") -> subprocess.CompletedProcess:
    args = ["-m", "experiment=distance_sweep", f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep_dir}",
            "model=gru,attention", "data.distance=2,5", *TINY, *overrides]  # fmt: skip
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    return run_cli(args, cwd=sweep_dir.parent)


results = sweep_results


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("sweeps") / "tiny"
    done = sweep(sweep_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep_dir


def test_sweep_writes_one_folder_per_job_named_by_its_overrides(finished_sweep: Path) -> None:
    found = results(finished_sweep)
    assert len(found) == 4 and all(r["status"] == "ok" for r in found.values())
    assert (
        "data.distance=5,data.load=0,model=gru,seed=0,train.batch_size=8,train.eval_samples=16,"
        in "".join(found)
    )
    assert {r["choices"]["model"] for r in found.values()} == {"gru", "attention"}
    assert len({r["config_hash"] for r in found.values()}) == 4
    assert sorted(p.name for p in finished_sweep.parent.iterdir()) == ["tiny"]  # nothing outside the sweep


def test_jobs_start_longest_first(finished_sweep: Path) -> None:
    """Hydra's grid order is distance 2 then 5 for each model; the project's sweeper starts the longer
    sequences first (the basic launcher runs one job at a time: finishing order is starting order)."""
    [progress] = (finished_sweep / ".progress").glob("*[0-9].jsonl")
    started = [json.loads(line)["job"] for line in progress.read_text().splitlines()]
    for model in ("gru", "attention"):
        mine = [name for name in started if f"model={model}," in name]
        assert ["data.distance=5" in name for name in mine] == [True, False], started


def test_job_cost_grows_with_steps_and_length(compose) -> None:
    base = ["model=gru", "data.load=0", "trainer.val_check_interval=100"]
    cost = {
        (steps, distance): job_cost(
            compose([*base, f"trainer.max_steps={steps}", f"data.distance={distance}"])
        )
        for steps in (100, 400)
        for distance in (8, 64)
    }
    assert cost[400, 8] > 2 * cost[100, 8] and cost[100, 64] > 2 * cost[100, 8]


@pytest.mark.slow
def test_rerun_skips_finished_jobs_and_retrains_changed_configs(finished_sweep: Path) -> None:
    before = results(finished_sweep)
    again = sweep(finished_sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already done with this config, skipped") == 4
    assert results(finished_sweep) == before
    # A changed value that does not change the folder names (excluded from them) must retrain, not reuse.
    exclude = "hydra.job.config.override_dirname.exclude_keys=[experiment,name,train.lr]"
    changed = sweep(finished_sweep, "train.lr=0.002", exclude)
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert changed.stdout.count("config changed since the last run, retraining from scratch") == 4
    assert all(r["config"]["train"]["lr"] == 0.002 for r in results(finished_sweep).values())


def test_report_matches_the_result_files(finished_sweep: Path) -> None:
    paths = report(finished_sweep)
    rows = list(csv.DictReader(paths["csv"].open()))
    by_dir = {Path(row["run_dir"]).name: row for row in rows}
    for name, result in results(finished_sweep).items():
        row = by_dir[name]
        assert row["status"] == "ok"
        assert math.isclose(float(row["test_acc"]), result["test_acc"])
        assert int(row["parameters"]) == result["parameters"] and int(row["steps"]) == result["steps"]
    assert paths["plot"].stat().st_size > 10_000
    table = paths["markdown"].read_text()
    assert "## Regime: fixed" in table and "| gru | " in table and "4 jobs: 4 ok" in table
    assert "horizon (>= 0.9)" in table


def test_report_lists_missing_and_failed_jobs(finished_sweep: Path, tmp_path: Path) -> None:
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(finished_sweep, partial)
    victims = sorted(partial.glob("*/result.json"))
    victims[0].unlink()  # a job that never wrote its result
    failed = json.loads(victims[1].read_text()) | {"status": "failed", "error": "RuntimeError: boom"}
    victims[1].write_text(json.dumps(failed))
    table = report(partial)["markdown"].read_text()
    assert "4 jobs: 1 failed, 1 missing, 2 ok" in table
    assert "- missing: `" + victims[0].parent.name in table and "RuntimeError: boom" in table


@pytest.mark.slow
def test_per_model_axes_and_the_rate_chosen_on_the_first_seed(tmp_path: Path) -> None:
    """One command, two stages: seed 0 over both rates at each GRU width (and the bag model), then seed 1
    only at the rate that won on seed 0's validation accuracy, per point; the report expects those jobs."""
    sweep_dir = tmp_path / "staged"
    args = ["-m", "experiment=distance_sweep", "hydra/launcher=basic", f"hydra.sweep.dir={sweep_dir}",
            "model=gru,bag", "data.distance=2", "train.lr=1e-3,3e-2", "seed=0,1", *TINY,
            'hydra.sweeper.per_model={gru:{model.width:"8,16"}}',
            "hydra.sweeper.select_on_first_seed=train.lr"]  # fmt: skip
    done = run_cli(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    found = results(sweep_dir)
    assert len(found) == 3 * 2 + 3 and all(r["status"] == "ok" for r in found.values())
    [progress] = (sweep_dir / ".progress").glob("*[0-9].jsonl")
    started = [json.loads(line)["job"] for line in progress.read_text().splitlines()]
    assert ["seed=0" in name for name in started] == [True] * 6 + [False] * 3  # the first stage first
    for point in ({"model.width=8", "model=gru"}, {"model.width=16", "model=gru"}, {"model=bag"}):
        mine = [r for name, r in found.items() if point <= set(name.split(","))]
        first = {r["config"]["train"]["lr"]: r["val_acc"] for r in mine if r["config"]["seed"] == 0}
        [later] = [r for r in mine if r["config"]["seed"] == 1]
        assert later["config"]["train"]["lr"] == max(first, key=lambda lr: (first[lr], -lr))
    assert "9 jobs: 9 ok" in report(sweep_dir)["markdown"].read_text()  # no missing job


def test_tensorboard_serves_the_report_and_every_job(finished_sweep: Path) -> None:
    """TensorBoard's own server reads the sweep: the report's figures and table in the ``summary`` run, and
    every job's training curves."""
    report(finished_sweep)

    def loaded(address: str) -> bool:
        return (
            "summary" in get_json(f"{address}/data/plugin/images/tags")
            and len(get_json(f"{address}/data/plugin/scalars/tags")) == 4
        )

    with serving_tensorboard(finished_sweep, loaded, timeout=90) as address:
        plugin = f"{address}/data/plugin"
        assert "Sweep/accuracy vs distance" in get_json(f"{plugin}/images/tags")["summary"]
        assert "Sweep/report/text_summary" in get_json(f"{plugin}/text/tags")["summary"]
        assert all(run.endswith("tensorboard") for run in get_json(f"{plugin}/scalars/tags"))  # one per job


@pytest.mark.slow
def test_submitit_local_launcher_runs_and_resumes(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "submitit"
    done = sweep(sweep_dir, "model=gru", launcher="local")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(results(sweep_dir)) == 2 and all(r["status"] == "ok" for r in results(sweep_dir).values())
    before = results(sweep_dir)
    assert sweep(sweep_dir, "model=gru", launcher="local").returncode == 0
    assert results(sweep_dir) == before  # skipped: nothing rewritten


def test_a_launch_composes_each_point_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launch's check and the start order both need every point's config: Hydra composes each point
    once (a compose costs tenths of a second; the state_tracking preset has 216 points), and each caller
    gets its own copy."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import open_dict

    from longrange.experiments.sweep import grid
    from longrange.experiments.sweep.order import estimates
    from longrange.experiments.sweep.validate import ValidateConfig

    calls: list[tuple[str, ...]] = []

    def counting(config_name: str, overrides: list[str]) -> object:
        calls.append(tuple(overrides))
        return hydra_compose(config_name, overrides=overrides)

    monkeypatch.setattr(grid, "compose", counting)
    task = ["experiment=distance_sweep", "model=bag", "data.distance=2,5", *TINY]
    with initialize_config_module("longrange.conf", version_base="1.3"):
        config = hydra_compose("config", overrides=task[:2], return_hydra_config=True)
        with open_dict(config):
            config.hydra.overrides.task, config.hydra.job.config_name = task, "config"
        ValidateConfig().on_multirun_start(config)
        points = grid.grid_points(config.hydra.sweeper.params, task)
        costs = estimates("config", points)
        assert len(points) == 2 and len(calls) == 2 and len(set(calls)) == 2 and costs[0] != costs[1]
        first = grid.composed("config", points[0])
        first.trainer.max_steps = 1000  # a caller's change stays its own
        assert grid.composed("config", points[0]).trainer.max_steps == 3 and len(calls) == 2

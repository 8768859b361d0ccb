"""The report's numbers from result files: regimes, series, controls, position reliance, selection on
validation. Synthetic result.json files, so every expected number is known exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from longrange.experiments.report import frontier
from longrange.experiments.report.analysis import (
    Job,
    _parse,
    aggregate,
    baseline_of,
    below_baseline,
    label_series,
    load_jobs,
    regime,
    select_on_validation,
)
from longrange.experiments.report.build import report
from longrange.experiments.results import write_json_atomic


def write_job(
    sweep: Path, name: str, model: str, distance: Any, test: dict, val: dict | None = None, **config: Any
) -> None:
    """A finished job's result.json: ``test`` / ``val`` map distance -> accuracy. ``config`` sets more of
    the config: ``seed``, ``eval_distance``, ``data`` entries, ``knobs`` (model entries), ``width``, other
    sections; ``state`` the state size, ``parameters`` the parameter count."""
    data = {"distance": distance, "eval_distance": config.pop("eval_distance", None)} | config.pop("data", {})
    node = {"_target_": f"x.{model}", "width": config.pop("width", 64)}
    state, parameters, val = config.pop("state", 240), config.pop("parameters", 1000), val or test
    node |= config.pop("knobs", {})
    choices, task, chance = {"model": model}, config.pop("task", None), config.pop("chance", 1 / 32)
    if task:
        choices["data"], data["_target_"] = task, f"x.{task.title()}"
    full = {"model": node, "data": data, "seed": config.pop("seed", 0), "train": {"lr": 1e-3}} | config
    result = {
        "status": "ok", "config": full, "config_hash": name, "choices": choices,
        "chance": chance,
        "parameters": parameters, "steps": 10, "state_size": {str(d): state for d in test},
        "test_acc_per_distance": {str(d): a for d, a in test.items()}, "test_acc": min(test.values()),
        "val_acc_per_distance": {str(d): a for d, a in val.items()}, "val_acc": min(val.values()),
    }  # fmt: skip
    write_json_atomic(sweep / name / "result.json", result)


@pytest.mark.parametrize(
    ("distance", "eval_distance", "expected"),
    [
        (16, None, "fixed"),
        (16, [14, 15, 16, 17, 18], "fixed"),  # neighbours measure position reliance, not a regime change
        ([8, 16, 32], None, "mixed"),
        ([8, 16, 32], [8, 32], "mixed"),
        ([8, 16], [8, 16, 32, 256], "extrapolation"),
        ([8, 16], [4, 8, 16], "extrapolation"),
    ],
)
def test_regime_from_the_training_and_evaluation_distances(distance, eval_distance, expected) -> None:
    assert regime({"data.distance": distance, "data.eval_distance": eval_distance}) == expected


def test_fixed_runs_give_one_point_and_their_neighbours_give_position_reliance(tmp_path: Path) -> None:
    for d in (8, 16):
        near = {d - 2: 0.1, d - 1: 0.2, d: 1.0, d + 1: 0.3, d + 2: 0.4}
        write_job(tmp_path, f"a{d}", "attention", d, eval_distance=list(near), test=near)
    table = aggregate(load_jobs(tmp_path))
    cells = table[("fixed", "attention")]
    assert sorted(cells) == [8, 16]  # the curve holds the training distances only
    assert cells[8].accuracies == [1.0] and cells[8].neighbours == [pytest.approx(0.25)]
    text = report(tmp_path)["markdown"].read_text()
    assert "0.250 (trained: 1.000)" in text  # mean over the untrained D-2..D+2, beside the trained accuracy


def test_mixed_runs_give_a_curve_per_distance_and_seeds_are_averaged(tmp_path: Path) -> None:
    for seed, acc in ((0, 0.5), (1, 0.7)):
        write_job(tmp_path, f"g{seed}", "gru", [8, 16], seed=seed, test={8: 1.0, 16: acc})
    cells = aggregate(load_jobs(tmp_path))[("mixed", "gru")]
    assert cells[16].mean == pytest.approx(0.6) and len(cells[16].accuracies) == 2
    assert cells[16].ci95 == pytest.approx(12.71 * 0.1414213 / 1.4142136, rel=1e-4)  # t(1) * sd / sqrt(2)


def test_series_below_the_order_free_baseline_are_marked(tmp_path: Path) -> None:
    write_job(tmp_path, "bag", "bag", [8, 16], test={8: 0.5, 16: 0.5})
    write_job(tmp_path, "lstm", "lstm", [8, 16], test={8: 1.0, 16: 0.03})
    write_job(tmp_path, "gru", "gru", [8, 16], test={8: 1.0, 16: 0.49})  # within the margin: not marked
    table = aggregate(load_jobs(tmp_path))
    baseline = baseline_of(table, "mixed", "lstm")
    assert baseline is table[("mixed", "bag")] and baseline_of(table, "mixed", "bag") is None
    assert below_baseline(table[("mixed", "lstm")][16], baseline[16])
    assert not below_baseline(table[("mixed", "lstm")][8], baseline[8])
    assert not below_baseline(table[("mixed", "gru")][16], baseline[16])
    text = report(tmp_path)["markdown"].read_text()
    assert "| lstm | 1.000 | 0.030 † |" in text and "| gru | 1.000 | 0.490 |" in text
    assert "below the order-free baseline (`bag`): failure to learn, not a memory limit" in text


def test_selection_uses_validation_and_reports_test(tmp_path: Path) -> None:
    """The learning rate with the best validation accuracy wins even when another has a better test score."""
    for lr, val, test in ((1e-3, 0.9, 0.2), (3e-3, 0.5, 0.99)):
        write_job(tmp_path, f"lr{lr}", "mamba", [8, 16], train={"lr": lr}, test={8: test, 16: test},
                  val={8: val, 16: val})  # fmt: skip
    jobs = select_on_validation(load_jobs(tmp_path), "train.lr")
    assert [job.config["train.lr"] for job in jobs] == [1e-3]
    assert jobs[0].series == "mamba lr=0.001 (selected on validation)"
    text = report(tmp_path, select="train.lr")["markdown"].read_text()
    assert "| mamba lr=0.001 (selected on validation) | 0.200 | 0.200 |" in text
    assert "`train.lr` selected per series on validation accuracy, never on test" in text


def test_selection_compares_values_on_the_seeds_they_share(tmp_path: Path) -> None:
    """Every rate ran seed 0, the first pick also seeds 1 and 2: the comparison is on seed 0 alone (else a
    rate with lucky extra seeds could win), and a tie goes to the rate with more seeds."""
    write_job(tmp_path, "a0", "gru", [8], {8: 0.5}, {8: 0.9}, seed=0, train={"lr": 1e-3})
    for seed, val in ((0, 0.8), (1, 1.0), (2, 1.0)):
        write_job(tmp_path, f"b{seed}", "gru", [8], {8: 0.5}, {8: val}, seed=seed, train={"lr": 3e-3})
    assert {job.config["train.lr"] for job in select_on_validation(load_jobs(tmp_path), "train.lr")} == {1e-3}
    write_job(tmp_path, "b0", "gru", [8], {8: 0.5}, {8: 0.9}, seed=0, train={"lr": 3e-3})  # a tie on seed 0
    assert {job.config["train.lr"] for job in select_on_validation(load_jobs(tmp_path), "train.lr")} == {3e-3}


def test_capacity_and_state_size_views_appear_when_the_sweep_varies_them(tmp_path: Path) -> None:
    for pairs in (2, 4):
        for width, acc in ((32, 0.4), (128, 0.9)):
            test = {8: acc, 16: acc}
            write_job(tmp_path, f"p{pairs}w{width}", "gru", [8, 16], test, state=width, width=width,
                      data={"num_pairs": pairs})  # fmt: skip
    paths = report(tmp_path)
    assert paths["accuracy_vs_num_pairs"].exists() and paths["accuracy_vs_state_size"].exists()
    text = paths["markdown"].read_text()
    assert "## Capacity: accuracy against num_pairs" in text
    assert "| mixed | gru width=128 | 0.900 | 0.900 |" in text  # num_pairs 2 and 4
    assert "| gru num_pairs=2 | gru num_pairs=2 width=32 | 32 | 1,000 | 1 | 0.400 | 0/1 | – |" in text
    assert "| gru num_pairs=2 [mixed] | 128 | 32 | 16 .. 64 |" in text  # states per pair


def test_the_frontier_draws_one_line_per_family_and_tells_holding_from_learning(tmp_path: Path) -> None:
    """Each family's state knob (found from the results: the model key whose values change the state)
    leaves the family's name; below the threshold, attention with the nearest parameter count decides:
    it reaches the threshold (cannot hold) or fails too (did not learn)."""
    points = {  # model, heads or width, state, parameters, accuracy
        "d2": ("deltanet", {"num_heads": 2}, 5248, 110_000, 1.0),
        "d8": ("deltanet", {"num_heads": 8}, 2176, 111_000, 0.95),
        "d16": ("deltanet", {"num_heads": 16}, 1664, 112_000, 0.3),
        "g64": ("gru", {"width": 64}, 64, 42_000, 0.1),
        "a32": ("attention", {"width": 32}, 10496, 34_000, 0.2),
        "a64": ("attention", {"width": 64}, 20992, 117_000, 1.0),
    }
    for name, (model, knob, state, parameters, acc) in points.items():
        for seed, shift in ((0, 0.0), (1, -0.01)):
            test = {32: acc + shift, 64: acc + shift}
            write_job(tmp_path, f"{name}s{seed}", model, [32, 64], test, seed=seed, state=state,
                      parameters=parameters, knobs=knob, data={"num_pairs": 8})  # fmt: skip
    for seed in (0, 1):  # attention failing another task (16 pairs) is no control for these
        write_job(tmp_path, f"a64p16s{seed}", "attention", [32, 64], {32: 0.2, 64: 0.2}, seed=seed,
                  state=25088, parameters=117_000, knobs={"width": 64}, data={"num_pairs": 16})  # fmt: skip
    paths = report(tmp_path)
    assert paths["accuracy_vs_state_size"].exists()
    text = paths["markdown"].read_text()
    assert "| deltanet | deltanet num_heads=16 | 1,664 | 112,000 | 2 | 0.295 ± 0.064 | 0/2 |" in text
    assert "cannot hold (attention at 117k parameters: 0.995)" in text  # DeltaNet at 16 heads
    assert "did not learn ‡ (attention at 34k parameters: 0.195)" in text  # the GRU at width 64
    assert "| 34,000 | 2 | 0.195 ± 0.064 | 0/2 | did not learn ‡ (its cache holds every token)" in text
    assert "| deltanet [mixed] | 2,176 | 1,664 | 208 .. 272 |" in text  # smallest state >= 0.9, per pair
    assert "| gru [mixed] | not reached | none measured | – |" in text  # its only point did not learn


def test_a_frontier_at_two_pair_counts_draws_a_panel_each_with_one_legend(tmp_path: Path) -> None:
    """Sweeps at 8 and 16 pairs reported together (one parent folder): a panel per pair count, over the
    same x range, each family under one name and colour in both, and one legend for the figure."""
    for pairs, accuracies in ((8, (1.0, 0.9, 0.3)), (16, (0.95, 0.5, 0.1))):
        for heads, state, acc in zip((2, 8, 16), (5248, 2176, 1664), accuracies, strict=True):
            write_job(tmp_path / f"p{pairs}", f"d{heads}", "deltanet", [32, 64], {32: acc, 64: acc},
                      state=state, knobs={"num_heads": heads}, data={"num_pairs": pairs})  # fmt: skip
        write_job(tmp_path / f"p{pairs}", "a64", "attention", [32, 64], {32: 1.0, 64: 1.0},
                  state=20992 + pairs, knobs={"width": 64}, data={"num_pairs": pairs})  # fmt: skip
        write_job(tmp_path / f"p{pairs}", "bag", "bag", [32, 64], {32: 0.1, 64: 0.1}, state=65,
                  data={"num_pairs": pairs})  # fmt: skip
    jobs = load_jobs(tmp_path)
    label_series(jobs)
    _, drawn = frontier.section(jobs, 0.9, None, "")
    axes = [ax for ax in drawn.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == [
        "8 pairs to hold (mixed distances)",
        "16 pairs to hold (mixed distances)",
    ]
    assert axes[0].get_xlim() == axes[1].get_xlim()
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in axes]
    assert colours[0]["deltanet"] == colours[1]["deltanet"] and "attention" in colours[1]
    legends = [ax.get_legend() for ax in axes]
    assert legends[0] is None and legends[1] is not None
    labels = [text.get_text() for text in legends[1].get_texts()]
    assert (
        sorted(labels)
        == sorted(set(labels))
        == ["attention", "chance", "deltanet", "order-free baseline (bag)"]
    )


def test_the_control_of_a_point_trained_longer_is_attention_trained_as_long(tmp_path: Path) -> None:
    """16 pairs: attention did not learn in 1000 steps and did in 3000, so DeltaNet failing at 1000 steps
    did not learn, and failing at 3000 steps cannot hold."""
    for steps, attention in ((1000, 0.6), (3000, 1.0)):
        for model, acc, state in (("attention", attention, 25088), ("deltanet", 0.5, 1664)):
            write_job(tmp_path, f"{model}{steps}", model, [32, 64], {32: acc, 64: acc}, state=state,
                      data={"num_pairs": 16}, trainer={"max_steps": steps})  # fmt: skip
    text = report(tmp_path)["markdown"].read_text()
    row = "| deltanet max_steps={0} | deltanet max_steps={0} | 1,664 | 1,000 | 1 | 0.500 | 0/1 | {1} |"
    assert row.format(1000, "did not learn ‡ (attention at 1k parameters: 0.600)") in text
    assert row.format(3000, "cannot hold (attention at 1k parameters: 1.000)") in text


def imported_by(*packages: str) -> set[str]:
    """The modules a fresh interpreter holds after importing every module of ``packages``."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"for name in {list(packages)!r}:\n"
        "    package = importlib.import_module(name)\n"
        "    for info in pkgutil.iter_modules(package.__path__):\n"
        "        if info.name != '__main__':\n"
        "            importlib.import_module(f'{name}.{info.name}')\n"
        "print('\\n'.join(sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_report_imports_neither_the_trainer_nor_lightning_nor_the_run() -> None:
    found = imported_by("longrange.experiments.report")
    assert "longrange.experiments.report.build" in found  # the test imports what it checks
    forbidden = {"pytorch_lightning", "lightning", "longrange.experiments.train", "longrange.models.module"}
    assert not found & forbidden
    assert not {m for m in found if m.startswith("longrange.experiments.run")}


def test_the_run_imports_nothing_of_the_report_or_the_sweep() -> None:
    found = imported_by("longrange.experiments.run")
    assert "longrange.experiments.run.callbacks" in found
    other_rooms = ("longrange.experiments.report", "longrange.experiments.sweep")
    assert not {m for m in found if m.startswith(other_rooms)}


def test_models_and_datasets_never_import_experiments() -> None:
    """Imports run one way: every module of models/ and datasets/, imported in a fresh interpreter, leaves
    ``longrange.experiments`` unimported."""
    code = (
        "import importlib, pkgutil, sys, longrange.models, longrange.datasets\n"
        "for package in (longrange.models, longrange.datasets):\n"
        "    for info in pkgutil.iter_modules(package.__path__):\n"
        "        importlib.import_module(f'{package.__name__}.{info.name}')\n"
        "sys.exit(any(name.startswith('longrange.experiments') for name in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_knob_value_whose_jobs_have_not_run_is_its_own_series(tmp_path: Path) -> None:
    # A sweep stopped early: DeltaNet with 4 heads finished, with 16 not yet. The missing jobs' overrides
    # ("16", "1e-3" as the grid spells them) must split the series as their results would, and a rate
    # must not be truncated to an integer (0.001 -> 0, a bug that made "lr=0" series).
    write_job(tmp_path, "done", "deltanet", 64, {64: 1.0}, knobs={"num_heads": 4})
    jobs = load_jobs(tmp_path)
    overrides = {"model.num_heads": "16", "train.lr": "1e-3", "data.distance": "64", "seed": "0"}
    jobs.append(Job(tmp_path / "todo", "missing", "deltanet", {k: _parse(v) for k, v in overrides.items()}))
    # a group choice (data=parity) is no key of a result's config: it does not split the series
    jobs.append(Job(tmp_path / "other", "missing", "deltanet", {"data": "parity", "model.num_heads": 4}))
    label_series(jobs)
    assert [job.series for job in jobs] == [
        "deltanet num_heads=4",
        "deltanet num_heads=16",
        "deltanet num_heads=4",
    ]
    assert (_parse("1e-2"), _parse(0.01), _parse("64"), _parse("[8,16]")) == (0.01, 0.01, 64, "[8,16]")


def test_a_sweep_over_several_tasks_gets_a_table_per_task_with_its_own_chance_and_baseline(
    tmp_path: Path,
) -> None:
    """experiment=state_tracking sweeps three tasks: each gets its own table, chance and order-free
    baseline, series are named by the task's choice (not its class path), and trained-short-tested-long
    runs draw no frontier (beyond the trained range a failure is one of extrapolation, not holding)."""
    tasks = {"parity": (0.5, 0.7), "modular": (0.2, 0.3)}  # chance, the bag's accuracy
    for task, (chance, bag) in tasks.items():
        for model, acc, state in (("gru", 0.6, 140), ("bag", bag, 65), ("attention", 1.0, 9000)):
            test = {1: acc, 2: acc, 8: acc}
            write_job(tmp_path, f"{task}-{model}", model, [1, 2], test, eval_distance=[1, 2, 8], task=task,
                      chance=chance, state=state, data={"segments": 8})  # fmt: skip
    paths = report(tmp_path)
    text = paths["markdown"].read_text()
    assert "## Regime: extrapolation (trained short, tested long), task `modular` (chance 0.200)" in text
    parity = text.split("task `parity` (chance 0.500)")[1].split("##")[0]
    assert "| gru | 0.600 † | 0.600 † | 0.600 † | none |" in parity  # below parity's bag (0.7)
    modular = text.split("task `modular`")[1].split("##")[0]
    assert "| gru | 0.600 | 0.600 | 0.600 | none |" in modular  # above modular's bag (0.3)
    assert "| extrapolation | gru data=parity | 1 |" in text and "_target_" not in text
    assert "frontier" not in text and "accuracy_vs_state_size" not in paths

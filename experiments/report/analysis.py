"""A sweep's results as numbers: jobs, series, regimes, means over seeds, horizons, controls.

Plain Python over the ``result.json`` files (no torch, no Lightning), so the report runs anywhere the
results are, a laptop with a sweep copied from a cluster included.

* A **job** is one folder with a result (or a grid point without one: ``missing``).
* Its **regime** comes from its config (:func:`regime`): ``fixed`` (one training distance), ``mixed``
  (several, evaluated within their range) or ``extrapolation`` (evaluated beyond the trained range).
* A **series** is a model plus every config value that varies among that model's jobs, distances and
  seed aside (:func:`series_name`, the one function that names a series: tables and every figure use it),
  within one regime: ``lstm``, ``lstm forget_bias=3.0``, ``gru width=32 num_pairs=4``; in a sweep over
  several tasks, the task by its config-group choice: ``gru data=parity``.
* A **cell** is one series at one distance: the test accuracies of its seeds. A fixed-distance job gives
  its series one point, at its training distance; the untrained neighbours it is also evaluated at (e.g.
  ``D - 2 .. D + 2``) give the **position reliance** of that point instead. A mixed or extrapolation job
  gives a whole curve.
* The **recall horizon** of a series is the largest distance up to which the mean accuracy stays at or
  above the threshold at every evaluated distance.
* **Controls**: chance (from each result), and the order-free baseline (model ``bag``): a series whose
  mean falls clearly below the baseline's at a distance in the same regime failed to *learn* the task
  there, since a model without any memory of order does better.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longrange.experiments.results import (
    RESULT_FILE,
    as_list,
    flatten,
    model_name,
    read_result,
    regime,
    what_it_computes,
)
from longrange.experiments.sweep.grid import expected_jobs

AXES = ("data.distance", "data.eval_distance", "seed")  # never part of a series name
REGIMES = ("fixed", "mixed", "extrapolation")
REGIME_TITLES = {
    "fixed": "one training distance per run",
    "mixed": "mixed training distances, accuracy per distance",
    "extrapolation": "trained short, tested long",
}
BASELINE = "bag"  # the order-free control (models/bag.py)
SELECTED = " (selected on validation)"  # the end of a series name whose value of a key was chosen
NEIGHBOURS = 2  # untrained distances within this of a fixed training distance measure position reliance
T_975 = [12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]  # Student t, df 1..10


@dataclass
class Job:
    """One job of the sweep: its result if it wrote one, else what the grid says it should have been."""

    run_dir: Path
    status: str
    model: str
    config: dict[str, Any] = field(default_factory=dict)  # flattened: {"data.distance": 64, ...}
    result: dict[str, Any] = field(default_factory=dict)
    series: str = ""

    @property
    def regime(self) -> str:
        return regime(self.config)

    @property
    def trained(self) -> list[int]:
        return as_list(self.config.get("data.distance"))

    @property
    def evaluated(self) -> list[int]:
        return as_list(self.config.get("data.eval_distance")) or self.trained

    @property
    def curve_distances(self) -> list[int]:
        """Where this job contributes to its series' curve: its training distance (fixed), or all."""
        return self.trained if self.regime == "fixed" else self.evaluated

    def accuracy(self, split: str = "test") -> dict[int, float]:
        return {int(d): a for d, a in (self.result.get(f"{split}_acc_per_distance") or {}).items()}

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def task(self) -> dict[str, str]:
        """``{"data": name}``: the task as people call it, the data config-group choice (``parity``) or the
        grid's ``data=`` override (a missing job); empty where neither says (an old result)."""
        choice = (self.result.get("choices") or {}).get("data") or self.config.get("data")
        return {"data": str(choice)} if choice else {}

    @property
    def state_size(self) -> int | None:
        """Floats the model carries at the longest evaluated length (None for old results)."""
        sizes = self.result.get("state_size") or {}
        return max(int(v) for v in sizes.values()) if sizes else None


def load_jobs(sweep_dir: Path, is_stale: Callable[[Path], bool] | None = None) -> list[Job]:
    """Every result.json under the sweep folder, plus a 'missing' job for each grid point without one.

    ``is_stale(run_dir)``: whether a job whose result says "running" has no live process any more (its
    lock is free); such jobs are reported as ``interrupted (stale)``."""
    jobs = []
    for path in sorted(Path(sweep_dir).rglob(RESULT_FILE)):
        if any(part.startswith(".") or part == "summary" for part in path.relative_to(sweep_dir).parts):
            continue
        result = read_result(path.parent)
        if result is None:
            jobs.append(Job(path.parent, "unreadable", "?"))
            continue
        status = result.get("status", "?")
        if status == "running" and is_stale is not None and is_stale(path.parent):
            status = "interrupted (stale)"
        jobs.append(Job(path.parent, status, model_name(result), flatten(result["config"]), result))
    found = {job.run_dir.resolve() for job in jobs}
    for run_dir, overrides in expected_jobs(Path(sweep_dir)):
        if run_dir.resolve() not in found:
            config = {k: _parse(v) for k, v in overrides.items() if k != "model"}
            jobs.append(Job(run_dir, "missing", overrides.get("model", "?"), config))
    label_series(jobs)
    return jobs


def _parse(value: Any) -> Any:
    """An override's value as a result's config holds it: "64" -> 64, "1e-2" -> 0.01; other values as
    they are (int() would truncate a float: 0.01 -> 0)."""
    if not isinstance(value, str):
        return value
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def series_name(model: str, config: dict[str, Any], varying: Iterable[str]) -> str:
    """The one name of a series: the model, then ``key=value`` for each varying config key it has."""
    parts = [f"{key.split('.')[-1]}={config[key]}" for key in varying if key in config]
    return " ".join([model, *parts])


def label_series(jobs: list[Job]) -> None:
    """Series = model + the config values that vary within that model's jobs (distances and seed aside)."""
    by_model: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_model[job.model].append(job)
    for group in by_model.values():
        computed = [flatten(what_it_computes(job.result["config"])) | job.task for job in group if job.result]
        # A job not run yet: its overrides, where its results would have the same key (other group choices
        # are no keys of a result's config) and, once some job of the model has a result, only the keys
        # results have.
        seen = {k for config in computed for k in config}
        computed += [
            {k: v for k, v in job.config.items() if "." in k and (not seen or k in seen)} | job.task
            for job in group
            if not job.result
        ]
        keys = {k for config in computed for k in config if k not in AXES}
        # a key only some results have (added since, with the others' behaviour as its default) and that
        # takes one value where present does not split the series
        varying = sorted(k for k in keys if len({repr(c[k]) for c in computed if k in c}) > 1)
        if "data" in varying and "data._target_" in varying:  # the task by its name, not its class path
            varying.remove("data._target_")
        for job in group:
            job.series = series_name(job.model, job.config | job.task, varying)


def task_of(series: str) -> str | None:
    """The ``data=`` part of a series name (a sweep over several tasks), else None."""
    parts = [part.removeprefix("data=") for part in series.split(" ") if part.startswith("data=")]
    return parts[0] if parts else None


def select_on_validation(jobs: list[Job], key: str) -> list[Job]:
    """Per series (with ``key`` left out of its name) and regime, keep only the jobs of the value of
    ``key`` (e.g. ``train.lr``) whose mean *validation* accuracy over seeds is best; the series is renamed
    ``... key=value (selected on validation)``. Test accuracy is never looked at. Jobs without a result
    are kept as they are (they show up as missing or failed).

    Values are compared on the seeds they all have (a sweep may run every value with seed 0 and only the
    selected one with more seeds), on all their seeds where they share none; a tie goes to the value with
    more seeds."""
    groups: dict[tuple[str, str], list[Job]] = defaultdict(list)
    short = key.split(".")[-1]
    for job in jobs:
        base = " ".join(part for part in job.series.split(" ") if not part.startswith(f"{short}="))
        groups[(job.regime, base)].append(job)
    kept = []
    for (_, base), group in groups.items():
        scores: dict[Any, dict[Any, float]] = defaultdict(dict)
        for job in group:
            if job.status == "ok" and job.result.get("val_acc") is not None:
                scores[repr(job.config.get(key))][job.config.get("seed")] = job.result["val_acc"]
        if not scores:
            kept += group
            continue
        best = max(scores, key=lambda value: _rank(scores, value))
        for job in group:
            if repr(job.config.get(key)) == best or not job.result:
                job.series = f"{base} {short}={job.config.get(key)}{SELECTED}"
                kept.append(job)
    return kept


def _rank(scores: dict[Any, dict[Any, float]], value: Any) -> tuple[float, int]:
    """(mean validation accuracy on the seeds every value has, or on all of this value's; its seed count)."""
    common = set.intersection(*(set(found) for found in scores.values()))
    seeds = common or scores[value].keys()
    return statistics.fmean(scores[value][s] for s in seeds), len(scores[value])


@dataclass
class Cell:
    """Aggregate over seeds for one series at one distance (or another x)."""

    accuracies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    parameters: set[int] = field(default_factory=set)
    state_sizes: set[int] = field(default_factory=set)
    steps: list[int] = field(default_factory=list)
    steps_to_threshold: list[int | None] = field(default_factory=list)
    neighbours: list[float] = field(default_factory=list)  # fixed regime: accuracy at untrained D +- 1, 2

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies) if self.accuracies else math.nan

    @property
    def ci95(self) -> float:
        return ci95(self.accuracies)

    @property
    def neighbour_mean(self) -> float:
        return statistics.fmean(self.neighbours) if self.neighbours else math.nan


def ci95(values: list[float]) -> float:
    """Half-width of the 95% confidence interval of the mean (Student t over seeds); NaN below 2 values."""
    n = len(values)
    if n < 2:
        return math.nan
    t = T_975[n - 2] if n - 2 < len(T_975) else 1.96
    return t * statistics.stdev(values) / math.sqrt(n)


Table = dict[tuple[str, str], dict[int, Cell]]  # (regime, series) -> distance -> cell


def aggregate(jobs: list[Job]) -> Table:
    """(regime, series) -> distance -> the cell of seeds; regimes in the order of :data:`REGIMES`."""
    table: dict[tuple[str, str], dict[int, Cell]] = defaultdict(lambda: defaultdict(Cell))
    for job in jobs:
        accuracy = job.accuracy()
        for distance in job.curve_distances:
            cell = table[(job.regime, job.series)][distance]
            cell.statuses[job.status] += 1
            if job.status != "ok" or distance not in accuracy:
                continue
            cell.accuracies.append(accuracy[distance])
            cell.parameters.add(job.result["parameters"])
            if job.state_size is not None:
                cell.state_sizes.add(job.state_size)
            cell.steps.append(job.result["steps"])
            cell.steps_to_threshold.append(job.result.get("steps_to_threshold"))
            if job.regime == "fixed":
                near = [a for d, a in accuracy.items() if d != distance and abs(d - distance) <= NEIGHBOURS]
                if near:
                    cell.neighbours.append(statistics.fmean(near))
    order = {name: i for i, name in enumerate(REGIMES)}
    return {key: dict(sorted(table[key].items())) for key in sorted(table, key=lambda k: (order[k[0]], k[1]))}


def recall_horizon(cells: dict[int, Cell], threshold: float) -> int | None:
    """Largest distance up to which every evaluated mean accuracy is >= threshold (None: not even one)."""
    horizon = None
    for distance, cell in cells.items():
        if not cell.accuracies or cell.mean < threshold:
            break
        horizon = distance
    return horizon


def horizon_text(cells: dict[int, Cell], threshold: float) -> str:
    """'32', '>= 128' when no evaluated distance fell below the threshold, or 'none'."""
    horizon = recall_horizon(cells, threshold)
    if horizon is None:
        return "none"
    return f">= {horizon}" if horizon == max(cells) else str(horizon)


def baseline_of(table: Table, regime_name: str, series: str) -> dict[int, Cell] | None:
    """The order-free baseline's cells in the same regime (None when the sweep has none, or for itself).
    With several baseline series (e.g. per width), the one sharing the most name parts with ``series``."""
    if series.split(" ")[0] == BASELINE:
        return None
    candidates = [s for (r, s) in table if r == regime_name and s.split(" ")[0] == BASELINE]
    if not candidates:
        return None
    parts = set(series.split(" ")[1:])
    best = max(candidates, key=lambda s: len(parts & set(s.split(" ")[1:])))
    return table[(regime_name, best)]


def below_baseline(cell: Cell, baseline: Cell | None) -> bool:
    """Clearly below the order-free baseline: by more than either confidence interval (and >= 0.02)."""
    if baseline is None or not cell.accuracies or not baseline.accuracies:
        return False
    margin = max([0.02, *(c for c in (cell.ci95, baseline.ci95) if not math.isnan(c))])
    return cell.mean < baseline.mean - margin


def by_seed(jobs: list[Job], x: Callable[[Job], Any], *keys: str) -> dict[tuple[str, str], dict[Any, Cell]]:
    """(regime, series without ``keys``) -> x value -> cell of per-seed accuracies, each the job's mean
    test accuracy over its curve distances. For the capacity and state-size figures, whose x is not the
    distance but the number of items held (``keys`` = data.num_pairs) or the state size (``keys``: the
    knobs that move it, x = the state size they give)."""
    table: dict[tuple[str, str], dict[Any, Cell]] = defaultdict(lambda: defaultdict(Cell))
    for job in jobs:
        accuracy = [a for d, a in job.accuracy().items() if d in job.curve_distances]
        value = x(job)
        if job.status != "ok" or not accuracy or value is None:
            continue
        cell = table[(job.regime, without(job.series, *keys))][value]
        cell.accuracies.append(statistics.fmean(accuracy))
        cell.parameters.add(job.result["parameters"])
        if job.state_size is not None:
            cell.state_sizes.add(job.state_size)
    return {key: dict(sorted(cells.items())) for key, cells in sorted(table.items())}


def varying_capacity_key(jobs: list[Job], keys: Iterable[str]) -> str | None:
    """The first of ``keys`` (e.g. data.num_pairs, data.load) that takes several values in the sweep."""
    for key in keys:
        if len({repr(j.config.get(key)) for j in jobs if j.result and key in j.config}) > 1:
            return key
    return None


def without(series: str, *keys: str) -> str:
    """A series name with the ``key=value`` parts of ``keys`` taken out (to draw them on the x axis), and
    without the note that a value was selected on validation (each x may have its own)."""
    shorts = {key.split(".")[-1] for key in keys}
    parts = series.removesuffix(SELECTED).split(" ")
    return " ".join(part for part in parts if part.split("=", 1)[0] not in shorts)

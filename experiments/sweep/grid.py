"""The jobs of a sweep, as the project's sweeper launches them: the one place that reads Hydra's grid.

Hydra has no public function for "which jobs will this multirun start"; :func:`grid_points` calls the
basic sweeper's own splitting (a private module of Hydra 1.3, so a Hydra upgrade changes only this file).
The config validation checks every point before a sweep starts, the report lists points that never
wrote a result, and the tests validate every point of every preset.

Two additions to Hydra's cartesian grid, both set under ``hydra.sweeper`` (see
``conf/experiment/frontier.yaml``):

* ``per_model``: axes of one model only, ``{deltanet: {model.num_heads: "4,8,16"}}``: each job of that
  model becomes one job per value (:func:`with_model_axes`), so one preset sweeps each family's own knob.
* ``select_on_first_seed``: a key such as ``train.lr``. The jobs of the grid's first seed run first, over
  every value of the key; the other seeds then run only at the value whose first-seed job had the best
  *validation* accuracy for the same point (:func:`stages`, :func:`chosen`). The sweeper launches the two
  stages one after the other; the report and the progress lines expect the same jobs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from hydra import compose
from omegaconf import DictConfig, ListConfig, OmegaConf

from longrange.experiments import resolvers
from longrange.experiments.results import read_result

Point = list[str]  # one job: its override strings, e.g. ["model=gru", "seed=0"]


def composed(config_name: str, point: Sequence[str]) -> DictConfig:
    """A job's config, composed with Hydra's public compose API inside the running app, once per launch:
    the launch's check (``validate``) and the start order (``order``) both need every point's config, and
    one compose costs 0.2-0.4 s (Hydra loads some fifty config files for it). A copy each time: callers
    may resolve it. :func:`forget_composed` empties the cache at each launch's start."""
    return copy.deepcopy(_composed(config_name, tuple(point)))


@lru_cache(maxsize=4096)
def _composed(config_name: str, point: tuple[str, ...]) -> DictConfig:
    return compose(config_name, overrides=list(point))


def forget_composed() -> None:
    """Empty :func:`composed`'s cache (a new launch may read other config files)."""
    _composed.cache_clear()


def grid_points(
    params: Mapping[str, object] | None, overrides: list[str], per_model: Mapping[str, Any] | None = None
) -> list[Point]:
    """One list of override strings per job: the sweeper's ``params`` (e.g. ``{"model": "lstm,gru"}``)
    and the command line's ``overrides`` (which may hold sweeps too, e.g. ``seed=0,1,2``), expanded in the
    order the basic sweeper launches them, then by the ``per_model`` axes."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [f"{key}={_sweep_text(value)}" for key, value in (params or {}).items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(lines)
    jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    return with_model_axes(jobs, per_model)


def with_model_axes(jobs: list[Point], per_model: Mapping[str, Any] | None) -> list[Point]:
    """Each job whose model has axes of its own in ``per_model`` becomes one job per combination of their
    values, in place. An axis the job already sets (e.g. ``model.num_heads=4`` on the command line) is
    left to the job: the command line narrows a preset."""
    if not per_model:
        return jobs
    expanded = []
    for job in jobs:
        point = parse_point(job)
        axes = per_model.get(str(point.get("model"))) or {}
        lines = [f"{key}={_sweep_text(values)}" for key, values in axes.items() if key not in point]
        expanded += [job + extra for extra in grid_points(None, lines)] if lines else [job]
    return expanded


def _sweep_text(values: Any) -> str:
    """A sweep's values as Hydra reads them on a command line: "1,2,4" (YAML lists welcome)."""
    if isinstance(values, str) or not isinstance(values, Sequence | ListConfig):
        return str(values)
    return ",".join(str(v) for v in values)


def parse_point(point: list[str]) -> dict[str, Any]:
    """``["model=gru", "data.distance=8"]`` -> ``{"model": "gru", "data.distance": "8"}`` (Hydra's parser,
    so quoting and ``+``/``++`` prefixes are read as Hydra reads them)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(point)}


def stages(jobs: list[Point], select: str | None) -> list[list[Point]]:
    """``[jobs]``; with ``select`` (e.g. ``train.lr``) and several seeds: ``[the jobs of the first seed
    in the grid, the others]``, each in grid order."""
    seeds = [parse_point(job).get("seed") for job in jobs]
    if not select or len(set(map(repr, seeds))) < 2:
        return [jobs]
    first = [job for job, seed in zip(jobs, seeds, strict=True) if seed == seeds[0]]
    return [first, [job for job, seed in zip(jobs, seeds, strict=True) if seed != seeds[0]]]


def chosen(
    first: list[Point], rest: list[Point], select: str, folder: Callable[[Point], Path]
) -> list[Point]:
    """The jobs of ``rest`` whose ``select`` value is the one whose first-stage job of the same point (the
    same overrides, seed and ``select`` aside) has the best validation accuracy; test accuracy is never
    read. A tie, or a point with no first-stage result yet, goes to the value that comes first in the grid."""
    best: dict[tuple[str, ...], tuple[float, int, Any]] = {}
    for order, job in enumerate(first):
        point = parse_point(job)
        result = read_result(folder(job)) or {}
        score = result.get("val_acc") if result.get("status") == "ok" else None
        rank = (-1.0 if score is None else float(score), -order, point.get(select))
        key = _point(job, select)
        if key not in best or rank > best[key]:
            best[key] = rank
    return [job for job in rest if _point(job, select) not in best or
            best[_point(job, select)][2] == parse_point(job).get(select)]  # fmt: skip


def _point(job: Point, select: str) -> tuple[str, ...]:
    return tuple(sorted(line for line in job if line.split("=", 1)[0].lstrip("+~") not in ("seed", select)))


def folder_name(point: Point, exclude: set[str]) -> str:
    """A job's folder in the sweep, as Hydra's ``override_dirname`` names it (excluded keys left out)."""
    return ",".join(sorted(line for line in point if line.split("=", 1)[0] not in exclude))


def expected_jobs(sweep_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The grid of the last launch, from Hydra's multirun.yaml: (job folder, {key: value}) per job."""
    if not (sweep_dir / "multirun.yaml").exists():
        return []
    resolvers.register()  # multirun.yaml keeps the config's interpolations (``${not_hashed:...}``)
    hydra = OmegaConf.load(sweep_dir / "multirun.yaml").hydra
    exclude = set(hydra.job.config.override_dirname.exclude_keys)
    sweeper = hydra.sweeper
    points = grid_points(sweeper.get("params"), list(hydra.overrides.task), sweeper.get("per_model"))
    select = sweeper.get("select_on_first_seed")
    found = stages(points, select)
    if len(found) == 2:
        found[1] = chosen(found[0], found[1], select, lambda p: sweep_dir / folder_name(p, exclude))
    expected = []
    for point in [job for stage in found for job in stage]:
        kept = {k: v for k, v in parse_point(point).items() if k not in exclude}
        expected.append((sweep_dir / folder_name(point, exclude), kept))
    return expected

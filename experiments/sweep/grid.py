"""The jobs of a sweep, as Hydra's basic sweeper launches them: the one place that reads Hydra's grid.

Hydra has no public function for "which jobs will this multirun start"; :func:`grid_points` calls the
basic sweeper's own splitting (a private module of Hydra 1.3, so a Hydra upgrade changes only this file).
The config validation checks every point before a sweep starts, the report lists points that never
wrote a result, and the tests validate every point of every preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from longrange.experiments import resolvers


def grid_points(params: Mapping[str, object] | None, overrides: list[str]) -> list[list[str]]:
    """One list of override strings per job: the sweeper's ``params`` (e.g. ``{"model": "lstm,gru"}``)
    and the command line's ``overrides`` (which may hold sweeps too, e.g. ``seed=0,1,2``), expanded in the
    order the basic sweeper launches them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(lines)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def parse_point(point: list[str]) -> dict[str, Any]:
    """``["model=gru", "data.distance=8"]`` -> ``{"model": "gru", "data.distance": "8"}`` (Hydra's parser,
    so quoting and ``+``/``++`` prefixes are read as Hydra reads them)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(point)}


def expected_jobs(sweep_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The grid of the last launch, from Hydra's multirun.yaml: (job folder, {key: value}) per job."""
    if not (sweep_dir / "multirun.yaml").exists():
        return []
    resolvers.register()  # multirun.yaml keeps the config's interpolations (``${not_hashed:...}``)
    hydra = OmegaConf.load(sweep_dir / "multirun.yaml").hydra
    exclude = set(hydra.job.config.override_dirname.exclude_keys)
    expected = []
    for point in grid_points(hydra.sweeper.get("params"), list(hydra.overrides.task)):
        kept = {k: v for k, v in parse_point(point).items() if k not in exclude}
        name = ",".join(sorted(line for line in point if line.split("=", 1)[0] not in exclude))
        expected.append((sweep_dir / name, kept))
    return expected

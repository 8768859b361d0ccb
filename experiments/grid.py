"""The jobs of a sweep, as Hydra's basic sweeper launches them: the one place that reads Hydra's grid.

Hydra has no public function for "which jobs will this multirun start"; :func:`grid_points` calls the
basic sweeper's own splitting (a private module of Hydra 1.3, so a Hydra upgrade changes only this file).
The config validation checks every point before a sweep starts, the report lists points that never
wrote a result, and the tests validate every point of every preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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

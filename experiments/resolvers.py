"""The project's OmegaConf resolvers, registered when the config package ``longrange.conf`` is imported
(Hydra imports it for ``pkg://longrange.conf``), so the app, Hydra's compose API and the tests all have
them. Plain Python: the report may import it."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from longrange.experiments.results import NOT_HASHED


def around(distance: Any, reach: int = 2) -> Any:
    """OmegaConf resolver ``${around:${data.distance},2}``: a single distance D and its untrained
    neighbours, ``[D - 2, ..., D + 2]`` (those >= 0), so that one fixed-distance run also measures how much
    it relies on the exact position (the report's position-reliance column). A list is returned as is
    (mixed training distances need no neighbours)."""
    if isinstance(distance, list | tuple) or hasattr(distance, "__len__"):
        return list(distance)
    return [d for d in range(int(distance) - reach, int(distance) + reach + 1) if d >= 0]


def not_hashed(*more: str) -> list[str]:
    """OmegaConf resolver ``${not_hashed:experiment,name}``: :data:`NOT_HASHED` and ``more``. conf/config.yaml
    leaves these out of a sweep's folder names (``hydra.job.config.override_dirname.exclude_keys``), so
    the folder names and the hash agree on what a job computes, from this one list."""
    return [*NOT_HASHED, *more]


def register() -> None:
    OmegaConf.register_new_resolver("around", around, replace=True)
    OmegaConf.register_new_resolver("not_hashed", not_hashed, replace=True)

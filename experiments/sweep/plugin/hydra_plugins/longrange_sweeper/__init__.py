"""Hydra finds sweepers only in the ``hydra_plugins`` namespace package: this folder is that plugin of
longrange (installed as ``hydra_plugins.longrange_sweeper``; see pyproject.toml and the Makefile).

:class:`LongestFirstSweeper` is Hydra's basic sweeper whose grid starts by decreasing estimated cost
(``longrange.experiments.sweep.order``): the same jobs, the same folders, another start order. Selected
by ``conf/hydra/sweeper/longest_first.yaml``, the default of every multirun.
"""

from __future__ import annotations

from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class LongestFirstSweeper(BasicSweeper):
    def split_arguments(self, overrides: Any, max_batch_size: int | None) -> list[list[list[str]]]:  # type: ignore[override]
        # here, not at the top: Hydra imports every plugin module whenever any Hydra app starts
        from longrange.experiments.sweep.order import estimates, longest_first

        [jobs] = BasicSweeper.split_arguments(overrides, None)  # the grid, in the basic sweeper's order
        assert self.config is not None
        ordered = longest_first(jobs, estimates(self.config.hydra.job.config_name, jobs))
        if max_batch_size is None:
            return [ordered]
        return [list(chunk) for chunk in BasicSweeper.split_overrides_to_chunks(ordered, max_batch_size)]

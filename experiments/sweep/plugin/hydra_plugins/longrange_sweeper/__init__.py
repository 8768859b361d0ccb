"""Hydra finds sweepers only in the ``hydra_plugins`` namespace package: this folder is that plugin of
longrange (installed as ``hydra_plugins.longrange_sweeper``; see pyproject.toml and the Makefile).

:class:`LongestFirstSweeper` is Hydra's basic sweeper whose grid starts by decreasing estimated cost
(``longrange.experiments.sweep.order``): the same jobs, the same folders, another start order. Selected
by ``conf/hydra/sweeper/longest_first.yaml``, the default of every multirun. Two options of its own
(``longrange.experiments.sweep.grid``): ``per_model`` axes, and ``select_on_first_seed``, which runs the
first seed over every value of a key, then the other seeds at the value chosen on validation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class LongestFirstSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict[str, str] | None = None,
        per_model: Mapping[str, Any] | None = None,
        select_on_first_seed: str | None = None,
    ) -> None:
        super().__init__(max_batch_size, params)
        self.per_model = per_model
        self.select = select_on_first_seed
        self.stage_one: list[list[str]] = []
        self.stage_one_batches = 0  # batches of the first stage; the second is filtered when it starts

    def split_arguments(self, overrides: Any, max_batch_size: int | None) -> list[list[list[str]]]:  # type: ignore[override]
        # here, not at the top: Hydra imports every plugin module whenever any Hydra app starts
        from longrange.experiments.sweep.grid import stages, with_model_axes

        [jobs] = BasicSweeper.split_arguments(overrides, None)  # the grid, in the basic sweeper's order
        found = stages(with_model_axes(jobs, self.per_model), self.select)
        self.stage_one = found[0]
        self.stage_one_batches = len(self._batches(found[0], max_batch_size))
        return [batch for stage in found for batch in self._batches(stage, max_batch_size)]

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        assert self.overrides is not None and self.config is not None
        if self.select and self.batch_index == self.stage_one_batches:  # the first stage has run
            from longrange.experiments.sweep.grid import chosen, folder_name

            hydra = self.config.hydra
            exclude = set(hydra.job.config.override_dirname.exclude_keys)
            rest = [list(job) for batch in self.overrides[self.batch_index :] for job in batch]
            rest = chosen(self.stage_one, rest, self.select,
                          lambda p: Path(hydra.sweep.dir) / folder_name(p, exclude))  # fmt: skip
            self.overrides = [*self.overrides[: self.batch_index], *self._batches(rest, self.max_batch_size)]
        return super().get_job_batch()

    def _batches(self, jobs: list[list[str]], max_batch_size: int | None) -> list[list[list[str]]]:
        """The jobs longest first, in batches of ``max_batch_size`` (one batch when None)."""
        from longrange.experiments.sweep.order import estimates, longest_first

        assert self.config is not None
        ordered = longest_first(jobs, estimates(self.config.hydra.job.config_name, jobs)) if jobs else []
        if max_batch_size is None:
            return [ordered] if ordered else []
        return [list(chunk) for chunk in BasicSweeper.split_overrides_to_chunks(ordered, max_batch_size)]

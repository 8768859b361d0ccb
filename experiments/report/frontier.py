"""The recall frontier: accuracy against state size, one line per family, attention as the control.

A sweep whose models carry different state sizes (``experiment=frontier``: each family's own knob, such as
DeltaNet's heads or Mamba-2's ``d_state``) gets, in ``results.md``, a table of every state point and, per
family, the smallest state measured at the threshold, and the figure ``accuracy_vs_state_size.png``.

* A **family** is a series without its state knobs (:func:`state_knobs`: the ``model.*`` keys whose values
  give different state sizes among one model's jobs) and without the key chosen on validation (each point
  has its own rate): ``deltanet num_heads=8 lr=0.01 (selected on validation)`` is a point of ``deltanet``.
* The **control**: a point below the threshold is a *holding* failure only if attention, whose cache holds
  every token, reaches the threshold with about as many parameters (the attention point of the sweep on
  the same task, ``data.*`` alike, for as many steps, whose parameter count is nearest). Where that
  attention fails too, the point is marked :data:`LEARNING`: the budget or the size did not let the model
  *learn* the task, whatever its state.
* **Floats per item**: the smallest state at the threshold divided by the items held (``data.num_pairs``),
  given as the bracket between the largest state below the threshold and the smallest at it, because the
  state is measured only at the sweep's points; a point that did not learn bounds nothing.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from longrange.experiments import figures
from longrange.experiments.report.analysis import BASELINE, REGIME_TITLES, Cell, Job, by_seed, without

CONTROL = "attention"  # the model whose cache holds every token
LEARNING = "‡"  # marks a point where attention with about as many parameters fails too
TASK = ("data.", "trainer.max_steps")  # a control ran the same task for as many steps


def state_knobs(jobs: list[Job]) -> list[str]:
    """The ``model.*`` keys that move the state size in this sweep: among one model's jobs, different
    values of the key come with different state sizes (``model.num_heads`` for DeltaNet, ``model.width``
    for the GRU)."""
    by_model: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        if job.status == "ok" and job.state_size is not None:
            by_model[job.model].append(job)
    knobs = set()
    for group in by_model.values():
        for key in {k for job in group for k in job.config if k.startswith("model.")}:
            sizes: dict[str, set[int]] = defaultdict(set)
            for job in group:
                sizes[repr(job.config.get(key))].add(job.state_size or 0)
            if len({frozenset(s) for s in sizes.values()}) > 1:
                knobs.add(key)
    return sorted(knobs)


@dataclass
class Point:
    """One state point of a family: its series (knob and chosen rate), state, parameters, seeds."""

    regime: str
    family: str
    series: str
    state: int
    items: int | None
    cell: Cell
    task: tuple = ()  # the data.* config and the steps: a control must have run the same task as long

    @property
    def parameters(self) -> int:
        return min(self.cell.parameters)


def points(jobs: list[Job], knobs: list[str], select: str | None) -> list[Point]:
    """Every (regime, series) of the sweep as a point of its family, by family then state."""
    hidden = [*knobs, *([select] if select else [])]
    shared = set.intersection(*({k for k in j.config if k.startswith(TASK)} for j in jobs))  # keys that
    # only newer results have (added since, the older ones ran their default) do not tell tasks apart

    def key(job: Job) -> tuple:
        task = tuple(sorted((k, repr(v)) for k, v in job.config.items() if k in shared))
        return job.series, job.state_size, job.config.get("data.num_pairs"), task

    found = []
    for (regime, _), by_x in by_seed(jobs, key).items():
        for (series, state, items, task), cell in by_x.items():
            if state is not None:
                found.append(Point(regime, without(series, *hidden), series, state, items, cell, task))
    return sorted(found, key=lambda p: (p.regime, p.family, p.state))


def control_of(point: Point, found: list[Point]) -> Point | None:
    """The attention point of the same regime and task with the nearest parameter count (None without
    one: e.g. attention never ran that task)."""
    controls = [p for p in found if p.regime == point.regime and p.task == point.task
                and p.family.split(" ")[0] == CONTROL]  # fmt: skip
    if not controls or point.family.split(" ")[0] in (CONTROL, BASELINE):
        return None
    return min(controls, key=lambda p: abs(math.log(p.parameters / point.parameters)))


def reading(point: Point, found: list[Point], threshold: float) -> str:
    """'holds', 'cannot hold (attention at ~N parameters: x)' or 'did not learn ‡ (...)'."""
    if point.cell.mean >= threshold:
        return "reaches the threshold"
    if point.family.split(" ")[0] == CONTROL:
        return f"did not learn {LEARNING} (its cache holds every token)"
    control = control_of(point, found)
    if control is None:
        return "–"
    text = f"attention at {control.parameters / 1000:.0f}k parameters: {control.cell.mean:.3f}"
    if control.cell.mean < threshold:
        return f"did not learn {LEARNING} ({text})"
    return f"cannot hold ({text})"


def per_item(found: list[Point], threshold: float) -> list[tuple[str, str, str, str]]:
    """Per (regime, family): the smallest state at the threshold, the bracket per item, the largest below."""
    rows = []
    for regime, family in dict.fromkeys((p.regime, p.family) for p in found):
        mine = [p for p in found if (p.regime, p.family) == (regime, family)]
        above = [p for p in mine if p.cell.mean >= threshold]
        smallest = min(above, key=lambda p: p.state) if above else None
        limit = smallest.state if smallest else math.inf  # a point that did not learn bounds nothing
        below = [p for p in mine if p.cell.mean < threshold and p.state < limit
                 and LEARNING not in reading(p, found, threshold)]  # fmt: skip
        largest_below = max(below, key=lambda p: p.state) if below else None
        items = (smallest or largest_below or mine[0]).items
        if smallest is None:
            bracket = f"> {largest_below.state / items:,.0f}" if items and largest_below else "–"
        elif largest_below is None:
            bracket = f"<= {smallest.state / items:,.0f}" if items else "–"
        else:
            bracket = f"{largest_below.state / items:,.0f} .. {smallest.state / items:,.0f}" if items else "–"
        rows.append((
            f"{family} [{regime}]",
            f"{smallest.state:,}" if smallest else "not reached",
            f"{largest_below.state:,}" if largest_below else "none measured",
            bracket,
        ))  # fmt: skip
    return rows


def section(jobs: list[Job], threshold: float, select: str | None, note: str) -> tuple[list[str], Any]:
    """The frontier's markdown lines and figure (``([], None)`` when the state does not vary)."""
    # Runs over several distances within their trained range: a fixed run's state grows with its
    # distance (the main table shows it), and beyond the trained range a failure is one of extrapolation
    # (state tracking, length extrapolation), not of holding, which attention's control cannot tell.
    sized = [j for j in jobs if j.state_size and j.regime == "mixed"]
    if len({j.state_size for j in sized}) < 2:
        return [], None
    found = points(sized, state_knobs(sized), select)
    lines = [
        "## The frontier: accuracy against state size",
        "",
        "Test accuracy averaged over the evaluated distances, mean over seeds ± 95% CI, at each state point "
        "(floats carried from one position to the next, measured from what `step` returns). Below the "
        f"threshold, the control: attention with the nearest parameter count; {LEARNING}: it fails too, so "
        "the model did not *learn*, whatever its state.",
        "",
        f"| family | point | state | parameters | seeds | test acc | seeds >= {threshold} | reading |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in found:
        half = "" if math.isnan(p.cell.ci95) else f" ± {p.cell.ci95:.3f}"
        reached = sum(a >= threshold for a in p.cell.accuracies)
        lines.append(
            f"| {p.family} | {p.series} | {p.state:,} | {p.parameters:,} | {len(p.cell.accuracies)} | "
            f"{p.cell.mean:.3f}{half} | {reached}/{len(p.cell.accuracies)} | {reading(p, found, threshold)} |"
        )
    lines += [
        "",
        f"Smallest state measured at >= {threshold}, and floats of state per item held (the bracket between "
        f"the largest state below the threshold, learning failures {LEARNING} aside, and the smallest at "
        "it):",
        "",
        "| family | smallest state >= threshold | largest state below it | floats per item |",
        "|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in per_item(found, threshold)),
        "",
    ]
    return lines, figure(found, jobs, threshold, note)


def figure(found: list[Point], jobs: list[Job], threshold: float, note: str) -> Any:
    """One panel per regime and number of items held (8 and 16 pairs side by side, a family in one colour
    in both): a line per family against log state, attention dashed, the baseline and chance as lines."""
    chance = [j.result["chance"] for j in jobs if j.result.get("chance")]
    several = len({p.items for p in found}) > 1
    panels = []
    for regime, items in sorted({(p.regime, p.items) for p in found}, key=lambda k: (k[0], k[1] or 0)):
        families: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
        hlines: dict[str, float] = {"chance": statistics.fmean(chance)} if chance else {}
        for p in found:
            if (p.regime, p.items) != (regime, items):
                continue
            family = without(p.family, "data.num_pairs") if several else p.family  # the panel names it
            if family.split(" ")[0] == BASELINE:
                hlines[f"order-free baseline ({family})"] = p.cell.mean
                continue
            families[family][p.state] = (p.cell.mean, p.cell.ci95)
        lines = [figures.Line(name, xy, name.split(" ")[0] == CONTROL) for name, xy in families.items()]
        title = f"{regime}: {REGIME_TITLES[regime]}"
        if several:
            title = f"{items} pairs to hold ({regime} distances)"
        panels.append(figures.Panel(title, lines, hlines=hlines))
    return figures.lines_figure(
        panels, "state size (floats carried from one position to the next, log scale)",
        "test accuracy (95% CI over seeds)", True, note, data_ticks=False, legend_outside=True,
    )  # fmt: skip

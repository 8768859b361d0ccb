"""The sweep report: tables per regime, accuracy curves with controls, recall horizons, diagnostics.

    python -m longrange.experiments.report outputs/sweeps/distance_sweep [--threshold 0.9] [--select train.lr]

It reads only the ``result.json`` (and ``diagnostics.json``) files under the sweep folder, so it works on a
partial sweep and on one copied from a cluster, plus Hydra's ``multirun.yaml`` to list jobs that never
wrote a result. It imports neither torch's trainer nor Lightning. It writes, into the sweep folder:

* ``results.csv``: one row per job (series, regime, status, accuracies, parameters, state size, budget);
* ``results.md``: per regime (and per task, in a sweep over several: ``data=parity,modular``, each with
  its chance level and its own order-free baseline), a table of series x distance (mean test accuracy
  over seeds with its 95% confidence interval), the recall horizon, parameters and state size, the
  controls (chance, the order-free baseline, cells below it marked), position reliance for
  fixed-distance runs; then the capacity and state-size tables where the sweep varies them, the details
  per cell, and every job without a valid result (failed, diverged, interrupted, missing), never dropped;
* ``accuracy_vs_distance.png``: one panel per regime (and task); ``accuracy_vs_<items>.png`` when the
  number of items held varies (MQAR pairs, coref load); ``accuracy_vs_state_size.png`` and the
  frontier's tables when the state size varies among runs evaluated within their trained distances
  (``frontier``: one line per family, attention as the control);
* ``gradient_flow.png``, ``memory_probe.png``, ``attention_mass.png``: the jobs' diagnostics per series;
* ``summary/``: a TensorBoard run holding the figures and the table, so ``tensorboard --logdir SWEEP``
  shows the sweep's true numbers next to every job's training curves.

``--select KEY`` (e.g. ``train.lr``): per series, keep the value of KEY with the best mean *validation*
accuracy and report its test accuracy (the tables say so); the test split never takes part in the choice.
See ``analysis`` for series, regimes, horizons and controls.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from longrange.experiments import figures
from longrange.experiments.report import frontier
from longrange.experiments.report.analysis import (
    REGIME_TITLES,
    Cell,
    Job,
    Table,
    aggregate,
    baseline_of,
    below_baseline,
    by_seed,
    horizon_text,
    load_jobs,
    recall_horizon,
    select_on_validation,
    task_of,
    varying_capacity_key,
)
from longrange.experiments.report.tensorboard_views import write_tensorboard_summary
from longrange.experiments.results import read_diagnostics
from longrange.experiments.sweep import jobs as jobs_module

CAPACITY_KEYS = ("data.num_pairs", "data.load", "data.competitors", "data.length")  # items held at once
BELOW = "†"  # marks a cell clearly below the order-free baseline


def last_exception(error: str | None) -> str:
    """An old result's reason (written before ``reason`` existed): the traceback's final exception block,
    which starts at its last unindented line."""
    lines = (error or "").strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line and not line[0].isspace()]
    return " ".join(lines[starts[-1] :]) if starts else ""


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _cell_text(cell: Cell | None, mark: bool = False) -> str:
    if cell is None or not cell.accuracies:
        return "–"
    half = "" if math.isnan(cell.ci95) else f" ± {cell.ci95:.3f}"
    return f"{cell.mean:.3f}{half}{' ' + BELOW if mark else ''}"


def _sizes(values: set[int]) -> str:
    return ", ".join(f"{v:,}" for v in sorted(values)) or "–"


def write_csv(jobs: list[Job], path: Path) -> None:
    columns = ["series", "regime", "model", "seed", "distance", "eval_distance", "status", "test_acc"]
    columns += ["val_acc", "test_acc_per_distance", "parameters", "state_size", "steps", "max_steps", "lr"]
    columns += ["budget", "steps_to_threshold", "wall_time_s", "run_dir"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for job in sorted(jobs, key=lambda j: (j.regime, j.series, j.trained, str(j.seed))):
            r = job.result
            writer.writerow({
                "series": job.series, "regime": job.regime, "model": job.model, "seed": job.seed,
                "distance": " ".join(map(str, job.trained)),
                "eval_distance": " ".join(map(str, job.evaluated)),
                "status": job.status, "test_acc": r.get("test_acc"), "val_acc": r.get("val_acc"),
                "test_acc_per_distance": " ".join(f"{d}:{a}" for d, a in job.accuracy().items()),
                "parameters": r.get("parameters"), "state_size": job.state_size, "steps": r.get("steps"),
                "max_steps": job.config.get("trainer.max_steps"), "lr": job.config.get("train.lr"),
                "budget": job.config.get("train.budget"), "steps_to_threshold": r.get("steps_to_threshold"),
                "wall_time_s": r.get("wall_time_s"), "run_dir": str(job.run_dir),
            })  # fmt: skip


def budget_line(jobs: list[Job]) -> str:
    done = [j for j in jobs if j.result]
    seeds = sorted({j.seed for j in jobs if j.seed is not None}, key=str)

    def values(key: str) -> str:
        return "/".join(sorted({str(j.config.get(key)) for j in done}, key=_number)) or "?"

    return (
        f"budget: {values('trainer.max_steps')} steps ({values('train.budget')}), batch "
        f"{values('train.batch_size')}, lr {values('train.lr')}; seeds: {len(seeds)} "
        f"({', '.join(map(str, seeds))})"
    )


def _number(text: str) -> tuple[float, str]:
    try:
        return float(text), text
    except ValueError:
        return math.inf, text


def tasks_of(table: Table, regime: str) -> list[str | None]:
    """The tasks of a regime's series when the sweep ran several (one table and panel each), else [None]."""
    tasks = sorted({t for (r, series) in table if r == regime and (t := task_of(series)) is not None})
    return list(tasks) if len(tasks) > 1 else [None]


def chance_per_task(jobs: list[Job]) -> dict[str | None, float]:
    """Each task's chance level (from its results), and every task's mean under None."""
    found: dict[str | None, list[float]] = defaultdict(list)
    for job in jobs:
        if job.result.get("chance"):
            found[job.task.get("data")].append(job.result["chance"])
            found[None].append(job.result["chance"])
    return {task: statistics.fmean(values) for task, values in found.items()}


def short(series: str, task: str | None) -> str:
    """A series name inside its task's table or panel: without the ``data=`` part the title gives."""
    return series if task is None else series.replace(f" data={task}", "")


def regime_section(
    table: Table, regime: str, threshold: float, task: str | None = None, chance: float | None = None
) -> list[str]:
    """The wide table of one regime (of one task, in a sweep over several): series x distance, horizon,
    size, position reliance, controls."""
    rows = {series: cells for (r, series), cells in table.items()
            if r == regime and (task is None or task_of(series) == task)}  # fmt: skip
    distances = sorted({d for cells in rows.values() for d in cells})
    fixed = regime == "fixed"
    of_task = "" if task is None else f", task `{task}`" + (f" (chance {chance:.3f})" if chance else "")
    lines = [f"## Regime: {regime} ({REGIME_TITLES[regime]}){of_task}", ""]
    header = ["series", *(str(d) for d in distances), f"horizon (>= {threshold})", "parameters", "state"]
    if fixed:
        header.append("untrained D ± 1, 2 (position reliance)")
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    marked = False
    for series, cells in rows.items():
        baseline = baseline_of(table, regime, series)
        row = [short(series, task)]
        for d in distances:
            low = below_baseline(cells[d], baseline.get(d)) if baseline and d in cells else False
            marked |= low
            row.append(_cell_text(cells.get(d), low))
        row.append(horizon_text(cells, threshold))
        row.append(_sizes({p for c in cells.values() for p in c.parameters}))
        row.append(_sizes({s for c in cells.values() for s in c.state_sizes}))
        if fixed:
            near = [c.neighbour_mean for c in cells.values() if c.neighbours]
            trained = [c.mean for c in cells.values() if c.neighbours]
            row.append(
                f"{statistics.fmean(near):.3f} (trained: {statistics.fmean(trained):.3f})" if near else "–"
            )
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if marked:
        lines += [f"{BELOW} below the order-free baseline (`bag`): failure to learn, not a memory limit.", ""]
    if fixed and any(c.neighbours for cells in rows.values() for c in cells.values()):
        lines += [
            "Position reliance: mean test accuracy at the untrained distances within 2 of each run's "
            "training distance (averaged over the run's points); far below the trained accuracy means "
            "the model answers by relative position rather than by content.",
            "",
        ]
    return lines


def xy_section(title: str, xname: str, table: dict[tuple[str, str], dict[Any, Cell]]) -> list[str]:
    """A series x value table for the capacity and state-size views (mean test accuracy over seeds)."""
    values = sorted({x for cells in table.values() for x in cells})
    lines = [f"## {title}", "", "| regime | series | " + " | ".join(f"{xname} {v:,}" for v in values) + " |"]
    lines.append("|---|---|" + "---|" * len(values))
    for (regime, series), cells in table.items():
        lines.append(
            f"| {regime} | {series} | " + " | ".join(_cell_text(cells.get(v)) for v in values) + " |"
        )
    return [*lines, ""]


def details_section(table: Table) -> list[str]:
    header = "| regime | series | distance | mean acc | 95% CI ± | n seeds | parameters | steps "
    lines = [
        "## Per cell",
        "",
        header + "| steps to threshold (trained distances) | not ok |",
        "|---" * 10 + "|",
    ]
    for (regime, series), cells in table.items():
        for distance, cell in cells.items():
            reached = [s for s in cell.steps_to_threshold if s is not None]
            to_threshold = (
                f"{statistics.median(reached):.0f} ({len(reached)}/{len(cell.steps_to_threshold)})"
                if reached else "not reached" if cell.steps_to_threshold else "–"
            )  # fmt: skip
            not_ok = ", ".join(f"{n} {s}" for s, n in sorted(cell.statuses.items()) if s != "ok")
            steps = _fmt(statistics.median(cell.steps), 0) if cell.steps else "–"
            lines.append(
                f"| {regime} | {series} | {distance} | {_fmt(cell.mean)} | {_fmt(cell.ci95)} | "
                f"{len(cell.accuracies)} | {_sizes(cell.parameters)} | {steps} | {to_threshold} | {not_ok} |"
            )
    return [*lines, ""]


def write_markdown(
    jobs: list[Job], table: Table, extra: list[str], threshold: float, path: Path, selected: str | None
) -> str:
    counts: dict[str, int] = defaultdict(int)
    for job in jobs:
        counts[job.status] += 1
    chance = sorted({j.result["chance"] for j in jobs if j.result.get("chance")})
    lines = [
        f"# Sweep report: {path.parent.name}",
        "",
        f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".  ",
        f"{budget_line(jobs)}; threshold {threshold}; chance {', '.join(f'{c:.3f}' for c in chance)}.  ",
        "Test accuracy at the answer positions, mean over seeds ± the 95% confidence interval (Student t)."
        + (f" `{selected}` selected per series on validation accuracy, never on test." if selected else ""),
        "",
    ]
    chances = chance_per_task(jobs)
    for regime in dict.fromkeys(r for r, _ in table):
        for task in tasks_of(table, regime):
            lines += regime_section(table, regime, threshold, task, chances.get(task))
    lines += extra + details_section(table)
    bad = [j for j in jobs if j.status != "ok"]
    if bad:
        lines += ["Jobs without a valid result:", ""]
        for job in bad:
            text = " ".join(str(job.result.get("reason") or last_exception(job.result.get("error"))).split())
            lines.append(f"- {job.status}: `{job.run_dir.name}` {text[:200]}")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def distance_figure(jobs: list[Job], table: Table, threshold: float) -> Any:
    """One panel per regime (and per task, in a sweep over several), with its chance level."""
    chances = chance_per_task(jobs)
    panels = []
    for regime in dict.fromkeys(r for r, _ in table):
        for task in tasks_of(table, regime):
            lines = []
            for (r, series), cells in table.items():
                points = {d: (c.mean, c.ci95) for d, c in cells.items() if c.accuracies}
                if r != regime or not points or (task is not None and task_of(series) != task):
                    continue
                size = "/".join(
                    f"{p / 1000:.0f}k" for p in sorted({p for c in cells.values() for p in c.parameters})
                )
                label = f"{short(series, task)} ({size} params, horizon {horizon_text(cells, threshold)})"
                dashed = baseline_of(table, r, series) is None and series.startswith("bag")
                lines.append(figures.Line(label, points, dashed, recall_horizon(cells, threshold)))
            trained = [d for j in jobs if j.regime == regime == "extrapolation" for d in j.trained]
            shade = (min(trained), max(trained)) if trained else None
            hlines = {"chance": chances[task]} if task in chances else {}
            hlines[f"threshold {threshold}"] = threshold
            title = f"{regime}: {REGIME_TITLES[regime]}" + (f", task {task}" if task else "")
            panels.append(figures.Panel(title, lines, shade, hlines))
    return figures.lines_figure(
        panels, "distance (tokens between the source and the answer position)",
        "test accuracy (mean over seeds, 95% CI)", note=f"{budget_line(jobs)}; dotted: recall horizons",
    )  # fmt: skip


def xy_figure(table: dict[tuple[str, str], dict[Any, Cell]], xlabel: str, log_x: bool, note: str) -> Any:
    panels = []
    for regime in dict.fromkeys(r for r, _ in table):
        lines = [
            figures.Line(series, {x: (c.mean, c.ci95) for x, c in cells.items()}, series.startswith("bag"))
            for (r, series), cells in table.items()
            if r == regime
        ]
        panels.append(figures.Panel(f"{regime}: {REGIME_TITLES[regime]}", lines))
    return figures.lines_figure(
        panels, xlabel, "test accuracy (mean over distances; 95% CI over seeds)", log_x, note
    )


def diagnostics_panels(jobs: list[Job]) -> tuple[dict[str, dict[str, dict]], dict[str, float]]:
    """Figure name -> panel (a series, with its regime when there are several) -> curves, and the probe's
    chance level per panel. The curves of one series' runs at one distance (its seeds) are averaged,
    never those of two series."""
    found: dict[str, dict[str, dict[Any, list[dict]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    chance: dict[str, float] = {}
    several = len({j.regime for j in jobs if j.result}) > 1
    for job in jobs:
        diagnostics = read_diagnostics(job.run_dir, job.result.get("config_hash")) if job.result else None
        if diagnostics is None:
            continue
        panel = f"{job.series} [{job.regime}]" if several else job.series
        for d, curve in diagnostics["gradient_norm"].items():
            found["gradient_flow"][panel][d].append(curve)
        for d, curve in diagnostics["probe_accuracy"].items():
            found["memory_probe"][panel][d].append(curve)
        chance[panel] = min([chance.get(panel, 1.0), *diagnostics["probe_chance"].values()])
        for d, layers in diagnostics["attention_mass"].items():
            masses = found["attention_mass"][panel]
            for layer, value in layers.items():
                masses[f"{layer} (max over heads)"].append({d: value})
            masses["uniform"].append({d: diagnostics["attention_uniform"][d]})
    panels = {
        name: {
            p: {k: _mean(curves) for k, curves in by_key.items()} for p, by_key in sorted(by_panel.items())
        }
        for name, by_panel in found.items()
    }
    return panels, chance


def diagnostics_figures(jobs: list[Job], out_dir: Path) -> dict[str, Path]:
    """``gradient_flow.png``, ``memory_probe.png`` and (with attention) ``attention_mass.png``."""
    panels, chance = diagnostics_panels(jobs)
    draw = {
        "gradient_flow": lambda p: figures.curves_figure(p, *figures.GRADIENT_AXES, log_y=True),
        "memory_probe": lambda p: figures.curves_figure(p, *figures.PROBE_AXES, chance=chance),
        "attention_mass": figures.mass_figure,
    }
    written = {}
    for name, found in panels.items():
        out_dir.mkdir(parents=True, exist_ok=True)
        figures.save(draw[name](found), out_dir / f"{name}.png")
        written[name] = out_dir / f"{name}.png"
    return written


def _mean(curves: list[dict]) -> dict:
    """Pointwise mean of curves (x -> y) that may cover different x."""
    keys = sorted(set().union(*curves))
    return {k: statistics.fmean(c[k] for c in curves if k in c) for k in keys}


def report(sweep_dir: Path, threshold: float = 0.9, select: str | None = None) -> dict[str, Path]:
    """Write every artefact of the report into ``sweep_dir``; returns their paths."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir, is_stale=jobs_module.is_stale)  # "running" with no live holder: stale
    if not jobs:
        raise SystemExit(f"no result.json and no multirun.yaml under {sweep_dir}: nothing to report")
    if select:
        jobs = select_on_validation(jobs, select)
    table = aggregate(jobs)
    paths = {"markdown": sweep_dir / "results.md", "csv": sweep_dir / "results.csv"}
    write_csv(jobs, paths["csv"])
    paths["plot"] = sweep_dir / "accuracy_vs_distance.png"
    figures.save(distance_figure(jobs, table, threshold), paths["plot"])
    extra: list[str] = []
    note = budget_line(jobs)
    items = varying_capacity_key(jobs, CAPACITY_KEYS)
    if items:
        name = items.split(".")[-1]
        cells = by_seed(jobs, lambda j: j.config.get(items), items)
        extra += xy_section(f"Capacity: accuracy against {name}", name, cells)
        paths[f"accuracy_vs_{name}"] = sweep_dir / f"accuracy_vs_{name}.png"
        figures.save(
            xy_figure(cells, f"{name} (items held at once)", False, note), paths[f"accuracy_vs_{name}"]
        )
    # The frontier (accuracy against state size) for runs over several distances (one state per run, at
    # its longest distance); a fixed-distance run's state changes with its distance (the main table).
    lines, figure = frontier.section(jobs, threshold, select, note)
    if figure is not None:
        extra += lines
        paths["accuracy_vs_state_size"] = sweep_dir / "accuracy_vs_state_size.png"
        figures.save(figure, paths["accuracy_vs_state_size"])
    markdown = write_markdown(jobs, table, extra, threshold, paths["markdown"], select)
    paths |= diagnostics_figures(jobs, sweep_dir)
    paths["tensorboard"] = sweep_dir / "summary"
    write_tensorboard_summary(paths, markdown, paths["tensorboard"], table, threshold, note)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. outputs/sweeps/distance_sweep")
    parser.add_argument("--threshold", type=float, default=0.9, help="accuracy defining the recall horizon")
    parser.add_argument(
        "--select", metavar="KEY", help="pick KEY's value per series on validation, e.g. train.lr"
    )
    args = parser.parse_args(argv)
    paths = report(args.sweep_dir, args.threshold, args.select)
    print(paths["markdown"].read_text())
    for name, path in paths.items():
        if name != "tensorboard":
            print(f"{name + ':':<24}{path}")
    print(f"{'tensorboard:':<24}tensorboard --logdir {args.sweep_dir}   (or: make tensorboard)")


if __name__ == "__main__":
    main()

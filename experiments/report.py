"""The sweep report: tables, the accuracy-versus-distance plot, recall horizons and a TensorBoard summary.

    python -m longrange.experiments.report outputs/sweeps/distance_sweep [--threshold 0.9]

It reads only the ``result.json`` files under the sweep folder (so it works on a partial sweep, and on one
copied from a cluster) plus Hydra's ``multirun.yaml`` to list jobs that never wrote a result. It writes,
into the sweep folder:

* ``results.csv``: one row per job (status, accuracy, per-distance accuracy, parameters, budget);
* ``results.md``: per series and distance the mean test accuracy, its 95% confidence interval over seeds,
  n seeds, parameters, steps and steps-to-threshold, plus each series' recall horizon; failed, diverged,
  interrupted and missing jobs are listed, never dropped;
* ``accuracy_vs_distance.png``: one line per series with its confidence band, chance level, horizons;
* ``summary/<series>/``: TensorBoard runs in which step = distance, so ``tensorboard --logdir SWEEP``
  draws accuracy against distance next to every job's training curves;
* ``gradient_flow.png``, ``memory_probe.png``, ``attention_mass.png``: the per-model diagnostics of the
  jobs (from their ``diagnostics.json``), next to the accuracy curve.

A *series* is a model plus every config value (other than distance and seed) that varies in the sweep,
e.g. ``lstm`` or ``lstm max_steps=250``. The *recall horizon* of a series is the largest distance up to
which mean accuracy stays at or above the threshold at every evaluated distance.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from longrange.experiments.diagnostics import plot_diagnostics
from longrange.experiments.results import NOT_HASHED, RESULT_FILE, read_result

SWEEP_AXES = ("data.distance", "data.eval_distance", "seed")  # never part of a series label
T_975 = [12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]  # Student t, df 1..10


@dataclass
class Job:
    """One job of the sweep: its result if it wrote one, else what the grid says it should have been."""

    run_dir: Path
    status: str
    model: str
    config: dict = field(default_factory=dict)  # flattened: {"data.distance": 64, ...}
    result: dict = field(default_factory=dict)
    series: str = ""

    @property
    def accuracy(self) -> dict[int, float]:
        return {int(d): a for d, a in (self.result.get("test_acc_per_distance") or {}).items()}

    @property
    def distances(self) -> list[int]:
        value = self.config.get("data.eval_distance") or self.config.get("data.distance")
        return sorted(value) if isinstance(value, list) else [] if value is None else [int(value)]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every result.json under the sweep folder, plus a 'missing' job for each grid point without one."""
    jobs = []
    for path in sorted(sweep_dir.rglob(RESULT_FILE)):
        if any(part.startswith(".") or part == "summary" for part in path.relative_to(sweep_dir).parts):
            continue
        result = read_result(path.parent)
        if result is None:
            jobs.append(Job(path.parent, "unreadable", "?"))
            continue
        model = (result.get("choices") or {}).get("model") or result["config"]["model"]["_target_"]
        jobs.append(Job(path.parent, result["status"], model, flatten(result["config"]), result))
    found = {job.run_dir.resolve() for job in jobs}
    for run_dir, overrides in expected_jobs(sweep_dir):
        if run_dir.resolve() not in found:
            config = {k: _parse(v) for k, v in overrides.items() if k != "model"}
            jobs.append(Job(run_dir, "missing", overrides.get("model", "?"), config))
    label_series(jobs)
    return jobs


def expected_jobs(sweep_dir: Path) -> list[tuple[Path, dict[str, str]]]:
    """The grid of the last launch, from Hydra's multirun.yaml: (job folder, {key: value}) per job."""
    if not (sweep_dir / "multirun.yaml").exists():
        return []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra = OmegaConf.load(sweep_dir / "multirun.yaml").hydra
    params = [f"{k}={v}" for k, v in (hydra.sweeper.get("params") or {}).items()]
    exclude = set(hydra.job.config.override_dirname.exclude_keys)
    parser = OverridesParser.create()
    grid = BasicSweeper.split_arguments(parser.parse_overrides(params + list(hydra.overrides.task)), None)
    expected = []
    for job in (job for batch in grid for job in batch):
        kept = [o for o in parser.parse_overrides(list(job)) if o.key_or_group not in exclude]
        name = ",".join(sorted(o.input_line for o in kept))
        expected.append((sweep_dir / name, {o.key_or_group: o.value() for o in kept}))
    return expected


def _parse(value: Any) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def label_series(jobs: list[Job]) -> None:
    """Series = model + the config values that vary within that model's jobs (distance and seed aside)."""
    by_model: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_model[job.model].append(job)
    for model, group in by_model.items():
        keys = {k for job in group for k in job.config if k not in SWEEP_AXES and k not in NOT_HASHED}
        varying = sorted(k for k in keys if len({repr(job.config.get(k)) for job in group if job.result}) > 1)
        for job in group:
            parts = [f"{k.split('.')[-1]}={job.config[k]}" for k in varying if k in job.config]
            job.series = " ".join([model, *parts])


@dataclass
class Cell:
    """Aggregate over seeds for one series at one distance."""

    accuracies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    parameters: set[int] = field(default_factory=set)
    steps: list[int] = field(default_factory=list)
    steps_to_threshold: list[int | None] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies) if self.accuracies else math.nan

    @property
    def ci95(self) -> float:
        """Half-width of the 95% confidence interval of the mean (Student t over seeds)."""
        n = len(self.accuracies)
        if n < 2:
            return math.nan
        t = T_975[n - 2] if n - 2 < len(T_975) else 1.96
        return t * statistics.stdev(self.accuracies) / math.sqrt(n)


def aggregate(jobs: list[Job]) -> dict[str, dict[int, Cell]]:
    table: dict[str, dict[int, Cell]] = defaultdict(lambda: defaultdict(Cell))
    for job in jobs:
        for distance in job.distances:
            cell = table[job.series][distance]
            cell.statuses[job.status] += 1
            if job.status == "ok" and distance in job.accuracy:
                cell.accuracies.append(job.accuracy[distance])
                cell.parameters.add(job.result["parameters"])
                cell.steps.append(job.result["steps"])
                cell.steps_to_threshold.append(job.result.get("steps_to_threshold"))
    return {s: dict(sorted(cells.items())) for s, cells in sorted(table.items())}


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


def _fmt(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def write_csv(jobs: list[Job], path: Path) -> None:
    columns = ["series", "model", "seed", "distance", "status", "test_acc", "val_acc"]
    columns += ["test_acc_per_distance", "parameters", "steps", "max_steps", "budget", "steps_to_threshold"]
    columns += ["wall_time_s", "run_dir"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for job in sorted(jobs, key=lambda j: (j.series, j.distances, str(j.config.get("seed")))):
            r = job.result
            writer.writerow({
                "series": job.series, "model": job.model, "seed": job.config.get("seed"),
                "distance": " ".join(map(str, job.distances)), "status": job.status,
                "test_acc": r.get("test_acc"), "val_acc": r.get("val_acc"),
                "test_acc_per_distance": " ".join(f"{d}:{a}" for d, a in job.accuracy.items()),
                "parameters": r.get("parameters"), "steps": r.get("steps"),
                "max_steps": job.config.get("trainer.max_steps"), "budget": job.config.get("train.budget"),
                "steps_to_threshold": r.get("steps_to_threshold"), "wall_time_s": r.get("wall_time_s"),
                "run_dir": str(job.run_dir),
            })  # fmt: skip


def budget_line(jobs: list[Job]) -> str:
    done = [j for j in jobs if j.result]
    seeds = sorted({j.config.get("seed") for j in jobs if j.config.get("seed") is not None})
    values = lambda key: sorted({str(j.config.get(key)) for j in done}) or ["?"]  # noqa: E731
    return (
        f"budget: {'/'.join(values('trainer.max_steps'))} steps ({'/'.join(values('train.budget'))}), "
        f"batch {'/'.join(values('train.batch_size'))}, lr {'/'.join(values('train.lr'))}; "
        f"seeds: {len(seeds)} ({', '.join(map(str, seeds))})"
    )


def write_markdown(jobs: list[Job], table: dict[str, dict[int, Cell]], threshold: float, path: Path) -> str:
    counts = defaultdict(int)
    for job in jobs:
        counts[job.status] += 1
    chance = sorted({j.result.get("chance") for j in jobs if j.result.get("chance")})
    lines = [
        f"# Sweep report: {path.parent.name}",
        "",
        f"{len(jobs)} jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".  ",
        f"{budget_line(jobs)}; threshold {threshold}; chance level {', '.join(f'{c:.3f}' for c in chance)}.",
        "Accuracy is test accuracy at the answer position, mean over seeds with a 95% confidence interval.",
        "",
        f"| series | parameters | recall horizon (acc >= {threshold}) |",
        "|---|---|---|",
    ]
    for series, cells in table.items():
        params = sorted({p for c in cells.values() for p in c.parameters})
        shown = horizon_text(cells, threshold)
        lines.append(f"| {series} | {', '.join(f'{p:,}' for p in params) or '–'} | {shown} |")
    lines += [
        "",
        "| series | distance | mean acc | 95% CI ± | n seeds | parameters | steps | steps to threshold "
        "| not ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for series, cells in table.items():
        for distance, cell in cells.items():
            reached = [s for s in cell.steps_to_threshold if s is not None]
            to_threshold = (
                f"{statistics.median(reached):.0f} ({len(reached)}/{len(cell.steps_to_threshold)})"
                if reached else "not reached" if cell.steps_to_threshold else "–"
            )  # fmt: skip
            not_ok = ", ".join(f"{n} {s}" for s, n in sorted(cell.statuses.items()) if s != "ok") or ""
            lines.append(
                f"| {series} | {distance} | {_fmt(cell.mean)} | {_fmt(cell.ci95)} | {len(cell.accuracies)} | "
                f"{', '.join(f'{p:,}' for p in sorted(cell.parameters)) or '–'} | "
                f"{_fmt(statistics.median(cell.steps), 0) if cell.steps else '–'} | {to_threshold} "
                f"| {not_ok} |"
            )
    bad = [j for j in jobs if j.status != "ok"]
    if bad:
        lines += ["", "Jobs without a valid result:", ""]
        for job in bad:
            error = (job.result.get("error") or "").strip().splitlines()[-1:] or [""]
            lines.append(f"- {job.status}: `{job.run_dir.name}` {error[0][:200]}")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def plot(jobs: list[Job], table: dict[str, dict[int, Cell]], threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for series, cells in table.items():
        points = [(d, c) for d, c in cells.items() if c.accuracies]
        if not points:
            continue
        x = [d for d, _ in points]
        mean = [c.mean for _, c in points]
        half = [0.0 if math.isnan(c.ci95) else c.ci95 for _, c in points]
        horizon = recall_horizon(cells, threshold)
        params = sorted({p for _, c in points for p in c.parameters})
        sizes = "/".join(f"{p / 1000:.0f}k" for p in params)
        label = f"{series} ({sizes} params, horizon {horizon_text(cells, threshold)})"
        (line,) = ax.plot(x, mean, marker="o", label=label)
        low = [max(0, m - h) for m, h in zip(mean, half, strict=True)]
        high = [min(1, m + h) for m, h in zip(mean, half, strict=True)]
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
        if horizon is not None:
            ax.axvline(horizon, color=line.get_color(), linestyle=":", alpha=0.7)
    trained = {
        d for j in jobs if j.config.get("data.eval_distance") for d in _as_list(j.config.get("data.distance"))
    }
    if trained:  # length extrapolation: shade the trained range
        ax.axvspan(min(trained), max(trained), color="grey", alpha=0.12, label="trained distances")
    chance = [j.result["chance"] for j in jobs if j.result.get("chance")]
    if chance:
        ax.axhline(statistics.fmean(chance), color="black", linestyle="--", linewidth=1, label="chance")
    ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ticks = sorted({d for cells in table.values() for d in cells if d > 0})
    ax.set_xticks(ticks, [str(d) for d in ticks])
    ax.minorticks_off()
    ax.set_xlabel("distance (tokens between antecedent and answer position)")
    ax.set_ylabel("test accuracy (mean over seeds, 95% CI)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("How far back can each model remember?")
    fig.text(0.01, 0.01, f"{budget_line(jobs)}; threshold {threshold} (dotted: recall horizons)", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _as_list(value: Any) -> list[int]:
    return value if isinstance(value, list) else [] if value is None else [value]


def write_tensorboard_summary(table: dict[str, dict[int, Cell]], threshold: float, out_dir: Path) -> None:
    """One TensorBoard run per series with step = distance, so TensorBoard draws the curve itself."""
    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(out_dir, ignore_errors=True)
    for series, cells in table.items():
        with SummaryWriter(log_dir=str(out_dir / series.replace(" ", "_").replace("/", "_"))) as writer:
            for distance, cell in cells.items():
                if cell.accuracies:
                    writer.add_scalar("accuracy_vs_distance/test_acc", cell.mean, global_step=distance)
                    writer.add_scalar(
                        "accuracy_vs_distance/n_seeds", len(cell.accuracies), global_step=distance
                    )
            horizon = recall_horizon(cells, threshold)
            writer.add_scalar("recall_horizon", -1 if horizon is None else horizon, global_step=0)


def report(sweep_dir: Path, threshold: float = 0.9) -> dict[str, Path]:
    """Write every artefact of the report into ``sweep_dir``; returns their paths."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    if not jobs:
        raise SystemExit(f"no result.json and no multirun.yaml under {sweep_dir}: nothing to report")
    table = aggregate(jobs)
    paths = {
        "csv": sweep_dir / "results.csv",
        "markdown": sweep_dir / "results.md",
        "plot": sweep_dir / "accuracy_vs_distance.png",
        "tensorboard": sweep_dir / "summary",
    }
    write_csv(jobs, paths["csv"])
    write_markdown(jobs, table, threshold, paths["markdown"])
    plot(jobs, table, threshold, paths["plot"])
    write_tensorboard_summary(table, threshold, paths["tensorboard"])
    runs = [job.result | {"run_dir": str(job.run_dir)} for job in jobs if job.result]  # where they are now
    for figure in plot_diagnostics(runs, sweep_dir):  # gradient flow, memory probe, attention mass
        paths[figure.stem] = figure
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. outputs/sweeps/distance_sweep")
    parser.add_argument("--threshold", type=float, default=0.9, help="accuracy defining the recall horizon")
    args = parser.parse_args(argv)
    paths = report(args.sweep_dir, args.threshold)
    print(paths["markdown"].read_text())
    for name in ("markdown", "csv", "plot", "gradient_flow", "memory_probe", "attention_mass"):
        if name in paths:
            print(f"{name + ':':<16}{paths[name]}")
    print(f"{'tensorboard:':<16}tensorboard --logdir {args.sweep_dir}   (or: make tensorboard)")


if __name__ == "__main__":
    main()

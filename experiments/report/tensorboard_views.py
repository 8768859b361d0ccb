"""What TensorBoard shows of a sweep at its default settings: the true accuracy per distance first, and the
model and regime as the first hyperparameters.

Checked against TensorBoard 2.21's own code and in a headless browser (tests/test_tensorboard.py):

* The default tab is Time Series. It sorts all cards (scalars, images) by tag, in natural order where
  ``/`` and digits come first and upper case before lower case, groups them by the tag's first component
  and expands only the first two groups. The report's run ``summary`` therefore tags its images
  ``Sweep/...``: upper case, so the group opens first, above every job's lower-case tags (``attention``,
  ``train``, ``val``, ...). Its first cards are :func:`accuracy_tables`, the report's table as one image
  per regime with large digits (readable at a card's ~490 x 240 px, no smoothing, no step axis), then the
  report's figures; the Text tab holds the whole report (``Sweep/report``).
* The HParams tab takes its columns from an experiment summary (each job writes one through Lightning's
  ``log_hyperparams``; the plugin picks the first it finds) or else from the sessions, and in both cases
  sorts them by (values differ across sessions first, then name) before the page shows the first five.
  Each run's hparams (``run.callbacks.tensorboard_hparams``) therefore add ``Model``, ``Regime`` and
  ``Task`` to the flattened config: capitalised names sort before every lower-case config key, so they
  are the first columns whichever summary is read. Metrics: the final test accuracy first, then validation.

Plain Python and matplotlib; torch's ``SummaryWriter`` is imported only to write (never Lightning: the
report imports this module).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from longrange.experiments.figures import to_image
from longrange.experiments.report.analysis import REGIME_TITLES, Cell, Table, horizon_text

GROUP = "Sweep"  # upper case: the first group of Time Series, above the jobs' lower-case tags
TABLE_TAG = f"{GROUP}/accuracy per distance"  # + ", <regime>": the first cards of the default view
REPORT_TAG = f"{GROUP}/report"
FIGURE_TAGS = {"plot": "accuracy vs distance"}  # report path names -> tag names (others: "_" -> " ")
ROW, HEADER, HORIZON_WIDTH = 0.62, 1.05, 1.9  # the table images' layout, in inches


def accuracy_tables(table: Table, threshold: float, note: str = "") -> dict[str, Figure]:
    """The report's accuracy table as images, one per regime (each fits a Time Series card, ~2:1): a row
    per series, a column per distance, each cell the mean test accuracy over seeds (with the 95% CI under
    it when there are several seeds) on a red (0) to green (1) scale, the recall horizon after each row."""
    blocks: dict[str, dict[str, dict[int, Cell]]] = {}
    for (regime_name, series), cells in table.items():
        blocks.setdefault(regime_name, {})[series] = cells
    return {name: _table_figure(name, rows, threshold, note) for name, rows in blocks.items()}


def _table_figure(regime_name: str, rows: dict[str, dict[int, Cell]], threshold: float, note: str) -> Figure:
    names, xs = list(rows), sorted({d for cells in rows.values() for d in cells})
    label = max(len(s) for s in names) * 0.13 + 0.3  # inches
    title = f"{regime_name}: {REGIME_TITLES.get(regime_name, '')}"
    least = max(7.0, 0.14 * len(title) + 0.3)  # inches: wide enough for the title
    cell = max(1.0, (least - label - HORIZON_WIDTH) / len(xs))
    width, height = label + cell * len(xs) + HORIZON_WIDTH, HEADER + ROW * len(names) + 0.1
    figure = Figure(figsize=(width, height), dpi=100)
    ax = figure.add_axes((label / width, 0.1 / height, cell * len(xs) / width, ROW * len(names) / height))
    figure.text(0.01, 1 - 0.08 / height, title, ha="left", va="top", fontsize=16, fontweight="bold")
    subtitle = "test accuracy, mean over seeds" + (f"; {note}" if note else "")
    figure.text(0.01, 1 - 0.42 / height, subtitle, ha="left", va="top", fontsize=10, color="0.3")
    values = np.array([[_mean(rows[s].get(d)) for d in xs] for s in names], dtype=float)
    ax.imshow(np.ma.masked_invalid(values), cmap=colormaps["RdYlGn"], vmin=0, vmax=1, aspect="auto")
    for i, series in enumerate(names):
        for j, distance in enumerate(xs):
            found = rows[series].get(distance)
            ci = found.ci95 if found is not None else math.nan
            text = "–" if math.isnan(values[i, j]) else f"{values[i, j]:.3f}"
            ink = "white" if values[i, j] < 0.15 or values[i, j] > 0.85 else "black"  # on dark red, green
            shift = 0.0 if math.isnan(ci) else 0.12
            ax.text(j, i - shift, text, ha="center", va="center", fontsize=17, color=ink)
            if not math.isnan(ci):
                ax.text(j, i + 0.3, f"± {ci:.2f}", ha="center", va="center", fontsize=10, color=ink)
        horizon = horizon_text(rows[series], threshold)
        ax.text(len(xs) - 0.35, i, horizon, ha="left", va="center", fontsize=16, clip_on=False)
    ax.text(len(xs) - 0.35, -0.62, f"horizon (>= {threshold})", ha="left", va="bottom", fontsize=11)
    ax.set_xticks(range(len(xs)), [f"D = {d}" if j == 0 else str(d) for j, d in enumerate(xs)], fontsize=14)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(names)), names, fontsize=16)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return figure


def _mean(cell: Cell | None) -> float:
    return float(cell.mean) if cell is not None and cell.accuracies else math.nan


def write_tensorboard_summary(
    paths: dict[str, Path], markdown: str, out_dir: Path, table: Table, threshold: float, note: str = ""
) -> None:
    """The TensorBoard run ``summary``: the accuracy table as the first image of the default view, then the
    report's figures (``Sweep/<name>``), and the report's Markdown in the Text tab. No scalars: nothing to
    smooth and no step axis to misread. Replaces the run each time."""
    from matplotlib.image import imread
    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(out_dir, ignore_errors=True)
    with SummaryWriter(log_dir=str(out_dir)) as writer:
        writer.add_text(REPORT_TAG, markdown, global_step=0)
        for regime_name, figure in accuracy_tables(table, threshold, note).items():
            writer.add_image(
                f"{TABLE_TAG}, {regime_name}", to_image(figure), global_step=0, dataformats="HWC"
            )
        for name, path in paths.items():
            if path.suffix == ".png":
                pixels = (imread(path)[..., :3] * 255).astype(np.uint8)  # (H, W, 3)
                tag = f"{GROUP}/{FIGURE_TAGS.get(name, name.replace('_', ' '))}"
                writer.add_image(tag, pixels, global_step=0, dataformats="HWC")

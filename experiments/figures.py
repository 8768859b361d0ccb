"""Every figure of the project, drawn one way: matplotlib ``Figure`` objects (no pyplot, no global backend),
panels side by side with shared y axes, the same sizes and fonts. Training runs log them to TensorBoard as
images (:func:`to_image`); the report saves them as PNG files.

* :func:`attention_figure`: one sample's attention heatmaps (training runs and ``interpret``);
* :func:`curves_figure`: one curve per distance (gradient flow, memory probe);
* :func:`mass_figure`: attention mass on the antecedent against distance;
* :func:`lines_figure`: the report's accuracy curves with confidence bands, one panel per regime
  (accuracy against distance, against the number of items held, against state size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

PANEL_SIZE = (4.6, 3.6)  # inches per panel


def panel_row(
    count: int, sharey: bool = True, extra_height: float = 0.0, extra_width: float = 0.0
) -> tuple[Figure, list[Axes]]:
    """A figure of ``count`` panels side by side (the layout of every multi-panel figure here)."""
    width, height = PANEL_SIZE
    size = (width * count + 0.6 + extra_width, height + extra_height)
    figure = Figure(figsize=size, dpi=100, layout="constrained")
    return figure, list(figure.subplots(1, count, squeeze=False, sharey=sharey)[0])


def save(figure: Figure, path: Any) -> None:
    """Write a figure as PNG (Agg)."""
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110)


def to_image(figure: Figure) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a figure, rendered with Agg (no pyplot, no global backend)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _ticks(ax: Any, axis: str, labels: dict[int, str], colours: dict[int, str]) -> None:
    """Tick labels at the given coordinates; those in ``colours`` coloured and bold."""
    positions = sorted(labels)
    getattr(ax, f"set_{axis}ticks")(positions, [labels[i] for i in positions])
    for tick, position in zip(getattr(ax, f"get_{axis}ticklabels")(), positions, strict=True):
        if position in colours:
            tick.set(color=colours[position], fontweight="bold")


def _fixed_grid(
    size: tuple[float, float], rows: int, cols: int, margins: tuple[float, float, float, float], **grid: Any
) -> tuple[Figure, np.ndarray]:
    """A figure of ``size`` inches with fixed (left, right, bottom, top) margins in inches: several
    times faster to draw than with a layout engine, which matters inside a training run."""
    (width, height), (left, right, bottom, top) = size, margins
    figure = Figure(figsize=size, dpi=90)
    box = {
        "left": left / width,
        "right": 1 - right / width,
        "bottom": bottom / height,
        "top": 1 - top / height,
    }
    return figure, figure.subplots(rows, cols, squeeze=False, gridspec_kw=box | grid)


def attention_figure(
    words: list[str],
    maps: Sequence[Any],
    answer: int,
    antecedent: int | None,
    title: str,
    full_max_len: int = 24,
    zoom: int = 8,
) -> Figure:
    """Heatmaps of one sample's attention, per layer and head; ``maps``: per layer (H, L, L) weights
    (arrays or CPU tensors).

    Up to ``full_max_len`` tokens: the whole (L, L) map per head, tokens on both axes. Longer: per layer,
    the answer row over the whole sequence (heads as rows) plus a zoomed window of ``zoom`` tokens either
    side of the antecedent. The answer position is marked red, the antecedent cyan.
    """
    layers, heads = len(maps), maps[0].shape[0]
    colours = {answer: "red"} | ({antecedent: "darkcyan"} if antecedent is not None else {})
    style = {"vmin": 0.0, "vmax": 1.0, "cmap": "viridis", "interpolation": "nearest"}
    margins = (0.9, 1.0, 0.8, 0.6)  # inches: token labels left and below, colour bar right, titles above
    if len(words) <= full_max_len:
        side = max(1.8, 0.1 * len(words))  # inches per (L, L) panel
        size = (side * heads + 0.25 * (heads - 1) + 1.9, (side + 0.3) * layers + 1.1)
        figure, axes = _fixed_grid(size, layers, heads, margins, wspace=0.25 / side, hspace=0.3 / side)
        for layer, row in enumerate(axes):
            for head, ax in enumerate(row):
                weights = np.asarray(maps[layer][head], dtype=float)  # (L, L): row = query, column = key
                image = ax.imshow(weights, **style)
                ax.add_patch(Rectangle((-0.5, answer - 0.5), answer + 1, 1, fill=False, ec="red", lw=1))
                mass = ""
                if antecedent is not None:
                    cell = Rectangle((antecedent - 0.5, answer - 0.5), 1, 1, fill=False, ec="cyan", lw=2)
                    ax.add_patch(cell)
                    mass = f" · {weights[answer, antecedent]:.2f}"
                ax.set_title(f"layer {layer} head {head}{mass}", fontsize=8)
                _ticks(ax, "x", dict(enumerate(words)) if layer == layers - 1 else {}, colours)
                _ticks(ax, "y", dict(enumerate(words)) if head == 0 else {}, colours)
                ax.tick_params(axis="x", labelrotation=90, labelsize=6)
                ax.tick_params(axis="y", labelsize=6)
    else:
        row_height = 0.3 * heads  # inches per layer's strip; 1 inch between strips for labels and title
        size = (12.0, row_height * layers + 1.0 * (layers - 1) + 1.4)
        figure, axes = _fixed_grid(
            size, layers, 2, margins, width_ratios=[3, 1], wspace=0.08, hspace=1 / row_height
        )
        around = antecedent if antecedent is not None else answer
        window = range(max(0, around - zoom), min(answer, around + zoom) + 1)
        for layer, (whole, zoomed) in enumerate(axes):
            row = np.asarray(maps[layer], dtype=float)[:, answer, : answer + 1]  # (H, p + 1): the answer row
            image = whole.imshow(row, aspect="auto", **style)
            zoomed.imshow(row[:, window.start : window.stop], aspect="auto", **style)
            ends = {i: f"{i} {words[i]}" for i in (0, answer, antecedent) if i is not None}
            _ticks(whole, "x", ends, colours)
            inside = {i - window.start: words[i] for i in window}
            _ticks(zoomed, "x", inside, {i - window.start: c for i, c in colours.items()})
            if antecedent is not None:
                for ax, x in ((whole, antecedent), (zoomed, antecedent - window.start)):
                    ax.add_patch(Rectangle((x - 0.5, -0.5), 1, heads, fill=False, ec="cyan", lw=1.5))
            whole.set_title(f"layer {layer}: answer row over all {answer + 1} positions", fontsize=8)
            zoomed.set_title(f"zoom: positions {window.start}..{window.stop - 1}", fontsize=8)
            whole.set_yticks(range(heads), [f"head {h}" for h in range(heads)], fontsize=6)
            zoomed.set_yticks([])
            for ax in (whole, zoomed):
                ax.tick_params(axis="x", labelrotation=90, labelsize=6)
    width, height = size
    bar = figure.add_axes((1 - 0.75 / width, 0.25, 0.12 / width, 0.5))
    figure.colorbar(image, cax=bar, label="attention weight")
    figure.suptitle(title, fontsize=9, y=1 - 0.1 / height, va="top")
    return figure


def curves_figure(
    panels: dict[str, dict[int, dict[int, float]]],
    xlabel: str,
    ylabel: str,
    log_y: bool = False,
    chance: dict[str, float] | None = None,
) -> Figure:
    """One panel per title, one curve per distance D (x -> y), D marked by a dotted vertical line."""
    figure, axes = panel_row(len(panels))
    distances = sorted({d for curves in panels.values() for d in curves})
    colour = {d: colormaps["viridis"](0.9 * i / max(1, len(distances) - 1)) for i, d in enumerate(distances)}
    for ax, (name, curves) in zip(axes, panels.items(), strict=True):
        for d, curve in sorted(curves.items()):
            # On a log axis, zeros are gradients below float32's normal range (flushed denormals).
            x = sorted(k for k, v in curve.items() if v > 0 or not log_y)
            ax.plot(x, [curve[k] for k in x], marker=".", ms=3, lw=1.2, color=colour[d], label=f"D={d}")
            ax.axvline(d, color=colour[d], lw=0.6, ls=":")
        if chance and name in chance:
            ax.axhline(chance[name], color="grey", lw=0.8, ls="--", label="chance")
        ax.set_xscale("symlog", linthresh=1)  # linear up to 1, logarithmic beyond: 0 stays on the axis
        ax.set_xlim(left=0)
        if log_y:
            ax.set_yscale("log")
        ax.set(title=name, xlabel=xlabel)
        ax.grid(alpha=0.3, which="both" if log_y else "major")
        ax.legend(fontsize=6, ncols=2)
    axes[0].set_ylabel(ylabel)
    return figure


GRADIENT_AXES = ("position's distance from the answer (p - t - 1)", "|| d loss / d embedding ||")
PROBE_AXES = ("tokens after the antecedent (k = D + 1: answer position)", "linear probe accuracy")


def mass_figure(panels: dict[str, dict[str, dict[int, float]]]) -> Figure:
    """Attention mass on the antecedent against the task distance D: one curve per layer, and uniform."""
    figure, axes = panel_row(len(panels))
    for ax, (title, curves) in zip(axes, panels.items(), strict=True):
        for name, curve in sorted(curves.items()):
            x = sorted(curve)
            style: dict[str, Any] = (
                {"color": "grey", "ls": "--", "lw": 0.8} if name == "uniform" else {"marker": "o", "ms": 3}
            )
            ax.plot(x, [curve[d] for d in x], label=name, **style)
        ax.set_xscale("log", base=2)
        ax.set(title=title, xlabel="distance D", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("attention mass on the antecedent")
    return figure


@dataclass
class Line:
    """One series of a report figure: x -> (mean, 95% CI half-width) with its label and style."""

    label: str
    points: dict[Any, tuple[float, float]] = field(default_factory=dict)  # x (a number) -> (mean, CI)
    dashed: bool = False  # controls (the order-free baseline) are dashed
    marker: float | None = None  # a vertical dotted line (the recall horizon), in the line's colour


@dataclass
class Panel:
    title: str
    lines: list[Line]
    shade: tuple[float, float] | None = None  # an x range to shade (the trained distances)
    hlines: dict[str, float] = field(default_factory=dict)  # label -> y (chance, threshold)


CROWDED = 6  # curves in one panel above which its legend goes outside


def lines_figure(
    panels: list[Panel],
    xlabel: str,
    ylabel: str,
    log_x: bool = True,
    note: str = "",
    data_ticks: bool = True,
    legend_outside: bool = False,
) -> Figure:
    """Accuracy curves with confidence bands, one panel per regime; every panel has the same y range.
    ``data_ticks``: a log axis labelled at every x of the data (distances), else at powers of 2 (state
    sizes, too close together to label each), every panel over the same x range. ``legend_outside``: the
    legend right of the panel (many series over the whole panel); with several panels, one legend right of
    the last for all of them (a series has one colour in every panel). A panel of more than
    :data:`CROWDED` curves gets its legend outside too (inside, it would hide them), and more than 10
    series draw from 20 colours."""
    crowded = any(sum(len(line.points) > 1 for line in p.lines) > CROWDED for p in panels)
    legend_outside = legend_outside or crowded
    shared = legend_outside and len(panels) > 1  # a series has one colour in every panel: one legend
    extra_width = 3.0 * legend_outside
    figure, axes = panel_row(len(panels), extra_height=0.25 * bool(note), extra_width=extra_width)
    ticks = sorted({x for p in panels for line in p.lines for x in line.points if x > 0})
    names = {line.label.split(" (")[0] for p in panels for line in p.lines}
    palette, size = (colormaps["tab10"], 10) if len(names) <= 10 else (colormaps["tab20"], 20)
    colours: dict[str, Any] = {}
    for ax, panel in zip(axes, panels, strict=True):
        for line in panel.lines:
            name = line.label.split(" (")[0]
            colour = colours.setdefault(name, palette(len(colours) % size))
            x = sorted(line.points)
            mean = [line.points[k][0] for k in x]
            half = [0.0 if math.isnan(line.points[k][1]) else line.points[k][1] for k in x]
            style: dict[str, Any] = {"ls": "--", "lw": 1.2} if line.dashed else {"lw": 1.6}
            ax.plot(x, mean, marker="o", ms=3.5, color=colour, label=line.label, **style)
            low = [max(0.0, m - h) for m, h in zip(mean, half, strict=True)]
            high = [min(1.0, m + h) for m, h in zip(mean, half, strict=True)]
            ax.fill_between(x, low, high, color=colour, alpha=0.15, lw=0)
            legend = any(len(other.points) > 1 for other in panel.lines)
            if len(x) == 1 and not legend:  # one point, no legend to name it: name it beside the point
                ax.annotate(name.split(" ")[0], (x[0], mean[0]), xytext=(3, 3), textcoords="offset points",
                            fontsize=6, rotation=35)  # fmt: skip
            if line.marker is not None:
                ax.axvline(line.marker, color=colour, ls=":", lw=1, alpha=0.8)
        if panel.shade:
            ax.axvspan(*panel.shade, color="grey", alpha=0.12, label="trained distances")
        for (label, y), dash in zip(panel.hlines.items(), ("--", ":"), strict=False):
            ax.axhline(y, color="black" if dash == "--" else "grey", ls=dash, lw=0.9, label=label)
        if log_x and ticks and not data_ticks:
            ax.set_xscale("log", base=2)
            first, last = int(math.log2(ticks[0])), int(math.log2(ticks[-1])) + 2
            powers = [2**k for k in range(first, last, 1 if last - first <= 8 else 2)]  # labels that fit
            ax.set_xticks(powers, [f"{t:,}" for t in powers])
            ax.minorticks_off()
            ax.tick_params(axis="x", labelsize=7)
        elif log_x and ticks:
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
            if len(ticks) > 6:  # e.g. state sizes: close on a log axis
                ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax.set(title=panel.title, xlabel=xlabel, ylim=(-0.02, 1.02))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        if shared:  # one legend for every panel, right of the last one
            if ax is axes[-1]:
                named = {str(h.get_label()): h for a in axes for h in a.get_legend_handles_labels()[0]}
                ax.legend(list(named.values()), list(named), fontsize=6, loc="upper left",
                          bbox_to_anchor=(1.01, 1.0))  # fmt: skip
        elif any(len(line.points) > 1 for line in panel.lines) and legend_outside:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        elif any(len(line.points) > 1 for line in panel.lines):  # else single points are named beside them
            ax.legend(fontsize=6, loc="best")
    if log_x and not data_ticks:  # side by side, the same state reads at the same place
        limits = [ax.get_xlim() for ax in axes]
        for ax in axes:
            ax.set_xlim(min(low for low, _ in limits) / 1.2, max(high for _, high in limits) * 1.2)  # margin
    axes[0].set_ylabel(ylabel)
    if note:
        figure.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))  # type: ignore[union-attr,call-arg]
        figure.text(0.01, 0.01, note, fontsize=7)
    return figure

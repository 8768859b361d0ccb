"""Diagnostics: *why* a model remembers or forgets, in TensorBoard, in ``diagnostics.json`` and in the report.

Everything goes through the backbone contract (``models/__init__.py``), so a new variant gets every
diagnostic that applies to it without code here: ``module.embedding`` -> ``module.backbone`` ->
``module.head``, plus ``backbone.attention_maps`` where the backbone has it (a model without it simply
gets no attention map and no attention mass). Nothing is task-specific: an answer at position ``p`` whose
dependency has distance ``D`` has its *antecedent* at ``a = p - D - 1`` for every task. Each sample
contributes its last answer position.

Measurements:

* **attention mass** on the antecedent: the weight ``A[layer][head, p, a]``, averaged over the samples,
  then the max over heads (the head that does the retrieval); uniform attention would give ``1/(p+1)``.
* **gradient flow**: ``|| d loss(p) / d x_t ||`` for every input embedding ``x_t`` before the answer,
  averaged over the samples, against the position's distance from the answer ``p - t - 1`` (the task's
  own notion of distance: the antecedent sits at ``D``). RNNs show the vanishing gradient; attention a
  direct path.
* **memory probe**: a ridge-regression linear classifier on the backbone's output (recurrent state;
  for attention the residual stream) at position ``a + k``, predicting the antecedent token, for
  ``k = 0, 1, 2, 4, ..., D, D + 1`` (``k = D + 1`` is the answer position). It is fit on fresh
  training-split samples and scored on the validation samples: held-out accuracy against ``k`` is the
  forgetting curve of the model's state, independent of the readout.

The :class:`Diagnostics` callback logs the attention scalars (``val/attn_mass/layer{l}/d={D}``) after
every validation and heatmaps (``attention/d={D}``) after some of them; at the end of training the
gradient-flow and probe figures (``diagnostics/gradient_flow``, ``diagnostics/memory_probe``), plus
``diagnostics.json`` in the run folder (keys are strings in JSON)::

    {"step": 1000, "config_hash": "...",        # the run's result.json hash: stale files are detectable
     "cost_s": 2.2,                              # seconds this callback spent over the whole run
     "gradient_norm":  {"64": {"0": 4e-05, "1": ..., "64": ..., "68": ...}},  # D -> distance -> norm
     "probe_accuracy": {"64": {"0": 1.0, "1": ..., "65": ...}},              # D -> offset k -> acc
     "probe_chance":   {"64": 0.03125},                                      # 1 / number of classes
     "attention_mass": {"64": {"layer0": 0.54, "layer1": 0.74}},             # {} without attention
     "attention_uniform": {"64": 0.0143}}                                    # 1 / (p + 1)

:func:`plot_diagnostics` draws the sweep report's per-model gradient-flow, probe and attention-mass
figures from those files.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from longrange.datasets.base import IGNORE, TaskBatch
from longrange.datasets.datamodule import TaskDataModule
from longrange.experiments.results import read_result, write_json_atomic

DIAGNOSTICS_FILE = "diagnostics.json"
PROBE_STREAM_INDEX = 2**40  # probe-fitting samples: a batch index of the training stream no run reaches


# --- which answers, and where their antecedents are -------------------------------------------------
class Answers(NamedTuple):
    """One answer per sample (its last answer position) and the antecedent it depends on."""

    tokens: Tensor  # (N, L)
    position: Tensor  # (N,) answer position p
    antecedent: Tensor  # (N,) p - D - 1
    target: Tensor  # (N,) the id expected at p

    def to(self, device: torch.device) -> Answers:
        return Answers(*(t.to(device) for t in self))

    def take(self, index: slice | Tensor) -> Answers:
        """The answers of some samples (a slice or an index tensor)."""
        return Answers(*(t[index] for t in self))


def last_answers(batch: TaskBatch) -> dict[int, Answers]:
    """Distance D -> the samples of ``batch`` whose last answer has distance D (samples without one
    are dropped). Tokens are cloned, so tensors made under inference mode can enter autograd later."""
    is_answer = batch.targets != IGNORE  # (B, L)
    has_answer = is_answer.any(dim=1)  # (B,)
    positions = torch.arange(batch.tokens.shape[1], device=is_answer.device).expand_as(is_answer)
    last = torch.where(is_answer, positions, -1).amax(dim=1)[has_answer]  # (N,)
    rows = has_answer.nonzero().squeeze(1)  # (N,)
    distance = batch.distances[rows, last]  # (N,)
    found = {}
    for d in distance.unique().tolist():
        at = distance == d
        r, p = rows[at], last[at]
        found[d] = Answers(batch.tokens[r].clone(), p, p - d - 1, batch.targets[r, p])
    return found


def collect_answers(batches: list[TaskBatch], limit: int) -> dict[int, Answers]:
    """Distance -> up to ``limit`` answers from ``batches`` (samples at one distance share a length)."""
    parts: dict[int, list[Answers]] = defaultdict(list)
    for batch in batches:
        for d, answers in last_answers(batch).items():
            have = sum(len(a.position) for a in parts[d])
            if have < limit:
                parts[d].append(answers.take(slice(limit - have)))
    return {d: Answers(*(torch.cat(t) for t in zip(*p, strict=True))) for d, p in sorted(parts.items())}


# --- measurements: pure functions of the module and some answers ------------------------------------
def has_attention(module: pl.LightningModule) -> bool:
    return callable(getattr(module.backbone, "attention_maps", None))


@torch.no_grad()
def attention_maps(module: pl.LightningModule, tokens: Tensor) -> list[Tensor]:
    """Per layer, (B, H, L, L) attention weights of the backbone on ``tokens`` (B, L)."""
    return module.backbone.attention_maps(module.embedding(tokens))


@torch.no_grad()
def attention_mass(module: pl.LightningModule, answers: Answers, chunk: int = 8) -> Tensor:
    """(layers, H): mean weight the answer position gives its antecedent; chunked to bound memory."""
    total = None
    for start in range(0, len(answers.position), chunk):
        part = answers.take(slice(start, start + chunk))
        rows = torch.arange(len(part.position), device=part.tokens.device)
        maps = attention_maps(module, part.tokens)  # layers x (n, H, L, L)
        mass = torch.stack([m[rows, :, part.position, part.antecedent] for m in maps])  # (layers, n, H)
        total = mass.sum(1) if total is None else total + mass.sum(1)
    return total / len(answers.position)


def gradient_flow(module: pl.LightningModule, answers: Answers) -> dict[int, float]:
    """Distance from the answer (p - t - 1) -> mean over samples of || d loss(p) / d x_t ||."""
    # Outside inference mode even when called from a validation hook; cuDNN RNNs only backprop in
    # training mode, so the native kernels run here (eval mode keeps dropout off).
    with torch.inference_mode(False), torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        x = module.embedding(answers.tokens).detach().requires_grad_(True)  # (N, L, d_input)
        features = module.backbone(x)  # (N, L, d_output)
        rows = torch.arange(len(answers.position), device=x.device)
        logits = module.head(features[rows, answers.position])  # (N, V)
        loss = F.cross_entropy(logits, answers.target, reduction="sum")  # each sample: its own loss
        (grad,) = torch.autograd.grad(loss, x)  # (N, L, d_input)
    norms = grad.norm(dim=-1)  # (N, L)
    distance = answers.position[:, None] - torch.arange(x.shape[1], device=x.device) - 1  # (N, L)
    before = distance >= 0  # positions strictly before the answer
    size = int(distance.max()) + 1
    sums = norms.new_zeros(size).index_add_(0, distance[before], norms[before])
    counts = torch.bincount(distance[before], minlength=size)
    return {d: (sums[d] / counts[d]).item() for d in range(size) if counts[d] > 0}


def probe_offsets(distance: int) -> list[int]:
    """Offsets k after the antecedent to probe: 0, 1, 2, 4, ..., D and D + 1 (the answer position)."""
    powers = {2**i for i in range(distance.bit_length())}
    return sorted({0, distance, distance + 1} | {k for k in powers if k <= distance})


@torch.no_grad()
def probe_features(
    module: pl.LightningModule, answers: Answers, offsets: list[int], chunk: int = 128
) -> tuple[Tensor, Tensor]:
    """(K, N, d_output) backbone features at antecedent + k for each offset k, and (N,) the antecedents."""
    shift = torch.tensor(offsets, device=answers.tokens.device)  # (K,)
    parts = []
    for start in range(0, len(answers.position), chunk):
        part = answers.take(slice(start, start + chunk))
        features = module(part.tokens)  # (n, L, d_output)
        at = part.antecedent[None, :] + shift[:, None]  # (K, n)
        rows = torch.arange(len(part.position), device=at.device).expand_as(at)
        parts.append(features[rows, at])  # (K, n, d_output)
    rows = torch.arange(len(answers.position), device=answers.tokens.device)
    return torch.cat(parts, dim=1), answers.tokens[rows, answers.antecedent]


def ridge_probe(train: Tensor, train_y: Tensor, test: Tensor, test_y: Tensor, ridge: float = 1e-3) -> Tensor:
    """(K,) held-out accuracy of one least-squares linear classifier per offset.

    train (K, N, d), test (K, M, d); standardised per offset, one-hot targets, closed-form ridge
    solution (deterministic, no training loop). Classes absent from training count as errors.
    """
    mean, std = train.mean(1, keepdim=True), train.std(1, keepdim=True) + 1e-6
    ones = torch.ones(*train.shape[:2], 1, device=train.device)
    x = torch.cat([(train - mean) / std, ones], dim=-1)  # (K, N, d + 1)
    classes, y = torch.unique(train_y, return_inverse=True)  # y (N,)
    targets = F.one_hot(y, len(classes)).float().expand(x.shape[0], -1, -1)  # (K, N, C)
    eye = torch.eye(x.shape[-1], device=x.device)
    gram = x.transpose(1, 2) @ x + ridge * x.shape[1] * eye  # (K, d + 1, d + 1)
    weights = torch.linalg.solve(gram, x.transpose(1, 2) @ targets)  # (K, d + 1, C)
    ones = torch.ones(*test.shape[:2], 1, device=test.device)
    predicted = classes[(torch.cat([(test - mean) / std, ones], dim=-1) @ weights).argmax(-1)]  # (K, M)
    return (predicted == test_y).float().mean(1)


def memory_probe(
    module: pl.LightningModule, fit: Answers, score: Answers, distance: int
) -> tuple[dict[int, float], float]:
    """Offset k after the antecedent -> held-out accuracy of a linear probe for the antecedent token,
    and the chance level (1 / number of distinct antecedent tokens the probe was fit on)."""
    offsets = probe_offsets(distance)
    train, train_y = probe_features(module, fit, offsets)
    test, test_y = probe_features(module, score, offsets)
    accuracy = ridge_probe(train.float(), train_y, test.float(), test_y)
    return dict(zip(offsets, accuracy.tolist(), strict=True)), 1 / len(train_y.unique())


# --- figures ------------------------------------------------------------------------------------
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
    maps: list[Tensor],
    answer: int,
    antecedent: int | None,
    title: str,
    full_max_len: int = 24,
    zoom: int = 8,
) -> Figure:
    """Heatmaps of one sample's attention, per layer and head; ``maps``: per layer (H, L, L).

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
                weights = maps[layer][head].float().cpu().numpy()  # (L, L): row = query, column = key
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
            row = maps[layer][:, answer, : answer + 1].float().cpu().numpy()  # (H, p + 1): the answer row
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
    figure = Figure(figsize=(4.2 * len(panels) + 0.6, 3.4), dpi=100, layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    distances = sorted({d for curves in panels.values() for d in curves})
    colour = {d: colormaps["viridis"](0.9 * i / max(1, len(distances) - 1)) for i, d in enumerate(distances)}
    for ax, (name, curves) in zip(axes, panels.items(), strict=True):
        for d, curve in sorted(curves.items()):
            # On a log axis, zeros are gradients below float32's normal range (LSTM flushes denormals).
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


# --- the callback -------------------------------------------------------------------------------
class Diagnostics(pl.Callback):
    """Attention mass after each validation, heatmaps after some; gradient flow, memory probe and
    ``diagnostics.json`` at the end of training.

    Bounded: attention mass and gradient flow use ``samples`` validation samples per distance, the probe
    is fit on ``probe_samples`` fresh training-split samples and scored on up to ``probe_eval_samples``
    validation samples; heatmaps show one sample at up to ``heatmap_distances`` of the validation
    distances (shortest, middle, longest) after the 1st, (1 + ``heatmap_every``)th, ... validation and
    the last one (drawing is what costs: about 0.2 s a figure on one CPU core). ``cost_s`` in
    diagnostics.json is the time this callback took over the run.
    """

    def __init__(
        self,
        out_dir: Path,
        samples: int = 32,
        probe_samples: int = 512,
        probe_eval_samples: int = 256,
        heatmap_distances: int = 3,
        heatmap_every: int = 5,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.samples, self.probe_samples, self.probe_eval_samples = samples, probe_samples, probe_eval_samples
        self.heatmap_distances, self.heatmap_every = heatmap_distances, heatmap_every
        self.cost_s, self._validations = 0.0, 0

    @staticmethod
    def _val_answers(trainer: pl.Trainer, limit: int, device: torch.device) -> dict[int, Answers]:
        answers = collect_answers(trainer.datamodule.eval_set("val").batches, limit)
        return {d: a.to(device) for d, a in answers.items()}

    # --- after each validation: attention only (a model without attention maps costs nothing here) ---
    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not has_attention(module) or not _has_task(trainer):
            return
        start = time.perf_counter()
        answers = self._val_answers(trainer, self.samples, module.device)
        for d, part in answers.items():
            mass = attention_mass(module, part).amax(dim=1)  # (layers,): max over heads
            for layer, value in enumerate(mass.tolist()):
                module.log(f"val/attn_mass/layer{layer}/d={d}", value)
        self._validations += 1
        due = (self._validations - 1) % self.heatmap_every == 0 or trainer.global_step >= trainer.max_steps
        if isinstance(trainer.logger, TensorBoardLogger) and due:
            for d in _spread(list(answers), self.heatmap_distances):
                image = to_image(self._sample_figure(module, answers[d].take(slice(1)), d))
                trainer.logger.experiment.add_image(
                    f"attention/d={d}", image, trainer.global_step, dataformats="HWC"
                )
        self.cost_s += time.perf_counter() - start

    @torch.no_grad()
    def _sample_figure(self, module: pl.LightningModule, answer: Answers, distance: int) -> Figure:
        vocab = module.hparams.vocab
        words = [vocab[i] for i in answer.tokens[0].tolist()]
        p, a, target = int(answer.position[0]), int(answer.antecedent[0]), int(answer.target[0])
        predicted = int(module.head(module(answer.tokens)[0, p]).argmax())
        maps = [m[0] for m in attention_maps(module, answer.tokens)]  # layers x (H, L, L)
        title = (
            f"D={distance} · step {module.global_step} · antecedent '{words[a]}' at {a}, answer at {p} · "
            f"target '{vocab[target]}', predicted '{vocab[predicted]}'"
        )
        return attention_figure(words, maps, p, a, title)

    # --- at the end of training: everything, into diagnostics.json and TensorBoard ------------------
    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or not _has_task(trainer):
            return
        start, was_training = time.perf_counter(), module.training
        module.eval()
        result = self._measure(trainer, module)
        module.train(was_training)
        if isinstance(trainer.logger, TensorBoardLogger):
            name = module.backbone.__class__.__name__
            chance = {name: min(result["probe_chance"].values())}
            figures = {
                "diagnostics/gradient_flow": curves_figure(
                    {name: _unkeyed(result["gradient_norm"])}, *GRADIENT_AXES, log_y=True
                ),
                "diagnostics/memory_probe": curves_figure(
                    {name: _unkeyed(result["probe_accuracy"])}, *PROBE_AXES, chance=chance
                ),
            }
            for tag, figure in figures.items():
                image = to_image(figure)
                trainer.logger.experiment.add_image(tag, image, trainer.global_step, dataformats="HWC")
        self.cost_s += time.perf_counter() - start
        result["cost_s"] = self.cost_s
        write_json_atomic(self.out_dir / DIAGNOSTICS_FILE, result)

    def _measure(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, Any]:
        """The content of diagnostics.json (see the module docstring), per validation distance."""
        data = trainer.datamodule
        run = read_result(self.out_dir) or {}  # train.py writes it before fitting, with the config hash
        keys = ("gradient_norm", "probe_accuracy", "probe_chance", "attention_mass", "attention_uniform")
        result: dict[str, Any] = {"step": trainer.global_step, "config_hash": run.get("config_hash")}
        result |= {key: {} for key in keys}
        val = self._val_answers(trainer, max(self.samples, self.probe_eval_samples), module.device)
        for d, answers in val.items():
            few = answers.take(slice(self.samples))
            result["gradient_norm"][str(d)] = _keyed(gradient_flow(module, few))
            fresh = data.task.generate("train", self.probe_samples, d, data.seed, PROBE_STREAM_INDEX)
            fit = last_answers(fresh)[d].to(module.device)
            probe, chance = memory_probe(module, fit, answers, d)
            result["probe_accuracy"][str(d)], result["probe_chance"][str(d)] = _keyed(probe), chance
            if has_attention(module):
                mass = attention_mass(module, few).amax(dim=1)  # (layers,)
                result["attention_mass"][str(d)] = {f"layer{i}": v for i, v in enumerate(mass.tolist())}
                result["attention_uniform"][str(d)] = (1 / (few.position.float() + 1)).mean().item()
        return result


def _has_task(trainer: pl.Trainer) -> bool:
    """Diagnostics need the project's data module (its fixed validation set and its task)."""
    return isinstance(getattr(trainer, "datamodule", None), TaskDataModule)


def _spread(values: list[int], count: int) -> list[int]:
    """Up to ``count`` values spread evenly over a sorted list: shortest, middle, longest."""
    if len(values) <= count:
        return values
    return sorted({values[round(i * (len(values) - 1) / max(1, count - 1))] for i in range(count)})


def _keyed(curve: dict[int, float]) -> dict[str, float]:
    return {str(k): v for k, v in curve.items()}


def _unkeyed(curves: dict[str, dict[str, float]]) -> dict[int, dict[int, float]]:
    return {int(d): {int(k): v for k, v in curve.items()} for d, curve in curves.items()}


# --- the sweep report's figures -----------------------------------------------------------------
def plot_diagnostics(runs: list[dict], out_dir: Path) -> list[Path]:
    """Per-model gradient-flow, probe and attention-mass figures for a sweep; returns the PNGs written
    (``gradient_flow.png``, ``memory_probe.png`` and, when a model has attention, ``attention_mass.png``).

    ``runs``: parsed result.json dicts (with "run_dir" and "config"); each run's ``diagnostics.json`` is
    read next to its result.json; runs without one (or with one from another config) are skipped, and
    runs of one model at one distance (seeds) are averaged. One panel per model, named by the run's
    config choice (``choices["model"]``, e.g. "gru") or else the backbone's class name.
    """
    # figure -> model -> curve name -> one curve (x -> y) per run, averaged below
    found: dict[str, dict[str, dict[Any, list[dict[int, float]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    chance: dict[str, float] = {}
    for run in runs:
        try:
            diagnostics = json.loads((Path(run["run_dir"]) / DIAGNOSTICS_FILE).read_text())
        except (OSError, json.JSONDecodeError, KeyError):
            continue
        if diagnostics.get("config_hash") != run.get("config_hash"):
            continue  # left over from an earlier config in the same folder
        model = run.get("choices", {}).get("model") or run["config"]["model"]["_target_"].rsplit(".", 1)[-1]
        for d, curve in _unkeyed(diagnostics["gradient_norm"]).items():
            found["gradient_flow.png"][model][d].append(curve)
        for d, curve in _unkeyed(diagnostics["probe_accuracy"]).items():
            found["memory_probe.png"][model][d].append(curve)
        chance[model] = min([chance.get(model, 1.0), *diagnostics["probe_chance"].values()])
        masses = found["attention_mass.png"][model] if diagnostics["attention_mass"] else {}
        for d, layers in diagnostics["attention_mass"].items():
            for layer, value in layers.items():
                masses[f"{layer} (max over heads)"].append({int(d): value})
            masses["uniform"].append({int(d): diagnostics["attention_uniform"][d]})
    draw = {
        "gradient_flow.png": lambda panels: curves_figure(panels, *GRADIENT_AXES, log_y=True),
        "memory_probe.png": lambda panels: curves_figure(panels, *PROBE_AXES, chance=chance),
        "attention_mass.png": _mass_figure,
    }
    out_dir = Path(out_dir)
    written = []
    for name, models in found.items():
        panels = {
            model: {key: _mean(c) for key, c in curves.items()} for model, curves in sorted(models.items())
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        draw[name](panels).savefig(out_dir / name)
        written.append(out_dir / name)
    return written


def _mean(curves: list[dict[int, float]]) -> dict[int, float]:
    """Pointwise mean of curves (x -> y) that may cover different x."""
    keys = sorted(set().union(*curves))
    return {k: float(np.mean([c[k] for c in curves if k in c])) for k in keys}


def _mass_figure(panels: dict[str, dict[str, dict[int, float]]]) -> Figure:
    """Attention mass on the antecedent against the task distance D: one curve per layer, and uniform."""
    figure = Figure(figsize=(4.2 * len(panels) + 0.6, 3.4), dpi=100, layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (model, curves) in zip(axes, panels.items(), strict=True):
        for name, curve in sorted(curves.items()):
            x = sorted(curve)
            style = (
                {"color": "grey", "ls": "--", "lw": 0.8} if name == "uniform" else {"marker": "o", "ms": 3}
            )
            ax.plot(x, [curve[d] for d in x], label=name, **style)
        ax.set_xscale("log", base=2)
        ax.set(title=model, xlabel="distance D", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0].set_ylabel("attention mass on the antecedent")
    return figure

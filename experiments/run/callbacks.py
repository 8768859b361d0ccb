"""Lightning callbacks of the project: decoded samples and diagnostics in TensorBoard, random state in
checkpoints.

:class:`Diagnostics` runs the measurements of ``measurements`` during training and writes
``diagnostics.json`` into the run folder (keys are strings in JSON)::

    {"step": 1000, "config_hash": "...",        # the run's result.json hash: stale files are detectable
     "cost_s": 2.2,                              # seconds this callback spent over the whole run
     "gradient_norm":  {"64": {"0": 4e-05, "1": ..., "64": ..., "68": ...}},  # D -> distance -> norm
     "probe_accuracy": {"64": {"0": 1.0, "1": ..., "65": ...}},              # D -> offset k -> acc
     "probe_chance":   {"64": 0.03125},                                      # 1 / number of classes
     "attention_mass": {"64": {"layer0": 0.54, "layer1": 0.74}},             # {} without attention
     "attention_uniform": {"64": 0.0143}}                                    # 1 / (p + 1)
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from matplotlib.figure import Figure
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from longrange.datasets.base import IGNORE
from longrange.datasets.datamodule import EVAL_BLOCK_TOKENS, TaskDataModule, samples_within
from longrange.experiments.figures import GRADIENT_AXES, PROBE_AXES, attention_figure, curves_figure, to_image
from longrange.experiments.results import (
    DIAGNOSTICS_FILE,
    flatten,
    model_name,
    regime,
    write_json_atomic,
)
from longrange.experiments.run.measurements import (
    Answers,
    attention_maps,
    attention_mass,
    collect_answers,
    gradient_flow,
    has_attention,
    last_answers,
    probe_features,
    probe_offsets,
    ridge_probe,
)
from longrange.experiments.run.resources import (
    DIAGNOSTIC_SAMPLES,
    MAP_ELEMENTS,
    MAP_MAX_LEN,
    PROBE_CHUNK,
    PROBE_EVAL_SAMPLES,
    PROBE_FIT_TOKENS,
    PROBE_SAMPLES,
)

if TYPE_CHECKING:
    from torch import Tensor

    from longrange.models.module import LongRangeModule

PROBE_STREAM_INDEX = 2**40  # probe-fitting samples: a batch index of the training stream no run reaches
log = logging.getLogger("longrange")


def build_callbacks(nodes: Any, config_hash: str) -> list[pl.Callback]:
    """The run's Lightning callbacks from its ``callbacks`` node (conf/callbacks/), in order; a node set to
    null is left out. Those that record which config they belong to (``config_hash``) get the run's."""
    found = [instantiate(node, _convert_="all") for node in nodes.values() if node is not None]
    for callback in found:
        if hasattr(callback, "config_hash"):
            callback.config_hash = config_hash
    return found


class ThresholdBudget(EarlyStopping):
    """``train.budget``: with "to_threshold", Lightning's EarlyStopping stops the run at the first
    validation whose ``val/acc`` reaches ``threshold``; with "fixed_steps" it never stops it."""

    def __init__(self, budget: str, threshold: float) -> None:
        super().__init__("val/acc", mode="max", stopping_threshold=threshold, patience=10**9)
        self.active = budget == "to_threshold"

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.active:
            super().on_validation_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.active:
            super().on_train_epoch_end(trainer, pl_module)


class LogDecodedSamples(pl.Callback):
    """After each validation, a Markdown table of a few decoded validation samples per distance with the
    model's prediction, under the TensorBoard text tag ``samples``."""

    def __init__(self, per_distance: int = 2, max_words: int = 60) -> None:
        self.per_distance, self.max_words = per_distance, max_words

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(trainer.logger, TensorBoardLogger) or trainer.sanity_checking:
            return
        module = cast("LongRangeModule", pl_module)  # the project's only LightningModule
        words = module.hparams["vocab"]
        rows, seen = ["| distance | sample | target | prediction |", "|---|---|---|---|"], set()
        for batch in _datamodule(trainer).eval_set("val").batches:
            distance = int(batch.distances[batch.distances != IGNORE][0])
            if distance in seen:
                continue
            seen.add(distance)
            batch = type(batch)(*(t[: self.per_distance].to(module.device) for t in batch))
            predictions = module.head(module(batch.tokens)).argmax(-1)  # (b, L)
            for tokens, targets, predicted in zip(batch.tokens, batch.targets, predictions, strict=True):
                text = [words[t] for t in tokens.tolist() if t != 0]
                if len(text) > self.max_words:
                    half = self.max_words // 2
                    text = text[:half] + [f"... ({len(text) - 2 * half} words) ..."] + text[-half:]
                at = targets != IGNORE
                wanted = " ".join(words[t] for t in targets[at].tolist())
                got = " ".join(words[t] for t in predicted[at].tolist())
                ok = "yes" if torch.equal(targets[at], predicted[at]) else "no"
                rows.append(f"| {distance} | {' '.join(text)} | {wanted} | {got} ({ok}) |")
        trainer.logger.experiment.add_text("samples", "\n".join(rows), trainer.global_step)


class RandomState(pl.Callback):
    """Saves the torch, numpy and Python random states in every checkpoint and restores them on resume,
    so a resumed run draws the same random numbers (dropout, ...) as an uninterrupted one. Lightning
    restores weights, optimiser and loop progress but not these. Stored as tensors and plain lists, so
    the checkpoint still loads with ``weights_only=True``."""

    def state_dict(self) -> dict:
        # numpy's stub types the default call as a dict; the default (legacy=True) returns this tuple
        state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
        kind, keys, position, has_gauss, gauss = state
        return {
            "torch": torch.get_rng_state(),
            "numpy": [kind, keys.tolist(), position, has_gauss, gauss],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        }

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))


class Diagnostics(pl.Callback):
    """Attention mass after each validation, heatmaps after some; gradient flow, memory probe and
    ``diagnostics.json`` at the end of training.

    Bounded: attention mass and gradient flow use ``samples`` validation samples per distance, the probe
    is fit on ``probe_samples`` fresh training-split samples and scored on up to ``probe_eval_samples``
    validation samples; heatmaps show one sample at up to ``heatmap_distances`` of the validation
    distances (shortest, middle, longest) after the 1st, (1 + ``heatmap_every``)th, ... validation and
    the last one (drawing is what costs: about 0.2 s a figure on one CPU core). ``cost_s`` in
    diagnostics.json is the time this callback took over the run.

    Memory, at any length (``resources.estimate`` counts the same bounds): the gradient flow's backward
    pass and the probe's forward passes run on pieces of at most ``resources.eval_tokens`` tokens (one
    sample at the least; the results are combined exactly), the probe's training samples are generated in
    pieces of ``resources.PROBE_FIT_TOKENS`` tokens, and attention maps ((B, H, L, L) per layer) are built for
    at most ``resources.MAP_ELEMENTS`` / L^2 samples at once and skipped past ``map_max_len`` tokens
    (logged, and listed under ``skipped`` in diagnostics.json). A stop request (SIGTERM, which Lightning
    records) ends the diagnostics between two pieces.
    """

    def __init__(
        self,
        out_dir: Path,
        samples: int = DIAGNOSTIC_SAMPLES,
        probe_samples: int = PROBE_SAMPLES,
        probe_eval_samples: int = PROBE_EVAL_SAMPLES,
        heatmap_distances: int = 3,
        heatmap_every: int = 5,
        map_max_len: int = MAP_MAX_LEN,
        config_hash: str | None = None,
    ) -> None:
        self.out_dir, self.config_hash = (
            Path(out_dir),
            config_hash,
        )  # the run's hash: stale files are detectable
        self.samples, self.probe_samples, self.probe_eval_samples = samples, probe_samples, probe_eval_samples
        self.heatmap_distances, self.heatmap_every = heatmap_distances, heatmap_every
        self.map_max_len = map_max_len
        self.cost_s, self._validations = 0.0, 0
        self._skipped: set[int] = set()  # distances whose attention maps were skipped (logged once)

    @staticmethod
    def _val_answers(trainer: pl.Trainer, limit: int, device: torch.device) -> dict[int, Answers]:
        answers = collect_answers(_datamodule(trainer).eval_set("val").batches, limit)
        return {d: a.to(device) for d, a in answers.items()}

    def _maps_fit(self, distance: int, answers: Answers) -> bool:
        """Whether attention maps are built at this distance (sequences up to ``map_max_len`` tokens)."""
        length = answers.tokens.shape[1]
        if length <= self.map_max_len:
            return True
        if distance not in self._skipped:
            self._skipped.add(distance)
            log.info(
                "attention maps skipped at distance %d: sequences of %d tokens > %d (the (L, L) maps would "
                "need %.0f MB per head and layer for one sample)", distance, length, self.map_max_len,
                4 * length**2 / 2**20,
            )  # fmt: skip
        return False

    def _attention_mass(self, module: LongRangeModule, answers: Answers) -> Tensor:
        length = answers.tokens.shape[1]
        return attention_mass(module, answers, chunk=samples_within(MAP_ELEMENTS // length, length, 8))

    # --- after each validation: attention only (a model without attention maps costs nothing here) ---
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module = cast("LongRangeModule", pl_module)  # the project's only LightningModule
        if trainer.sanity_checking or not has_attention(module) or not _has_task(trainer):
            return
        start = time.perf_counter()
        answers = {d: a for d, a in self._val_answers(trainer, self.samples, module.device).items()
                   if self._maps_fit(d, a)}  # fmt: skip
        for d, part in answers.items():
            _stop_if_asked(trainer)
            mass = self._attention_mass(module, part).amax(dim=1)  # (layers,): max over heads
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
    def _sample_figure(self, module: LongRangeModule, answer: Answers, distance: int) -> Figure:
        vocab = module.hparams["vocab"]
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
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module = cast("LongRangeModule", pl_module)  # the project's only LightningModule
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
                    {name: result["gradient_norm"]}, *GRADIENT_AXES, log_y=True
                ),
                "diagnostics/memory_probe": curves_figure(
                    {name: result["probe_accuracy"]}, *PROBE_AXES, chance=chance
                ),
            }
            for tag, figure in figures.items():
                image = to_image(figure)
                trainer.logger.experiment.add_image(tag, image, trainer.global_step, dataformats="HWC")
        self.cost_s += time.perf_counter() - start
        result["cost_s"] = self.cost_s
        write_json_atomic(self.out_dir / DIAGNOSTICS_FILE, result)

    def _measure(self, trainer: pl.Trainer, module: LongRangeModule) -> dict[str, Any]:
        """The content of diagnostics.json (see the module docstring), per validation distance (JSON turns
        the integer keys into strings; ``results.read_diagnostics`` turns them back)."""
        keys = ("gradient_norm", "probe_accuracy", "probe_chance", "attention_mass", "attention_uniform")
        result: dict[str, Any] = {"step": trainer.global_step, "config_hash": self.config_hash}
        result |= {key: {} for key in keys}
        val = self._val_answers(trainer, max(self.samples, self.probe_eval_samples), module.device)
        for d, answers in val.items():
            few = answers.take(slice(self.samples))
            result["gradient_norm"][d] = self._gradient_flow(trainer, module, few)
            probe, chance = self._memory_probe(trainer, module, answers, d)
            result["probe_accuracy"][d], result["probe_chance"][d] = probe, chance
            if has_attention(module) and self._maps_fit(d, few):
                _stop_if_asked(trainer)
                mass = self._attention_mass(module, few).amax(dim=1)  # (layers,)
                result["attention_mass"][d] = {f"layer{i}": v for i, v in enumerate(mass.tolist())}
                result["attention_uniform"][d] = (1 / (few.position.float() + 1)).mean().item()
        if self._skipped:
            result["skipped"] = {"attention_maps": sorted(self._skipped), "map_max_len": self.map_max_len}
        return result

    def _gradient_flow(self, trainer: pl.Trainer, module: LongRangeModule, answers: Answers) -> dict:
        """``measurements.gradient_flow`` on pieces of at most ``resources.eval_tokens`` tokens, combined
        exactly: each piece's mean at a distance weighted by its samples that reach that far back."""
        sums: dict[int, float] = defaultdict(float)
        counts: dict[int, int] = defaultdict(int)
        piece = samples_within(_eval_tokens(trainer), answers.tokens.shape[1], len(answers.position))
        for start in range(0, len(answers.position), piece):
            _stop_if_asked(trainer)
            part = answers.take(slice(start, start + piece))
            for distance, norm in gradient_flow(module, part).items():
                count = int((part.position > distance).sum())  # samples with a position this far back
                sums[distance] += norm * count
                counts[distance] += count
        return {d: sums[d] / counts[d] for d in sorted(sums)}

    def _memory_probe(
        self, trainer: pl.Trainer, module: LongRangeModule, score: Answers, distance: int
    ) -> tuple[dict[int, float], float]:
        """``measurements.memory_probe``, with its fit samples generated and its features computed in
        pieces (the same samples and features as in one piece, where one piece fits the bounds)."""
        data, offsets, length = _datamodule(trainer), probe_offsets(distance), score.tokens.shape[1]
        chunk = samples_within(_eval_tokens(trainer), length, PROBE_CHUNK)
        piece = samples_within(PROBE_FIT_TOKENS, length, self.probe_samples)
        features, targets = [], []
        for index, start in enumerate(range(0, self.probe_samples, piece)):
            _stop_if_asked(trainer)
            size = min(piece, self.probe_samples - start)
            fresh = data.task.generate("train", size, distance, data.seed, PROBE_STREAM_INDEX + index)
            found = probe_features(module, last_answers(fresh)[distance].to(module.device), offsets, chunk)
            features.append(found[0])
            targets.append(found[1])
        train, train_y = torch.cat(features, dim=1), torch.cat(targets)
        _stop_if_asked(trainer)
        test, test_y = probe_features(module, score, offsets, chunk)
        accuracy = ridge_probe(train.float(), train_y, test.float(), test_y)
        return dict(zip(offsets, accuracy.tolist(), strict=True)), 1 / len(train_y.unique())


def _stop_if_asked(trainer: pl.Trainer) -> None:
    """Lightning records SIGTERM and stops between batches; the diagnostics stop between their pieces."""
    if trainer.received_sigterm:
        raise SIGTERMException


def _has_task(trainer: pl.Trainer) -> bool:
    """Diagnostics need the project's data module (its fixed validation set and its task) and a task whose
    answers sit exactly their recorded distance after their source (``SyntheticTask.exact_distances``:
    not MQAR's random layout, whose distances are binned)."""
    data = getattr(trainer, "datamodule", None)
    return isinstance(data, TaskDataModule) and data.task.exact_distances


def _datamodule(trainer: pl.Trainer) -> TaskDataModule:
    """The trainer's data module, a ``TaskDataModule`` wherever these callbacks run (``_has_task``).
    Lightning sets ``trainer.datamodule`` at run time without declaring it on ``Trainer``."""
    return cast(TaskDataModule, getattr(trainer, "datamodule", None))


def _eval_tokens(trainer: pl.Trainer) -> int:
    """The run's evaluation budget (``resources.eval_tokens``, which the data module holds): the
    diagnostics' pieces follow the same bound as evaluation batches."""
    return _datamodule(trainer).eval_tokens or EVAL_BLOCK_TOKENS


def _spread(values: list[int], count: int) -> list[int]:
    """Up to ``count`` values spread evenly over a sorted list: shortest, middle, longest."""
    if len(values) <= count:
        return values
    return sorted({values[round(i * (len(values) - 1) / max(1, count - 1))] for i in range(count)})


def tensorboard_hparams(
    config: dict[str, Any], record: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hparams, metrics) for ``trainer.logger.log_hyperparams``: ``Model``, ``Regime`` and ``Task`` (the
    first columns of the HParams tab), the whole resolved config (Lightning flattens it: ``data/distance``)
    and the parameter count; metrics ``hparams/test_acc`` then ``hparams/val_acc`` (those known)."""
    choices = record.get("choices") or {}
    task = (
        choices.get("data") or str((config.get("data") or {}).get("_target_", "?")).rsplit(".", 1)[-1].lower()
    )
    headline = {"Model": model_name(record), "Regime": regime(flatten(config)), "Task": task}
    hparams = headline | config | {"parameters": record.get("parameters")}
    metrics = {f"hparams/{k}": record[k] for k in ("test_acc", "val_acc") if record.get(k) is not None}
    return hparams, metrics

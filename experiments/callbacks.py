"""Lightning callbacks of the project: decoded samples in TensorBoard, random state in checkpoints."""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from longrange.datasets.base import IGNORE


class LogDecodedSamples(pl.Callback):
    """After each validation, a Markdown table of a few decoded validation samples per distance with the
    model's prediction, under the TensorBoard text tag ``samples``."""

    def __init__(self, per_distance: int = 2, max_words: int = 60) -> None:
        self.per_distance, self.max_words = per_distance, max_words

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not isinstance(trainer.logger, TensorBoardLogger) or trainer.sanity_checking:
            return
        words = module.hparams.vocab
        rows, seen = ["| distance | sample | target | prediction |", "|---|---|---|---|"], set()
        for batch in trainer.datamodule.eval_set("val").batches:
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
        kind, keys, position, has_gauss, gauss = np.random.get_state()
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

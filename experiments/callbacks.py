"""Lightning callbacks of the project: decoded samples in TensorBoard."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from longrange.datasets.base import IGNORE
from pytorch_lightning.loggers import TensorBoardLogger


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

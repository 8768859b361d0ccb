"""The one LightningModule: embedding -> backbone -> readout at the answer positions.

It owns everything the backbones share (the contract is in ``models/__init__.py``): the token embedding,
the linear readout, the cross-entropy loss at answer positions only, accuracy overall and per distance,
AdamW with warmup and cosine decay, and the record of when validation accuracy first reached the
threshold. Its hyperparameters are plain dicts and lists, so checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn

from longrange.datasets.base import IGNORE, TaskBatch
from longrange.models import Backbone


def build_backbone(model: dict) -> Backbone:
    """The backbone a config node describes (``_target_`` plus constructor arguments), checked against the
    contract of ``models/__init__.py``."""
    backbone = instantiate(model, _convert_="all")  # plain lists and dicts, never DictConfigs
    if not isinstance(backbone, Backbone):
        missing = [
            a for a in ("d_input", "d_output", "max_len", "step", "state_size") if not hasattr(backbone, a)
        ]
        raise TypeError(
            f"{model['_target_']} does not follow the backbone contract: missing {', '.join(missing)}"
        )
    return backbone


def flush_denormals() -> None:
    """Treat denormal floats as zero on this thread (FTZ/DAZ), the one place the project sets it.

    Backpropagation through a long sequence shrinks gradients geometrically; below 1.2e-38 float32 values
    become *denormal*, and x86 CPUs compute on them 10-100x slower: recurrent steps at L = 1024 took 5-16x
    longer per token than at L = 128 (benchmarks/RESULTS.md). The values are lost in rounding anyway. The
    flag is per thread, so it is set on every forward pass (a flag write, no measurable cost).
    """
    torch.set_flush_denormal(True)


flush_denormals()  # here too: threads torch starts later inherit the flag


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


class LongRangeModule(pl.LightningModule):
    """Args:
    model: the backbone's config node as a plain dict (``_target_`` plus constructor arguments).
    vocab: the task's words, in id order (for the embedding size and for decoding samples).
    lr, weight_decay, warmup_steps, min_lr_ratio: AdamW and its schedule over ``trainer.max_steps``
        Their values are written once, in conf/config.yaml's ``train`` node, which a run passes in; a
        module built without them (memory measurement, probes on an untrained model) cannot be trained.
    threshold: validation accuracy whose first attainment is recorded as ``steps_to_threshold``.
    trained_distances: the task's training distances. ``val/acc`` and ``test/acc`` (and so the threshold)
        count only these; accuracy at every evaluated distance is logged as ``{split}/acc/d=D``. A run
        evaluated beyond its training distances (length extrapolation, position reliance) is judged on
        what it was trained for, and its other distances are reported, not averaged in.
    """

    def __init__(
        self,
        model: dict,
        vocab: list[str],
        *,
        lr: float | None = None,
        weight_decay: float | None = None,
        warmup_steps: int | None = None,
        min_lr_ratio: float | None = None,
        threshold: float | None = None,
        trained_distances: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # plain containers only; the run logs its own hparams
        self.backbone = build_backbone(model)
        self.embedding = nn.Embedding(len(vocab), self.backbone.d_input)
        self.head = nn.Linear(self.backbone.d_output, len(vocab))
        self.steps_to_threshold: int | None = None
        self.results: dict[str, dict[str, Any]] = {}  # split -> {"acc": ..., "acc_per_distance": {...}}
        self._counts: dict[int, Tensor] = {}  # distance -> [correct, total] over the current eval epoch

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, tokens: Tensor) -> Tensor:
        flush_denormals()
        return self.backbone(self.embedding(tokens))  # (B, L) -> (B, L, d_output)

    def answer_logits(self, batch: TaskBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Logits (N, V), targets (N,) and distances (N,) at the N answer positions of the batch."""
        features = self(batch.tokens)  # (B, L, d_output)
        is_answer = batch.targets != IGNORE  # (B, L)
        return self.head(features[is_answer]), batch.targets[is_answer], batch.distances[is_answer]

    def training_step(self, batch: TaskBatch, batch_idx: int) -> Tensor:
        logits, targets, _ = self.answer_logits(batch)
        loss = F.cross_entropy(logits, targets)
        if not torch.isfinite(loss):
            raise Diverged(f"non-finite training loss {loss.item()} at step {self.global_step}")
        # Only on the steps Lightning writes (``trainer.log_every_n_steps``): each ``self.log`` call costs
        # ~0.3 ms of bookkeeping even when nothing is written, 5-15% of a short step (benchmarks/, item 3).
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # type: ignore[attr-defined]
            accuracy = (logits.argmax(-1) == targets).float().mean()
            self.log_dict({"train/loss": loss, "train/acc": accuracy}, prog_bar=True, batch_size=len(targets))
        return loss

    # --- evaluation: exact accuracy per distance, accumulated over the whole split -------------------
    def _eval_step(self, batch: TaskBatch) -> None:
        logits, targets, distances = self.answer_logits(batch)
        correct = logits.argmax(-1) == targets
        for distance in distances.unique().tolist():
            at = distances == distance
            counts = torch.stack([correct[at].sum(), at.sum()]).cpu()
            self._counts[distance] = self._counts.get(distance, torch.zeros(2, dtype=torch.long)) + counts

    def _eval_epoch_end(self, split: str) -> None:
        if not self._counts:
            return
        per_distance = {d: (c[0] / c[1]).item() for d, c in sorted(self._counts.items())}
        trained = [c for d, c in self._counts.items() if d in (self.hparams["trained_distances"] or [d])]
        total = torch.stack(trained or list(self._counts.values())).sum(0)
        acc = (total[0] / total[1]).item()  # over the trained distances' answers
        self._counts = {}
        self.results[split] = {"acc": acc, "acc_per_distance": per_distance, "step": self.global_step}
        self.log(f"{split}/acc", acc, prog_bar=split == "val")
        for distance, value in per_distance.items():
            self.log(f"{split}/acc/d={distance}", value)
        threshold = self.hparams["threshold"]
        if split == "val" and self.steps_to_threshold is None and threshold is not None and acc >= threshold:
            self.steps_to_threshold = self.global_step

    def validation_step(self, batch: TaskBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: TaskBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # --- optimiser --------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        h = self.hparams
        unset = [key for key in ("lr", "weight_decay", "warmup_steps", "min_lr_ratio") if h[key] is None]
        if unset:
            raise ValueError(f"LongRangeModule built without {', '.join(unset)}: pass the run's train node")
        decay = [p for p in self.parameters() if p.dim() >= 2]  # matrices; biases and norms are not decayed
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": h["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=h["lr"],
        )
        total = max(self.trainer.max_steps, 1)

        def schedule(step: int) -> float:  # linear warmup, then cosine decay to min_lr_ratio
            if step < h["warmup_steps"]:
                return (step + 1) / h["warmup_steps"]
            progress = min(1.0, (step - h["warmup_steps"]) / max(1, total - h["warmup_steps"]))
            return h["min_lr_ratio"] + (1 - h["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- state that must survive a resume ---------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["steps_to_threshold"] = self.steps_to_threshold

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.steps_to_threshold = checkpoint.get("steps_to_threshold")

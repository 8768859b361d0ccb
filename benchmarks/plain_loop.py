"""The floor of one job: a plain PyTorch loop doing the work of `longrange-train`, without Lightning or Hydra.

    python -m benchmarks.plain_loop SPEC.json OUT_DIR

``SPEC.json`` is the job's resolved config as `longrange-train` composes it (``benchmarks.entry_point``
writes it with Hydra's compose API, so both sides read the same values: conf/model/*.yaml, conf/data/*.yaml,
the ``train`` node of conf/config.yaml, conf/trainer/default.yaml, ``resources.eval_tokens``). The loop
does what a job computes, and nothing else:

* the same model: token embedding -> the backbone of the model's YAML node -> linear readout, built in the
  same order after the same seeding as ``models.module.LongRangeModule`` (so the initial weights are the
  same), denormals flushed as there;
* the same data: ``task.train_batch(batch_size, seed, step)`` for step 0..max_steps-1, and the fixed
  validation and test sets cut exactly as ``datasets.datamodule.TaskDataModule`` cuts them
  (:func:`eval_batches`, checked against it by ``benchmarks.entry_point``);
* the same optimisation: AdamW with the decayed/undecayed groups, linear warmup then cosine decay (as
  ``LongRangeModule.configure_optimizers``), gradient clipping at ``trainer.gradient_clip_val``;
* the same evaluation: the validation set generated before the first step (as Lightning's fit loop
  does), a validation every ``trainer.val_check_interval`` steps (exact accuracy per
  distance), one checkpoint save (weights, optimiser, schedule, RNG) per validation, the test set once.

It prints one line ``PLAIN {json}`` with its phases' timestamps (``[time.time(), time.process_time()]``:
the parent compares the first with the moment it started the process) and the accuracies, which must
equal the Lightning job's (the same work gives the same numbers).

Only torch and the project's task and model files are imported (never Lightning, Hydra or OmegaConf).
"""

from __future__ import annotations

import time

MARKS = {"interpreter": time.time()}

import importlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from longrange.datasets.base import IGNORE, TaskBatch  # noqa: E402

# datasets/datamodule.py's EVAL_BLOCK_TOKENS (that module imports Lightning; the value is checked equal by
# benchmarks.entry_point.check_plain_loop)
EVAL_BLOCK_TOKENS = 2**18


def build(node: dict[str, Any]) -> Any:
    """A ``_target_`` node's object, as hydra.utils.instantiate builds it (keywords, plain values)."""
    module_name, _, name = node["_target_"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    return cls(**{k: v for k, v in node.items() if k != "_target_"})


def samples_within(tokens: int, length: int, most: int) -> int:
    return max(1, min(most, tokens // max(length, 1)))


def eval_batches(task: Any, split: str, batch_size: int, eval_samples: int, seed: int,
                 eval_tokens: int | None) -> list[TaskBatch]:  # fmt: skip
    """The split's fixed batches, cut as ``TaskDataModule._generate`` cuts them."""
    batches = []
    for distance in task.eval_distances or ():
        length = task.seq_len(distance)
        block = samples_within(EVAL_BLOCK_TOKENS, length, batch_size)
        piece = samples_within(eval_tokens or block * length, length, block)
        for index, start in enumerate(range(0, eval_samples, block)):
            size = min(block, eval_samples - start)
            generated = task.generate(split, size, distance, seed, index)
            for cut in range(0, len(generated.tokens), piece):
                batches.append(TaskBatch(*(t[cut : cut + piece] for t in generated)))
    return batches


class Model(nn.Module):
    """Embedding -> backbone -> readout, the parameters created in LongRangeModule's order."""

    def __init__(self, model: dict[str, Any], vocab_size: int) -> None:
        super().__init__()
        self.backbone = build(model)
        self.embedding = nn.Embedding(vocab_size, self.backbone.d_input)
        self.head = nn.Linear(self.backbone.d_output, vocab_size)

    def answer_logits(self, batch: TaskBatch) -> tuple[Tensor, Tensor, Tensor]:
        torch.set_flush_denormal(True)
        features = self.backbone(self.embedding(batch.tokens))
        is_answer = batch.targets != IGNORE
        return self.head(features[is_answer]), batch.targets[is_answer], batch.distances[is_answer]


def optimiser(model: Model, train: dict[str, Any], max_steps: int) -> tuple[Any, Any]:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train["lr"],
    )
    warmup, floor, total = train["warmup_steps"], train["min_lr_ratio"], max(max_steps, 1)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


@torch.inference_mode()
def evaluate(model: Model, batches: list[TaskBatch], trained: list[int]) -> tuple[float, dict[int, float]]:
    """Accuracy over the trained distances' answers, and per distance (as LongRangeModule._eval_step)."""
    model.eval()
    counts: dict[int, Tensor] = {}
    for batch in batches:
        logits, targets, distances = model.answer_logits(batch)
        correct = logits.argmax(-1) == targets
        for distance in distances.unique().tolist():
            at = distances == distance
            found = torch.stack([correct[at].sum(), at.sum()])
            counts[distance] = counts.get(distance, torch.zeros(2, dtype=torch.long)) + found
    model.train()
    per_distance = {d: (c[0] / c[1]).item() for d, c in sorted(counts.items())}
    total = torch.stack([c for d, c in counts.items() if d in trained] or list(counts.values())).sum(0)
    return (total[0] / total[1]).item(), per_distance


def now() -> list[float]:
    """[wall-clock time, this process's CPU time]: the parent compares the first with its own start."""
    return [time.time(), time.process_time()]


def run(spec: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    marks = {"interpreter": [MARKS["interpreter"], 0.0], "imports": now()}
    train, trainer = spec["train"], spec["trainer"]
    seed, steps, every = spec["seed"], trainer["max_steps"], trainer["val_check_interval"]
    torch.set_num_threads(spec["threads"])
    random.seed(seed)  # pl.seed_everything: Python, numpy (unused here) and torch
    torch.manual_seed(seed)
    task = build(spec["data"])
    model = Model(spec["model"], len(task.vocab.words))
    optimizer, scheduler = optimiser(model, train, steps)
    clipped = [p for group in optimizer.param_groups for p in group["params"]]  # Lightning's order
    eval_args = (train["batch_size"], train["eval_samples"], seed, spec["resources"]["eval_tokens"])
    checkpoint = out_dir / "last.ckpt"
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = {"checkpoint": [0.0, 0.0], "validation": [0.0, 0.0]}  # [wall, CPU] inside the loop
    marks["fit start"] = now()
    val = eval_batches(task, "val", *eval_args)  # before the first step, as Lightning's fit loop does
    model.train()
    validations, tokens, val_acc, val_per_distance = 0, 0, None, None
    for step in range(steps):
        batch = task.train_batch(train["batch_size"], seed, step)
        if step == 0:
            marks["first step"] = now()
        tokens += batch.tokens.numel()
        logits, targets, _ = model.answer_logits(batch)
        loss = F.cross_entropy(logits, targets)
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite training loss at step {step}")
        if (step + 1) % trainer["log_every_n_steps"] == 0:  # what the module computes for its log
            (logits.argmax(-1) == targets).float().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clipped, trainer["gradient_clip_val"])
        optimizer.step()
        scheduler.step()
        if (step + 1) % every == 0:
            began = now()
            state = {
                "state_dict": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step + 1,
                "rng": torch.get_rng_state(),
            }
            torch.save(state, checkpoint)
            saved = now()
            val_acc, val_per_distance = evaluate(model, val, task.train_distances)
            validations += 1
            done = now()
            for key, (a, b) in (("checkpoint", (saved, began)), ("validation", (done, saved))):
                seconds[key] = [total + x - y for total, x, y in zip(seconds[key], a, b, strict=True)]
    marks["fit end"] = now()
    test = eval_batches(task, "test", *eval_args)
    test_acc, test_per_distance = evaluate(model, test, task.train_distances)
    marks["test end"] = now()
    return {
        "marks": marks,
        "seconds": seconds,
        "steps": steps,
        "validations": validations,
        "tokens": tokens,  # training tokens: the same on both sides (same batches)
        "val_acc": val_acc,
        "test_acc": test_acc,
        "val_acc_per_distance": val_per_distance,
        "test_acc_per_distance": test_per_distance,
        "eval_batches": {"val": len(val), "test": len(test)},
    }


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[0]).read_text())
    result = run(spec, Path(argv[1]))
    result["marks"]["exit"] = now()
    print("PLAIN " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

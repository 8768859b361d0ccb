"""Measurements of *why* a model remembers or forgets: pure functions of a trained module and some samples.

Everything goes through the backbone contract (``models/__init__.py``): ``module.embedding`` ->
``module.backbone`` -> ``module.head``, plus ``backbone.attention_maps`` where the backbone has it. Nothing
is task-specific: an answer at position ``p`` whose dependency has distance ``D`` has its *antecedent* at
``a = p - D - 1`` for every task. Each sample contributes its last answer position.

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

The Lightning callback that runs them during training is ``callbacks.Diagnostics``; the figures are in
``figures``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from longrange.datasets.base import IGNORE, TaskBatch
from longrange.models import HasAttentionMaps

if TYPE_CHECKING:
    from longrange.models.module import LongRangeModule


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
def has_attention(module: LongRangeModule) -> bool:
    return callable(getattr(module.backbone, "attention_maps", None))


@torch.no_grad()
def attention_maps(module: LongRangeModule, tokens: Tensor) -> list[Tensor]:
    """Per layer, (B, H, L, L) attention weights of the backbone on ``tokens`` (B, L)."""
    backbone: HasAttentionMaps = module.backbone  # type: ignore[assignment]  # checked by has_attention
    return backbone.attention_maps(module.embedding(tokens))


@torch.no_grad()
def attention_mass(module: LongRangeModule, answers: Answers, chunk: int = 8) -> Tensor:
    """(layers, H): mean weight the answer position gives its antecedent; chunked to bound memory."""
    total = torch.zeros(())
    for start in range(0, len(answers.position), chunk):
        part = answers.take(slice(start, start + chunk))
        rows = torch.arange(len(part.position), device=part.tokens.device)
        maps = attention_maps(module, part.tokens)  # layers x (n, H, L, L)
        mass = torch.stack([m[rows, :, part.position, part.antecedent] for m in maps])  # (layers, n, H)
        total = total + mass.sum(1)
    return total / len(answers.position)


def gradient_flow(module: LongRangeModule, answers: Answers) -> dict[int, float]:
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
    module: LongRangeModule, answers: Answers, offsets: list[int], chunk: int = 128
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
    module: LongRangeModule, fit: Answers, score: Answers, distance: int
) -> tuple[dict[int, float], float]:
    """Offset k after the antecedent -> held-out accuracy of a linear probe for the antecedent token,
    and the chance level (1 / number of distinct antecedent tokens the probe was fit on)."""
    offsets = probe_offsets(distance)
    train, train_y = probe_features(module, fit, offsets)
    test, test_y = probe_features(module, score, offsets)
    accuracy = ridge_probe(train.float(), train_y, test.float(), test_y)
    return dict(zip(offsets, accuracy.tolist(), strict=True)), 1 / len(train_y.unique())

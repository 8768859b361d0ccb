"""The backbone contract, checked for every file in conf/model/ (a new model YAML is tested for free)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from longrange.datasets.coref import CorefRecall
from longrange.experiments.config import plain
from longrange.models.module import LongRangeModule


def backbone_config(compose, name: str) -> dict:
    return plain(compose([f"model={name}"]).model)


@pytest.fixture
def module(compose, model_name: str) -> LongRangeModule:
    torch.manual_seed(0)
    return LongRangeModule(model=backbone_config(compose, model_name), vocab=CorefRecall().vocab.words)


def test_contract_shapes(module: LongRangeModule) -> None:
    backbone = module.backbone
    assert isinstance(backbone.d_input, int) and isinstance(backbone.d_output, int)
    assert backbone.max_len is None or backbone.max_len > 0
    x = torch.randn(3, 17, backbone.d_input)  # (B, L, d_input)
    assert backbone(x).shape == (3, 17, backbone.d_output)
    if hasattr(backbone, "attention_maps"):
        for weights in backbone.attention_maps(x):  # (B, H, L, L), rows sum to one, causal
            assert weights.shape[0] == 3 and weights.shape[-2:] == (17, 17)
            assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
            assert (weights.triu(1) == 0).all()


def test_causal(module: LongRangeModule) -> None:
    """The features at position t do not depend on inputs after t: their gradient there is zero."""
    backbone, L, t = module.backbone.eval(), 12, 5
    x = torch.randn(2, L, backbone.d_input, requires_grad=True)
    features = backbone(x)  # (B, L, d_output); a random readout (a plain sum is constant after LayerNorm)
    (features[:, t] * torch.randn(backbone.d_output)).sum().backward()
    assert x.grad[:, t + 1 :].abs().max() == 0
    assert x.grad[:, : t + 1].abs().sum() > 0


def test_parameter_count_is_reported(module: LongRangeModule) -> None:
    assert module.num_parameters == sum(p.numel() for p in module.parameters()) > 1000


def test_overfits_one_small_batch(module: LongRangeModule) -> None:
    task = CorefRecall(distance=6)
    batch = task.generate("train", 16, 6, seed=0)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    for _ in range(150):
        logits, targets, _ = module.answer_logits(batch)
        loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    logits, targets, _ = module.answer_logits(batch)
    assert (logits.argmax(-1) == targets).float().mean() == 1.0


def test_default_models_have_matched_parameter_counts(compose) -> None:
    vocab = CorefRecall().vocab.words
    counts = {
        n: LongRangeModule(backbone_config(compose, n), vocab).num_parameters
        for n in ("lstm", "gru", "attention", "rnn")  # the shipped comparison set
    }
    assert max(counts.values()) <= 1.10 * min(counts.values()), counts
    assert all(90_000 <= c <= 120_000 for c in counts.values()), counts

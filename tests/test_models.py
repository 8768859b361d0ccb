"""The backbone contract, checked for every file in conf/model/ (a new model YAML is tested for free). The
training and recurrent forms, causality and gradients: tests/test_model_forms.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import CONF
from omegaconf import OmegaConf

from longrange.datasets.coref import CorefRecall
from longrange.models import Backbone, state_tensors
from longrange.models.module import LongRangeModule


def backbone_config(compose, name: str, *overrides: str) -> dict:
    config = OmegaConf.to_container(compose([f"model={name}", *overrides]).model, resolve=True)
    assert isinstance(config, dict)
    return config


@pytest.fixture
def module(compose, model_name: str) -> LongRangeModule:
    torch.manual_seed(0)
    return LongRangeModule(model=backbone_config(compose, model_name), vocab=CorefRecall().vocab.words)


def test_contract_shapes(module: LongRangeModule) -> None:
    backbone = module.backbone
    assert isinstance(backbone, Backbone)
    assert isinstance(backbone.d_input, int) and isinstance(backbone.d_output, int)
    assert backbone.max_len is None or backbone.max_len > 0
    x = torch.randn(3, 17, backbone.d_input)  # (B, L, d_input)
    assert backbone(x).shape == (3, 17, backbone.d_output)
    if hasattr(backbone, "attention_maps"):
        for weights in backbone.attention_maps(x):  # (B, H, L, L), rows sum to one, causal
            assert weights.shape[0] == 3 and weights.shape[-2:] == (17, 17)
            assert torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-5)
            assert (weights.triu(1) == 0).all()


def run_steps(backbone: Backbone, x: torch.Tensor) -> tuple[torch.Tensor, object]:
    """The recurrent form over a whole sequence: (B, L, d_output) features and the last state. (The two
    forms are compared in test_model_forms.py.)"""
    outputs, state = [], None
    for t in range(x.shape[1]):
        y, state = backbone.step(x[:, t], state)
        outputs.append(y)
    return torch.stack(outputs, dim=1), state


@pytest.mark.parametrize("length", [5, 64])
def test_state_size_counts_what_the_recurrent_form_carries(module: LongRangeModule, length: int) -> None:
    """The reported state size is the number of floats per sample that ``step`` really carries."""
    backbone, batch = module.backbone.eval(), 2
    with torch.no_grad():
        _, state = run_steps(backbone, torch.randn(batch, length, backbone.d_input))
    tensors = state_tensors(state)
    assert tensors and all(t.shape[0] == batch for t in tensors)  # batch first, one state per sample
    carried = sum(t[0].numel() for t in tensors if t.is_floating_point())
    assert backbone.state_size(length) == carried


def test_num_parameters_counts_embedding_backbone_and_readout(compose) -> None:
    """Closed form for the LSTM (4 gates of input, recurrent and two bias terms), plus embedding and head."""
    vocab = CorefRecall().vocab.words
    module = LongRangeModule(backbone_config(compose, "lstm", "model.width=10", "model.d_input=6"), vocab)
    V, d, h = len(vocab), 6, 10
    assert module.num_parameters == V * d + 4 * (d * h + h * h + 2 * h) + (h * V + V)


@pytest.mark.slow  # a training outcome (150 Adam steps), not a property of the code
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
    """Every file in conf/model/ (a new model YAML is included without editing this test)."""
    vocab = CorefRecall().vocab.words
    names = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
    counts = {n: LongRangeModule(backbone_config(compose, n), vocab).num_parameters for n in names}
    assert max(counts.values()) <= 1.10 * min(counts.values()), counts
    assert all(90_000 <= c <= 120_000 for c in counts.values()), counts

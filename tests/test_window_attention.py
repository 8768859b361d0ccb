"""Sliding-window attention: the blocked training form against the (L, L) band mask, the bounded cache, and
the horizon relation D <= num_layers (window - 1) - 1, exactly (gradients) and end to end (training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from longrange.experiments.train import train
from longrange.models.window_attention import WindowTransformer

SMALL = {"width": 16, "num_heads": 2, "d_ff": 32}  # a tiny model: the properties do not depend on size


def small(num_layers: int, window: int) -> WindowTransformer:
    torch.manual_seed(0)
    return WindowTransformer(num_layers=num_layers, window=window, **SMALL).double().eval()


def banded_reference(model: WindowTransformer, x: torch.Tensor) -> torch.Tensor:
    """The same model through the explicit (L, L) band-masked softmax (the diagnostic path)."""
    h = model._positions(x)
    for block in model.blocks:
        h, _ = block(h, need_weights=True)
    return model.norm(h)


@pytest.mark.parametrize("window", [1, 2, 5, 16])
@pytest.mark.parametrize("length", [1, 7, 33])
def test_blocked_form_equals_band_mask_and_step_form(window: int, length: int) -> None:
    """Windows shorter than, equal to and longer than the sequence; lengths not a multiple of the window."""
    model = small(2, window)
    x = torch.randn(2, length, model.d_input, dtype=torch.float64)
    with torch.no_grad():
        blocked = model(x)
        torch.testing.assert_close(blocked, banded_reference(model, x), rtol=1e-9, atol=1e-9)
        state, stepped = None, []
        for t in range(length):
            y, state = model.step(x[:, t], state)
            stepped.append(y)
            assert state[1][0][0].shape[2] == min(t + 1, window - 1)  # the cache stops growing
    torch.testing.assert_close(torch.stack(stepped, 1), blocked, rtol=1e-9, atol=1e-9)
    assert model.state_size(length) == 2 * 2 * min(length, window - 1) * SMALL["width"]


def test_attention_maps_are_zero_outside_the_band() -> None:
    model, L, w = small(2, 4), 12, 4
    x = torch.randn(1, L, model.d_input, dtype=torch.float64)
    for weights in model.attention_maps(x):  # (B, H, L, L)
        offset = torch.arange(L)[:, None] - torch.arange(L)
        inside = (offset >= 0) & (offset < w)
        assert (weights[..., ~inside] == 0).all() and (weights[..., inside] > 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2, L, dtype=torch.float64))


def test_window_equal_to_the_length_is_full_attention() -> None:
    from longrange.models.attention import Transformer

    torch.manual_seed(0)
    full = Transformer(**SMALL).double().eval()
    model = small(2, 20)  # the same weights: one seed, the same construction order
    x = torch.randn(2, 20, model.d_input, dtype=torch.float64)
    torch.testing.assert_close(model(x), full(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("num_layers", "window"), [(1, 1), (1, 4), (2, 4), (3, 3), (2, 16)])
def test_horizon_exact(num_layers: int, window: int) -> None:
    """The features at the answer position a depend on the source at a - D - 1 iff D <= n (w - 1) - 1:
    the gradient with respect to every earlier input is exactly zero beyond the reach, nonzero within."""
    model = small(num_layers, window)
    reach = num_layers * (window - 1) - 1
    assert model.reach == reach
    L = reach + 12  # a few positions beyond the reach, and a length not a multiple of the window
    a = L - 3  # two positions after the answer: causality, not the end of the sequence, cuts them off
    x = torch.randn(2, L, model.d_input, dtype=torch.float64, requires_grad=True)
    (model(x)[:, a] * torch.randn(model.d_output, dtype=torch.float64)).sum().backward()
    depends = x.grad.abs().sum(dim=(0, 2)) > 0  # (L,): does the answer position depend on position s?
    distance = a - 1 - torch.arange(L)  # D: tokens strictly between position s and the answer
    assert torch.equal(depends, (distance >= -1) & (distance <= reach))  # -1: the answer position itself


def test_window_out_of_range_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"model\.window=0 .*allowed: an integer >= 1"):
        WindowTransformer(window=0)


# One layer, window 8: reach D_max = 1 x (8 - 1) - 1 = 6. Coreference without distractors (the only noun
# within reach is the answer) at distances on both sides of the boundary, 6 | 7 included. Beyond the reach
# the antecedent noun is independent of everything the answer position sees: accuracy is Binomial(256,
# 1/32) / 256, mean 0.031, standard deviation 0.011; the bound 0.12 is 8 standard deviations up. Within
# reach, seeds 0-7 reached 0.90-1.0 at 300 steps (the bound is 0.6); beyond it, at most 0.06.
WINDOW_RUN = [
    "model=window_attention", "model.num_layers=1", "model.window=8", "model.width=32", "model.num_heads=2",
    "model.d_ff=64", "data=coref", "data.load=0", "data.max_offset=2", "data.distance=[2,4,6,7,9,12]",
    "trainer.max_steps=300", "trainer.val_check_interval=300", "trainer.log_every_n_steps=50",
    "train.eval_samples=256", "train.lr=3e-3", "train.warmup_steps=20",
]  # fmt: skip


@pytest.mark.slow
def test_horizon_end_to_end(make_config, tmp_path: Path) -> None:
    assert train(make_config(*WINDOW_RUN, "seed=0"), tmp_path)["status"] == "ok"
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["chance"] == 1 / 32
    accuracy = {int(d): a for d, a in result["test_acc_per_distance"].items()}
    assert sorted(accuracy) == [2, 4, 6, 7, 9, 12]
    assert all(a > 0.6 for d, a in accuracy.items() if d <= 6), accuracy  # within the reach
    assert all(a < 0.12 for d, a in accuracy.items() if d > 6), accuracy  # beyond: chance

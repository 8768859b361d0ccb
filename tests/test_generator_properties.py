"""Property-based tests of the coreference generator: invariants for any valid parameters, and the
edge cases (distance 0 and 1, the longest distance that fits a model, the maximal load, the smallest
sample space the hash split accepts)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from taskcheck import check_batch, single_answers

from longrange.datasets.coref import RELATIONS, CorefRecall
from longrange.experiments.run.config import ConfigError, validate


@st.composite
def valid_tasks(draw: st.DrawFn) -> CorefRecall:
    load = draw(st.integers(0, len(RELATIONS) - 1))
    smallest = 0 if load == 0 else 3 * load + 2
    params = {
        "distance": draw(st.integers(smallest, smallest + 120)),
        "load": load,
        "num_nouns": draw(st.integers(max(2, load + 1), 32)),
        "max_offset": draw(st.integers(0, 12)),
    }
    try:
        return CorefRecall(**params)
    except ValueError as error:  # too small a sample space: a documented refusal, not a failure
        assume("distinct samples" not in str(error))
        raise


@settings(max_examples=60, deadline=None)
@given(valid_tasks(), st.integers(0, 2**31), st.sampled_from(["train", "val", "test"]))
def test_invariants_hold_for_any_valid_parameters(task: CorefRecall, seed: int, split: str) -> None:
    (distance,) = task.train_distances
    batch = task.generate(split, 16, distance, seed)
    check_batch(task, batch, distance, 1)
    assert batch.tokens.shape[1] == distance + 6 + task.max_offset
    answer, target = single_answers(batch)
    assert (answer >= batch.tokens.shape[1] - 1 - task.max_offset).all()  # in the last max_offset + 1
    assert (batch.tokens[torch.arange(16), answer] == task.vocab.index["the"]).all()
    assert torch.isin(target, task.noun_ids).all()
    occurrences = batch.tokens == target[:, None]  # the answer noun occurs once, exactly D tokens back
    assert (occurrences.sum(1) == 1).all()
    assert (answer - occurrences.int().argmax(1) - 1 == distance).all()
    assert (torch.isin(batch.tokens, task.noun_ids).sum(1) == task.load + 1).all()


@pytest.mark.parametrize("distance", [0, 1])
def test_shortest_distances(distance: int) -> None:
    task = CorefRecall(distance=distance, load=0)  # no distractor fits in 0 or 1 tokens
    batch = task.generate("val", 64, distance, seed=0)
    answer, target = single_answers(batch)
    rows = torch.arange(64)
    assert (batch.tokens[rows, answer - distance - 1] == target).all()  # the noun, D tokens before "the"
    assert (batch.tokens[rows, answer - distance - 2] == task.vocab.index["a"]).all()


def test_maximal_load_at_its_shortest_distance() -> None:
    load = len(RELATIONS) - 1
    task = CorefRecall(distance=3 * load + 2, load=load)
    batch = task.generate("train", 64, 3 * load + 2, seed=0)
    relations = torch.isin(batch.tokens, task.relation_ids)
    assert (relations.sum(1) == load + 2).all()  # antecedent, K distractors, and the cue's relation
    assert (torch.isin(batch.tokens, task.noun_ids).sum(1) == load + 1).all()


def test_longest_distance_that_fits_the_model(compose) -> None:
    fits = compose(["model=attention", "model.max_len=78", "data.distance=64"])  # 64 + 6 + 8 = 78 tokens
    task, backbone = validate(fits)
    assert task.max_seq_len == backbone.max_len == 78
    with pytest.raises(ConfigError, match="data.distance=65 makes sequences of 79 tokens"):
        validate(compose(["model=attention", "model.max_len=78", "data.distance=65"]))
    with pytest.raises(ConfigError, match="data.distance=65 makes sequences of 79 tokens"):
        validate(
            compose(["model=attention", "model.max_len=78", "data.distance=8", "data.eval_distance=[8,65]"])
        )


def test_tiny_sample_space_is_refused_before_training(compose) -> None:
    """16 possible samples (8 relations x 2 nouns) cannot fill three disjoint splits: a clear error."""
    with pytest.raises(ConfigError, match=r"allows only about 2\*\*4.0 distinct samples"):
        validate(compose(["data.distance=0", "data.load=0", "data.num_nouns=2", "data.max_offset=0"]))


def test_smallest_accepted_sample_space_fills_every_split() -> None:
    """Just above the refusal threshold, every split still fills quickly."""
    task = CorefRecall(distance=2, load=0, num_nouns=32, max_offset=0)  # ~2**12.2 by the bound, ~2**14.4 real
    for split in ("train", "val", "test"):
        assert task.generate(split, 256, 2, seed=0).tokens.shape == (256, 8)

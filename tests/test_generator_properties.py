"""Property-based tests of the coreference generator: invariants for any valid parameters, and the
edge cases (distance 0 and 1, the longest distance that fits a model, the maximal load)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longrange.datasets.base import IGNORE
from longrange.datasets.coref import RELATIONS, CorefRecall
from longrange.experiments.config import ConfigError, validate


@st.composite
def valid_parameters(draw: st.DrawFn) -> dict:
    load = draw(st.integers(0, len(RELATIONS) - 1))
    smallest = 0 if load == 0 else 3 * load + 2
    distance = draw(st.integers(smallest, smallest + 120))
    nouns = draw(st.integers(max(2, load + 1), 32))
    # at least 4 filler words in all, so every split's hash buckets hold samples (tiny sample spaces are
    # refused with a clear error: test_tiny_sample_space_is_refused)
    offset = draw(st.integers(max(0, 4 - distance), 12))
    return {"distance": distance, "load": load, "num_nouns": nouns, "max_offset": offset}


@settings(max_examples=60, deadline=None)
@given(valid_parameters(), st.integers(0, 2**31), st.sampled_from(["train", "val", "test"]))
def test_invariants_hold_for_any_valid_parameters(params: dict, seed: int, split: str) -> None:
    task = CorefRecall(**params)
    batch = task.generate(split, 16, params["distance"], seed)
    B, L = batch.tokens.shape
    assert (B, L) == (16, params["distance"] + 6 + params["max_offset"])
    assert batch.tokens.min() >= 1 and batch.tokens.max() < len(task.vocab)  # no padding, known words
    is_answer = batch.targets != IGNORE
    assert (is_answer.sum(1) == 1).all()  # one answer per sample
    answer = is_answer.int().argmax(1)
    assert (answer >= L - 1 - params["max_offset"]).all()  # within the last max_offset + 1 positions
    assert (batch.tokens[torch.arange(B), answer] == task.vocab.index["the"]).all()
    assert (batch.distances[is_answer] == params["distance"]).all()
    targets = batch.targets[is_answer]
    assert torch.isin(targets, task.noun_ids).all()
    occurrences = batch.tokens == targets[:, None]  # the answer noun occurs once, exactly D tokens back
    assert (occurrences.sum(1) == 1).all()
    assert (answer - occurrences.int().argmax(1) - 1 == params["distance"]).all()
    nouns_per_sample = torch.isin(batch.tokens, task.noun_ids).sum(1)
    assert (nouns_per_sample == params["load"] + 1).all()


@pytest.mark.parametrize("distance", [0, 1])
def test_shortest_distances(distance: int) -> None:
    task = CorefRecall(distance=distance, max_offset=0)
    words = task.vocab.decode(task.generate("val", 1, distance, seed=0).tokens[0]).split()
    assert len(words) == distance + 6 and words[-1] == "the"
    assert words.index(words[4]) == 4 and len(words) - 1 - 4 - 1 == distance


def test_maximal_load_at_its_shortest_distance() -> None:
    load = len(RELATIONS) - 1
    task = CorefRecall(distance=3 * load + 2, load=load)
    batch = task.generate("train", 64, 3 * load + 2, seed=0)
    relations = torch.isin(batch.tokens, task.relation_ids)
    assert (relations.sum(1) == load + 2).all()  # antecedent, K distractors, and the cue's relation
    assert (torch.isin(batch.tokens, task.noun_ids).sum(1) == load + 1).all()


def test_load_needs_enough_nouns() -> None:
    with pytest.raises(
        ValueError, match=r"data.num_nouns=3 is out of range; allowed: an integer in \[4, 32\]"
    ):
        CorefRecall(distance=20, load=3, num_nouns=3)


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
    with pytest.raises(ConfigError, match="sample space is too small"):
        validate(compose(["data.distance=0", "data.num_nouns=2", "data.max_offset=0"]))

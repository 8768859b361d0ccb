"""The coreference generator: exact distance, correct and unique answers, the random offset, splits that
hold even where samples repeat, bad input."""

from __future__ import annotations

import pytest
import torch
from taskcheck import check_batch, single_answers

from longrange.datasets.base import NUM_BUCKETS, sample_bucket
from longrange.datasets.coref import NOUNS, CorefRecall

VALID = [(d, k) for d in (0, 1, 2, 5, 11, 23, 24, 100) for k in (0, 1, 3, 7) if k == 0 or d >= 3 * k + 2]


@pytest.mark.parametrize(("distance", "load"), VALID)
def test_exact_distance_and_unique_correct_answer(distance: int, load: int) -> None:
    task = CorefRecall(distance=distance, load=load)
    batch = task.generate("train", 200, distance, seed=3)
    check_batch(task, batch, distance, 1)
    position, target = single_answers(batch)
    assert batch.tokens.shape[1] == distance + 6 + task.max_offset
    count = {word: (batch.tokens == task.vocab.index[word]).sum(1) for word in ("i", "a", "the")}
    assert (count["the"] == 1).all() and (count["a"] == load + 1).all()  # filler never uses cue words
    assert (count["i"] == (1 if load == 0 else 2)).all()
    assert (torch.isin(batch.tokens, task.noun_ids).sum(1) == load + 1).all()  # antecedent + K distractors
    for i in range(len(batch.tokens)):
        # the answer noun occurs exactly once, D tokens before the answer position, "i REL a" before it
        where = (batch.tokens[i] == target[i]).nonzero().flatten().tolist()
        assert len(where) == 1 and position[i] - where[0] - 1 == distance
        assert batch.tokens[i, position[i]] == task.vocab.index["the"]
        relation = batch.tokens[i, where[0] - 2]
        assert batch.tokens[i, where[0] - 3] == task.vocab.index["i"] and relation in task.relation_ids
        if load:  # the cue names the antecedent's relation; each distractor has another relation
            assert batch.tokens[i, position[i] - 1] == relation
            before_cue = batch.tokens[i, : position[i] - 2]
            relations = before_cue[torch.isin(before_cue, task.relation_ids)]
            assert (relations == relation).sum() == 1 and len(set(relations.tolist())) == load + 1


def test_lecture_example_with_bare_cue() -> None:
    task = CorefRecall(distance=8, load=0, max_offset=0)  # no distractor: the bare cue "the"
    words = task.vocab.decode(task.generate("val", 1, 8, seed=0).tokens[0]).split()
    assert words[:2] == ["<bos>", "i"] and words[3] == "a" and words[4] in NOUNS and words[-1] == "the"
    assert task.chance_level == pytest.approx(1 / 32)


def test_antecedent_position_varies_with_the_offset() -> None:
    task = CorefRecall(distance=10, max_offset=8)
    position, _ = single_answers(task.generate("train", 500, 10, seed=0))
    antecedent = position - 10 - 1
    assert set(antecedent.tolist()) == set(range(4, 4 + 8 + 1))  # every offset 0..8 occurs


def test_no_evaluation_sample_occurs_in_the_training_stream_where_samples_repeat() -> None:
    """A small sample space (~2**14 samples; 10,240 drawn for training): samples repeat within the
    training stream, yet none of them is ever drawn for validation or test."""
    task = CorefRecall(distance=2, load=0, max_offset=0)
    train = [tuple(r) for s in range(40) for r in task.generate("train", 256, 2, 0, s).tokens.tolist()]
    assert len(set(train)) < len(train)  # repeats: the guarantee below is not luck
    for split in ("val", "test"):
        evaluation = task.generate(split, 512, 2, seed=0).tokens.tolist()
        assert not set(train) & {tuple(row) for row in evaluation}


def test_buckets_spread_evenly_on_a_large_sample_space() -> None:
    tokens = CorefRecall(distance=30).sample(16000, 30, torch.Generator().manual_seed(0)).tokens
    counts = torch.bincount(sample_bucket(tokens), minlength=NUM_BUCKETS).float()
    assert counts.min() > 0.8 * counts.mean()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"distance": -1}, r"data.distance=-1 is out of range; allowed: an integer in \[0, inf\]"),
        ({"distance": 2.5}, r"data.distance=2.5 is not an integer"),
        ({"distance": []}, r"data.distance is empty"),
        ({"eval_distance": [-3]}, r"data.eval_distance=-3"),
        ({"load": 8}, r"data.load=8 is out of range; allowed: an integer in \[0, 7\]"),
        (
            {"load": 2, "distance": 7},
            r"data.distance contains 7, too short for data.load=2: allowed distances are >= 8",
        ),
        ({"num_nouns": 1}, r"data.num_nouns=1 is out of range; allowed: an integer in \[2, 32\]"),
        ({"distance": 20, "load": 3, "num_nouns": 3}, r"data.num_nouns=3 is out of range; .*\[4, 32\]"),
        (  # 8 relations x 2 nouns = 16 samples
            {"distance": 0, "load": 0, "num_nouns": 2, "max_offset": 0},
            r"data.distance=0 with data.num_nouns=2 and data.max_offset=0 allows only about 2\*\*4.0 "
            r"distinct samples; allowed: >= 2\*\*12",
        ),
        ({"distance": [1, 64], "load": 0, "max_offset": 0}, r"data.distance=1 .* 2\*\*9.6 distinct samples"),
    ],
)
def test_bad_parameters_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CorefRecall(**kwargs)

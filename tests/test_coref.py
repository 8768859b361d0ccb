"""The coreference generator: exact distance, correct and unique answers, seeds, splits, bad input."""

from __future__ import annotations

import pytest
import torch

from longrange.datasets.base import IGNORE, NUM_BUCKETS, SPLIT_BUCKETS, sample_bucket
from longrange.datasets.coref import CUE_WORDS, FILLER_PHRASES, NOUNS, RELATIONS, CorefRecall


def answers(batch):
    """(answer position, target, distance) of each sample: exactly one answer per sample."""
    is_answer = batch.targets != IGNORE
    assert (is_answer.sum(1) == 1).all()
    position = is_answer.int().argmax(1)
    rows = torch.arange(len(position))
    return position, batch.targets[rows, position], batch.distances[rows, position]


VALID = [(d, k) for d in (0, 1, 2, 5, 11, 23, 24, 100) for k in (0, 1, 3, 7) if k == 0 or d >= 3 * k + 2]


@pytest.mark.parametrize(("distance", "load"), VALID)
def test_exact_distance_and_unique_correct_answer(distance: int, load: int) -> None:
    task = CorefRecall(distance=distance, load=load)
    batch = task.generate("train", 200, distance, seed=3)
    position, target, reported = answers(batch)
    assert (reported == distance).all()
    assert batch.tokens.shape == (200, task.seq_len(distance)) == (200, distance + 6 + task.max_offset)
    nouns = torch.isin(batch.tokens, task.noun_ids)
    for i in range(len(batch.tokens)):
        # the answer noun occurs exactly once, D tokens before the answer position
        where = (batch.tokens[i] == target[i]).nonzero().flatten().tolist()
        assert len(where) == 1 and position[i] - where[0] - 1 == distance
        assert nouns[i].sum() == load + 1  # antecedent + K distractors, no noun anywhere else
        if load:  # the cue names the antecedent's relation; each distractor has another relation
            relation = batch.tokens[i, where[0] - 2]
            assert batch.tokens[i, position[i] - 1] == relation
            before_cue = batch.tokens[i, : position[i] - 2]
            distractor_relations = before_cue[torch.isin(before_cue, task.relation_ids)]
            assert (distractor_relations == relation).sum() == 1  # only the antecedent's own
            assert len(set(distractor_relations.tolist())) == load + 1


def test_lecture_example_with_bare_cue() -> None:
    task = CorefRecall(distance=8, max_offset=0)
    words = task.vocab.decode(task.generate("val", 1, 8, seed=0).tokens[0]).split()
    assert words[:2] == ["<bos>", "i"] and words[3] == "a" and words[4] in NOUNS and words[-1] == "the"


def test_antecedent_position_varies_with_the_offset() -> None:
    task = CorefRecall(distance=10, max_offset=8)
    batch = task.generate("train", 500, 10, seed=0)
    antecedent = (batch.targets != IGNORE).int().argmax(1) - 10 - 1
    assert set(antecedent.tolist()) == set(range(4, 4 + 8 + 1))  # every offset 0..8 occurs
    assert (batch.tokens[:, 0] == task.vocab.index["<bos>"]).all()


def test_vocabulary_groups_are_disjoint() -> None:
    task = CorefRecall()
    filler = {w for p in FILLER_PHRASES for w in p.split()} - set(CUE_WORDS)
    groups = [set(CUE_WORDS), set(RELATIONS), set(NOUNS), filler]
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            assert not a & b
    assert len(task.vocab) == len(set(task.vocab.words))
    assert task.chance_level == pytest.approx(1 / 32)


def test_decode_and_encode_round_trip() -> None:
    task = CorefRecall(distance=12, load=1)
    tokens = task.generate("test", 4, 12, seed=1).tokens
    for row in tokens:
        assert torch.equal(task.vocab.encode(task.vocab.decode(row)), row)
    with pytest.raises(ValueError, match="unknown words.*allowed words"):
        task.vocab.encode("i watched a spaceship")


def test_same_seed_same_data_different_seed_different_data() -> None:
    task = CorefRecall(distance=[8, 16, 64], load=2)
    a = [task.train_batch(32, seed=7, step=s) for s in range(5)]
    b = [task.train_batch(32, seed=7, step=s) for s in range(5)]
    c = [task.train_batch(32, seed=8, step=s) for s in range(5)]
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a, b, strict=True))
    assert not all(
        x.tokens.shape == z.tokens.shape and torch.equal(x.tokens, z.tokens)
        for x, z in zip(a, c, strict=True)
    )
    assert len({x.tokens.shape[1] for x in a + c}) > 1  # training mixes the configured distances


@pytest.mark.parametrize("distance", [0, 3, 40])
def test_no_evaluation_sample_occurs_in_the_training_stream(distance: int) -> None:
    task = CorefRecall(distance=distance)
    seen_in_training = {
        hash(tuple(row))
        for s in range(40)
        for row in task.generate("train", 256, distance, 0, s).tokens.tolist()
    }
    for split in ("val", "test"):
        evaluation = task.generate(split, 512, distance, seed=0).tokens.tolist()
        assert not seen_in_training & {hash(tuple(row)) for row in evaluation}
    # the guarantee is structural: each split keeps only its own hash buckets
    assert set(SPLIT_BUCKETS["train"]).isdisjoint(SPLIT_BUCKETS["val"] + SPLIT_BUCKETS["test"])
    buckets = sample_bucket(task.generate("train", 512, distance, 0).tokens)
    assert buckets.min() >= 2 and buckets.max() < NUM_BUCKETS


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
            r"data.distance=7 is too short for data.load=2: allowed distances are >= 8",
        ),
        ({"num_nouns": 1}, r"data.num_nouns=1 is out of range; allowed: an integer in \[2, 32\]"),
    ],
)
def test_bad_parameters_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CorefRecall(**kwargs)

"""MQAR's ``data.layout``: ``ordered`` (the default) stays bit-identical to the generator every README number
was measured with; ``random`` (zoology's) puts each query at its own distance of at most D, in random order,
and records that distance binned up to the next configured distance."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import pytest
import torch
from helpers import train_job
from taskcheck import answer_positions, task_from_config

from longrange.datasets import mqar
from longrange.datasets.base import IGNORE, TaskBatch
from longrange.datasets.mqar import FILLER, MQAR

# Recorded from the code before data.layout existed: MQAR(distance=8, num_pairs=3, vocab_size=16, spacing=2)
# .sample(2, 8, torch.Generator().manual_seed(0)).
BEFORE_TOKENS = [
    [1, 5, 13, 2, 6, 14, 2, 7, 17, 2, 2, 5, 2, 2, 6, 2, 2, 7],
    [1, 7, 14, 2, 8, 15, 2, 9, 17, 2, 2, 7, 2, 2, 8, 2, 2, 9],
]
BEFORE_ANSWERS = {11: (13, 14), 14: (14, 15), 17: (17, 17)}  # position -> (target of row 0, of row 1)
# sha256 of tokens, targets, distances of MQAR().generate("val", 8, 32, seed=3, index=2), before the change.
BEFORE_DEFAULT_SHA = [
    "3731b4f6fd6587062bed8fff786186981dffe663e8802bb76d0b322334abe117",
    "16bf435d5a9687109064997456be0b9a32fdf3aad8670db204aa49d7d92cfb98",
    "380f985d6a74fa75d5e38140f1e4a2771a230db864344995365ca268d8215788",
]


@pytest.mark.parametrize("layout", [{}, {"layout": "ordered"}])
def test_the_ordered_layout_is_bit_identical_to_before(layout: dict[str, str]) -> None:
    task = MQAR(distance=8, num_pairs=3, vocab_size=16, spacing=2, **layout)
    batch = task.sample(2, 8, torch.Generator().manual_seed(0))
    targets = torch.full((2, 18), IGNORE)
    distances = torch.full((2, 18), IGNORE)
    for position, answers in BEFORE_ANSWERS.items():
        targets[:, position] = torch.tensor(answers)
        distances[:, position] = 8
    assert torch.equal(batch.tokens, torch.tensor(BEFORE_TOKENS))
    assert torch.equal(batch.targets, targets) and torch.equal(batch.distances, distances)
    default = MQAR(**layout).generate("val", 8, 32, seed=3, index=2)
    assert [hashlib.sha256(t.numpy().tobytes()).hexdigest() for t in default] == BEFORE_DEFAULT_SHA


def test_the_config_default_is_the_ordered_layout() -> None:
    assert task_from_config("mqar").layout == "ordered"


def test_with_answers_takes_one_distance_or_one_per_answer() -> None:
    tokens = torch.ones(2, 6, dtype=torch.long)
    columns, targets = torch.tensor([[1, 4], [2, 3]]), torch.tensor([[7, 8], [9, 7]])
    one = TaskBatch.with_answers(tokens, columns, targets, 5)
    each = TaskBatch.with_answers(tokens, columns, targets, torch.full((2, 2), 5))
    assert all(torch.equal(a, b) for a, b in zip(one, each, strict=True))
    mixed = TaskBatch.with_answers(tokens, columns, targets, torch.tensor([[3, 5], [0, 2]]))
    assert mixed.distances.tolist() == [
        [IGNORE, 3, IGNORE, IGNORE, 5, IGNORE],
        [IGNORE, IGNORE, 0, 2, IGNORE, IGNORE],
    ]


@pytest.mark.parametrize(
    ("distances", "num_pairs", "vocab_size", "spacing"),
    [([0], 1, 128, 0), ([14], 8, 64, 0), ([22, 30, 40], 8, 128, 8), ([40], 4, 32, 3), ([36, 100], 16, 64, 5)],
)
def test_random_layout_every_query_answers_its_key_after_the_pairs(
    distances: list[int], num_pairs: int, vocab_size: int, spacing: int
) -> None:
    task = MQAR(
        distance=distances, num_pairs=num_pairs, vocab_size=vocab_size, spacing=spacing, layout="random"
    )
    keys, values = set(task.key_ids.tolist()), set(task.value_ids.tolist())
    region = 2 * num_pairs + spacing  # the pairs sit in positions 1..region
    for distance in distances:
        batch = task.generate("train", 200, distance, seed=1)
        bins = torch.tensor([d for d in distances if d <= distance])
        assert batch.tokens.shape == (200, task.seq_len(distance))
        assert torch.equal(batch.targets != IGNORE, batch.distances != IGNORE)
        exact, in_pair_order = [], 0
        for tokens, targets, recorded, positions in zip(
            batch.tokens.tolist(),
            batch.targets.tolist(),
            batch.distances.tolist(),
            answer_positions(batch),
            strict=True,
        ):
            assert len(positions) == num_pairs and tokens[0] == task.vocab.index["<bos>"]
            pair_keys = [i for i in range(1, region + 1) if tokens[i] in keys]  # key positions, in pair order
            assert len(pair_keys) == len({tokens[i] for i in pair_keys}) == num_pairs
            assert all(tokens[i + 1] in values for i in pair_keys)
            assert (
                len({t for t in tokens if t in values}) == num_pairs
            )  # distinct values, as zoology draws them
            order = []
            for p in positions:
                assert p > region and tokens[p] in keys  # every query after the pair region
                (key_at,) = [
                    i for i in pair_keys if tokens[i] == tokens[p]
                ]  # its key occurs once in the pairs
                assert targets[p] == tokens[key_at + 1]  # the answer is the value paired with the key
                d = p - (key_at + 1) - 1  # tokens strictly between the value and the query
                assert 0 <= d <= distance
                assert recorded[p] == int(bins[torch.searchsorted(bins, d)])  # binned up to a configured one
                exact.append(d)
                order.append(pair_keys.index(key_at))
            in_pair_order += order == sorted(order)
            others = set(range(1, len(tokens))) - set(positions) - set(pair_keys) - {i + 1 for i in pair_keys}
            assert all(tokens[i] == task.vocab.index[FILLER] for i in others)
        if (
            num_pairs >= 4
        ):  # ordered by chance in at most about 1 / 4! of the samples (fewer choices at the edge)
            assert in_pair_order < 0.2 * 200
        assert set(batch.distances[batch.distances != IGNORE].tolist()) <= set(bins.tolist())
        assert max(exact) == distance and len(set(exact)) > distance // 2  # own distances, up to D


def test_random_layout_bins_every_configured_distance() -> None:
    task = MQAR(distance=[8, 12, 16], num_pairs=3, vocab_size=16, spacing=2, layout="random")
    batch = task.generate("val", 300, 16, seed=0)
    recorded = batch.distances[batch.distances != IGNORE]
    assert set(recorded.tolist()) == {8, 12, 16}
    short = task.generate("val", 300, 8, seed=0).distances
    assert set(short[short != IGNORE].tolist()) == {8}


def test_random_layout_sample_space_counts_the_query_placements() -> None:
    # 4 keys x 4 values x (D + 1) placements of the one query: 2**12 at D = 255.
    MQAR(distance=255, num_pairs=1, vocab_size=8, spacing=0, layout="random").generate("val", 4, 255, seed=0)
    with pytest.raises(ValueError, match=r"data.vocab_size=8 .* allowed: >= 2\*\*12"):
        MQAR(distance=254, num_pairs=1, vocab_size=8, spacing=0, layout="random")
    with pytest.raises(ValueError, match=r"data.vocab_size=8 .* allowed: >= 2\*\*12"):
        MQAR(distance=255, num_pairs=1, vocab_size=8, spacing=0)


@pytest.mark.parametrize("layout", ["zoology", "Random", "", None, 1])
def test_a_bad_layout_raises_naming_the_key_and_the_allowed_values(layout: object) -> None:
    with pytest.raises(ValueError, match=r"data.layout=.* allowed: ordered, random"):
        MQAR(layout=layout)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("params", "distance", "decoded", "answers", "recorded"),
    [
        ({}, 8, "<bos> k2 v4 k3 v5 . . k4 v6 . . k2 . k3 . . . k4", "v4 v5 v6", [8, 8, 8]),
        ({"layout": "random"}, 8, "<bos> k2 v4 k3 v5 . . k4 v6 k2 . . . k3 . k4 . .", "v4 v5 v6", [8, 8, 8]),
        (
            {"layout": "random", "distance": [8, 12, 16]},
            16,
            "<bos> k2 v4 k3 v5 . . k4 v6 . . . . k4 . . k3 k2 . . . . . . . .",
            "v6 v5 v4",
            [8, 12, 16],
        ),
    ],
)
def test_the_docstrings_worked_examples_are_what_the_code_generates(
    params: dict[str, object], distance: int, decoded: str, answers: str, recorded: list[int]
) -> None:
    task = MQAR(**{"distance": 8, "num_pairs": 3, "vocab_size": 16, "spacing": 2, **params})  # type: ignore[arg-type]
    batch = task.sample(1, distance, torch.Generator().manual_seed(0))
    is_answer = batch.targets[0] != IGNORE
    assert task.vocab.decode(batch.tokens[0]) == decoded
    assert task.vocab.decode(batch.targets[0][is_answer]) == answers
    assert batch.distances[0][is_answer].tolist() == recorded
    assert decoded in inspect.getdoc(mqar)


def test_random_layout_trains_and_reports_the_configured_distances(tmp_path: Path) -> None:
    # The diagnostics on (the default): they take each sample's last answer at p - d - 1 and group samples
    # by d, which binned distances break (a crash at [24, 32] before the task said so): they must skip.
    overrides = ["data.layout=random", "data.distance=[24,32]"]
    result = train_job(tmp_path, "data=mqar", *overrides, "trainer=debug", "train.eval_samples=16")
    assert result["status"] == "ok" and result["val_acc"] is not None and result["steps"] == 4
    assert (
        set(map(int, result["val_acc_per_distance"]))
        == set(map(int, result["test_acc_per_distance"]))
        == {24, 32}
    )


# Constant density (data.pairs_every): the pairs grow with the distance.


@pytest.mark.parametrize("layout", ["ordered", "random"])
def test_constant_density_holds_one_pair_every_k_tokens_of_distance(layout: str) -> None:
    for distance, pairs in ((16, 2), (32, 4), (40, 5)):  # the random layout takes one distance per task
        task = MQAR(distance=distance, num_pairs=None, pairs_every=8, vocab_size=64, spacing=0, layout=layout)
        batch = task.sample(3, distance, torch.Generator().manual_seed(1))
        assert batch.tokens.shape == (3, task.seq_len(distance)) == (3, 2 * pairs + distance + 2)
        answers = batch.targets != IGNORE
        assert answers.sum(1).tolist() == [pairs] * 3  # every pair queried
        keys = set(task.key_ids.tolist())
        for row in batch.tokens:  # the pair region: pairs distinct keys, each queried once after it
            region = row[1 : 1 + 2 * pairs].tolist()
            assert len({t for t in region if t in keys}) == pairs
        if layout == "ordered":
            assert set(batch.distances[answers].tolist()) == {distance}


def test_constant_density_worked_example_is_what_the_code_generates() -> None:
    task = MQAR(distance=[16, 32], num_pairs=None, pairs_every=8, vocab_size=32, spacing=0)
    decoded = task.vocab.decode(task.sample(1, 16, torch.Generator().manual_seed(0)).tokens[0])
    assert decoded == "<bos> k12 v11 k2 v2 . . . . . . . . . . . . . . k12 . k2"
    assert decoded in inspect.getdoc(mqar)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_pairs": 8, "pairs_every": 8}, r"data.num_pairs=8 with data.pairs_every=8: set exactly one"),
        ({"num_pairs": None}, r"data.num_pairs=None with data.pairs_every=None: set exactly one"),
        ({"num_pairs": None, "pairs_every": 0}, r"data.pairs_every=0 is out of range"),
        ({"num_pairs": None, "pairs_every": 1, "distance": 200}, r"asks for 200 pairs; allowed: at most 64"),
        (
            {"num_pairs": None, "pairs_every": 2, "spacing": 4, "distance": 100},
            r"data.distance=100 holds 50 pairs at data.pairs_every=2, .* allowed: data.pairs_every >= 2 with "
            r"data.spacing <= 2",
        ),
        (
            {"num_pairs": None, "pairs_every": 4, "distance": [8, 64], "layout": "random"},
            r"data.layout=random with data.pairs_every=4 and several distances \[8, 64\]: .* allowed: "
            r"data.layout=ordered, or a single data.distance",
        ),
    ],
)
def test_constant_density_bad_input_names_the_keys(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MQAR(**{"spacing": 0, **params})  # type: ignore[arg-type]


def test_random_layout_with_constant_density_at_one_distance_and_fixed_pairs_at_several() -> None:
    # The sample space of the random layout is counted at each distance with its own number of pairs.
    assert MQAR(distance=64, num_pairs=None, pairs_every=4, spacing=0, layout="random").pairs(64) == 16
    assert MQAR(distance=[8, 64], num_pairs=3, spacing=0, layout="random").seq_len(64) == 72

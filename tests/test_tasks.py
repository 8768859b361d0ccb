"""The task suite. Per task: every answer is correct, unique and exactly ``distance`` after its source (MQAR,
copying, selective copying, induction heads, pronoun coreference; coref has tests/test_coref.py), or, for the
state-tracking tasks (parity, modular sums, permutation composition), the state recomputed from the decoded
text after exactly D + 1 updates. For every
file in conf/data/ (a new task YAML is tested without editing this file): seeds, disjoint splits, a short
training run through the real configs, and every point of the presets that sweep it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from helpers import CONF, compose_config, train_job
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from taskcheck import answer_positions, check_batch, task_from_config

from longrange.datasets.base import IGNORE, MIN_SAMPLE_BITS, SyntheticTask, TaskBatch
from longrange.datasets.copying import BLANK, RECALL, Copying
from longrange.datasets.induction import TRIGGER, InductionHeads
from longrange.datasets.modular import QUERY, ModularSum
from longrange.datasets.mqar import FILLER, MQAR
from longrange.datasets.parity import Parity
from longrange.datasets.permutation import GROUPS, PermutationComposition
from longrange.datasets.pronoun import ADJECTIVES, NOUNS_BY_PRONOUN, PRONOUNS, PronounCoref
from longrange.experiments.run.config import validate
from longrange.experiments.sweep.grid import grid_points


# --- MQAR -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("distance", "num_pairs", "vocab_size", "spacing"),
    [(0, 1, 128, 0), (14, 8, 64, 0), (22, 8, 128, 8), (40, 4, 32, 3), (100, 16, 64, 5)],
)
def test_mqar_every_query_is_exact_and_unique(
    distance: int, num_pairs: int, vocab_size: int, spacing: int
) -> None:
    task = MQAR(distance=distance, num_pairs=num_pairs, vocab_size=vocab_size, spacing=spacing)
    batch = task.generate("train", 300, distance, seed=1)
    check_batch(task, batch, distance, num_pairs)
    keys, values = set(task.key_ids.tolist()), set(task.value_ids.tolist())
    assert not keys & values and task.vocab.index[FILLER] not in keys | values
    region = 2 * num_pairs + spacing  # the pairs sit in positions 1..region
    for tokens, targets, positions in zip(
        batch.tokens.tolist(), batch.targets.tolist(), answer_positions(batch), strict=True
    ):
        pair_keys = [t for t in tokens[1 : region + 1] if t in keys]
        assert len(pair_keys) == len(set(pair_keys)) == num_pairs  # distinct keys: one answer per query
        assert len({t for t in tokens if t in values}) == num_pairs
        for p in positions:
            source = p - distance - 1
            assert p > region and tokens[p] in keys and targets[p] in values
            assert tokens[source] == targets[p] and tokens[source - 1] == tokens[p]  # "key value" D before
            assert tokens.count(tokens[p]) == 2  # the key occurs once as a pair and once as its query
        others = set(range(1, len(tokens))) - set(positions)
        others -= {i for p in positions for i in (p - distance - 2, p - distance - 1)}
        assert all(tokens[i] == task.vocab.index[FILLER] for i in others)
    assert task.chance_level == pytest.approx(2 / vocab_size)


# --- copying and selective copying ----------------------------------------------------------------
@pytest.mark.parametrize(("distance", "length"), [(2, 3), (7, 8), (8, 8), (31, 4), (64, 16)])
def test_copying_every_symbol_is_reproduced_exactly_distance_later(distance: int, length: int) -> None:
    task = Copying(distance=distance, length=length, num_symbols=16)
    batch = task.generate("val", 200, distance, seed=2)
    check_batch(task, batch, distance, length)
    for tokens, targets, positions in zip(batch.tokens, batch.targets, answer_positions(batch), strict=True):
        assert positions == list(range(len(tokens) - length, len(tokens)))
        assert (tokens[positions] == task.vocab.index[RECALL]).all()
        for p in positions:
            assert tokens[p - distance - 1] == targets[p] and targets[p] in task.symbol_ids
        assert (tokens[length + 1 : len(tokens) - length] == task.vocab.index[BLANK]).all()


@pytest.mark.parametrize(
    ("distance", "length", "region"), [(3, 4, 5), (7, 8, None), (20, 4, 12), (50, 8, 40)]
)
def test_selective_copying_reproduces_the_scattered_symbols_in_order(
    distance: int, length: int, region: int | None
) -> None:
    task = Copying(distance=distance, length=length, num_symbols=16, selective=True, region=region)
    region = task.region
    batch = task.generate("train", 200, distance, seed=3)
    check_batch(task, batch, distance, length)
    is_symbol = torch.isin(batch.tokens, task.symbol_ids)
    assert not is_symbol[:, region + 1 :].any() and (is_symbol.sum(1) == length).all()
    assert (batch.tokens[:, region] != task.vocab.index[BLANK]).all()  # the last symbol fills the last slot
    layouts = set()
    for tokens, targets, symbol, positions in zip(
        batch.tokens, batch.targets, is_symbol, answer_positions(batch), strict=True
    ):
        source = symbol.nonzero().flatten()  # (M,) the symbols' positions, in order
        assert torch.equal(targets[positions], tokens[source])  # reproduced in order
        assert positions[-1] - distance - 1 == source[-1]  # the last symbol's lag is exactly D
        lags = torch.tensor(positions) - source - 1
        assert (lags >= distance).all() and (lags <= distance + region - length).all()
        layouts.add(tuple(source.tolist()))
    assert len(layouts) > 1  # scattered differently from sample to sample


# --- induction heads ------------------------------------------------------------------------------
@pytest.mark.parametrize("trigger", ["random", "special"])
@pytest.mark.parametrize(("distance", "jitter"), [(0, 8), (5, 0), (17, 8), (64, 3)])
def test_induction_target_follows_the_only_earlier_trigger(trigger: str, distance: int, jitter: int) -> None:
    task = InductionHeads(distance=distance, num_symbols=8, trigger=trigger, jitter=jitter)
    batch = task.generate("test", 300, distance, seed=4)
    check_batch(task, batch, distance, 1)
    starts = set()
    for tokens, targets, positions in zip(
        batch.tokens.tolist(), batch.targets.tolist(), answer_positions(batch), strict=True
    ):
        (p,) = positions
        trigger_id = tokens[p]
        assert tokens[p - distance - 2] == trigger_id and tokens[p - distance - 1] == targets[p]
        assert tokens.count(trigger_id) == 2 and targets[p] != trigger_id  # one earlier trigger: one answer
        assert (task.vocab.words[trigger_id] == TRIGGER) == (trigger == "special")
        starts.add(p)
    assert len(starts) == jitter + 1  # the pattern's position varies with the jitter
    assert task.chance_level == pytest.approx(1 / 7 if trigger == "random" else 1 / 8)


# --- pronoun coreference --------------------------------------------------------------------------
@pytest.mark.parametrize("cue", ["pronoun", "description", "mixed"])
@pytest.mark.parametrize(("distance", "competitors"), [(4, 0), (2, 8), (7, 2), (25, 8), (40, 3)])
def test_pronoun_refers_to_exactly_one_entity(cue: str, distance: int, competitors: int) -> None:
    task = PronounCoref(distance=distance, competitors=competitors, cue=cue)
    batch = task.generate("train", 300, distance, seed=5)
    check_batch(task, batch, distance, 1)
    words = task.vocab.words
    pronoun_of = {noun: pronoun for pronoun, nouns in NOUNS_BY_PRONOUN.items() for noun in nouns}
    cues, first_mentioned = set(), 0
    for tokens, targets in zip(batch.tokens.tolist(), batch.targets.tolist(), strict=True):
        text, p = [words[t] for t in tokens], len(tokens) - 1
        referent = p - distance - 1
        assert text[referent] == words[targets[p]] and text[referent - 2] == "the"
        nouns = [i for i, w in enumerate(text) if w in pronoun_of]
        assert len(nouns) == competitors + 1 and all(text[i - 2] == "the" for i in nouns)
        assert all(text[i - 1] in ADJECTIVES for i in nouns)
        others = [i for i in nouns if i != referent]
        if text[p - 1] == "because":  # a pronoun: the referent's class, no competitor's
            assert text[p] == pronoun_of[text[referent]]
            assert all(pronoun_of[text[i]] != text[p] for i in others)
            cues.add("pronoun")
        else:  # a definite description "the ADJ": the referent's property, no competitor's
            assert text[p - 1] == "the" and text[p] == text[referent - 1]
            assert all(text[i - 1] != text[p] for i in others)
            cues.add("description")
        first_mentioned += nouns[0] == referent
        assert sum(w in PRONOUNS for w in text) == (text[p] in PRONOUNS)  # pronouns only in the cue
    assert cues == ({"pronoun", "description"} if cue == "mixed" else {cue})
    if competitors and distance >= 4:  # competitors come both before and after the referent
        assert 0 < first_mentioned < len(batch.tokens)


# --- state tracking: parity, modular sums, permutation composition ---------------------------------------
def segments_of(
    task: SyntheticTask, batch: TaskBatch, distance: int, extra: int = 1
) -> list[list[tuple[list[str], str]]]:
    """Per sample: (the segment's D + 1 update words, then its query word) and the target word, per
    answer; checks the layout on the way (<bos>, then K segments of D + 1 + ``extra`` tokens, an answer at
    each end)."""
    words, samples, width = task.vocab.words, [], distance + 1 + extra  # D + 1 updates, query (and mark)
    for tokens, targets, positions in zip(
        batch.tokens.tolist(), batch.targets.tolist(), answer_positions(batch), strict=True
    ):
        assert positions == [width * (j + 1) for j in range(len(positions))]
        assert len(tokens) == 1 + width * len(positions)
        segments = [[words[t] for t in tokens[p - width + 1 : p + 1]] for p in positions]
        samples.append([(segment, words[targets[p]]) for segment, p in zip(segments, positions, strict=True)])
    return samples


@pytest.mark.parametrize(("distance", "modulus", "segments"), [(0, 5, 8), (1, 2, 8), (7, 3, 4), (40, 7, 2)])
def test_modular_sum_answers_each_segments_sum(distance: int, modulus: int, segments: int) -> None:
    task = ModularSum(distance=distance, modulus=modulus, segments=segments)
    batch = task.generate("train", 200, distance, seed=6)
    check_batch(task, batch, distance, segments)
    answers = set()
    for sample in segments_of(task, batch, distance):
        for segment, target in sample:
            *numbers, query = segment
            assert query == QUERY and len(numbers) == distance + 1  # D + 1 updates, then the query
            assert int(target) == sum(map(int, numbers)) % modulus
            answers.add(target)
    assert answers == {str(i) for i in range(modulus)}
    assert task.chance_level == pytest.approx(1 / modulus)


@pytest.mark.parametrize(("distance", "segments"), [(1, 8), (11, 1), (30, 3)])
def test_parity_answers_each_segments_parity(distance: int, segments: int) -> None:
    task = Parity(distance=distance, segments=segments)
    batch = task.generate("val", 200, distance, seed=7)
    check_batch(task, batch, distance, segments)
    assert len(task.vocab) == 5  # <pad> <bos> 0 1 =
    for sample in segments_of(task, batch, distance):
        for (*bits, query), target in sample:
            assert query == QUERY and set(bits) <= {"0", "1"} and len(bits) == distance + 1
            assert target == str(bits.count("1") % 2)
    assert task.chance_level == 0.5


@pytest.mark.parametrize("point", ["last", "first"])
@pytest.mark.parametrize("group", sorted(GROUPS))
@pytest.mark.parametrize(("distance", "segments"), [(0, 8), (5, 3), (33, 2)])
def test_permutation_answers_where_the_composed_permutation_sends_the_query(
    group: str, distance: int, segments: int, point: str
) -> None:
    task = PermutationComposition(distance=distance, group=group, segments=segments, point=point)
    n, size = {"S3": (3, 6), "A4": (4, 12), "S5": (5, 120)}[group]
    assert task.num_points == n and len(GROUPS[group]) == len(set(GROUPS[group])) == size
    batch = task.generate("test", 100, distance, seed=8)
    check_batch(task, batch, distance, segments)
    seen, ends = set(), set()
    for sample in segments_of(task, batch, distance, extra=2 if point == "first" else 1):
        for segment, target in sample:
            if point == "first":  # e pi_1 ... pi_{D+1} =
                point_word, *perms, mark = segment
                assert mark == "="
            else:  # pi_1 ... pi_{D+1} e
                *perms, point_word = segment
            ball = int(point_word)
            assert len(perms) == distance + 1
            for word in perms:  # one-line notation: word[i] is the image of point i, applied in turn
                assert sorted(word) == [str(i) for i in range(n)]
                ball = int(word[ball])
                seen.add(word)
            assert target == str(ball)
            ends.add(target)
    assert ends == {str(i) for i in range(n)}
    if group == "A4":  # only even permutations
        assert all(sum(a > b for i, a in enumerate(w) for b in w[i + 1 :]) % 2 == 0 for w in seen)
    assert task.chance_level == pytest.approx(1 / n)


@pytest.mark.parametrize(
    ("make", "distance", "decoded", "answers"),
    [
        (lambda: ModularSum(distance=3, modulus=5, segments=2), 3, "<bos> 4 4 3 0 = 3 4 2 3 =", "1 2"),
        (lambda: Parity(distance=4, segments=3), 4, "<bos> 0 1 1 0 1 = 1 1 1 1 1 = 1 0 0 1 0 =", "1 1 0"),
        (
            lambda: PermutationComposition(distance=2, group="S3", segments=2),
            2,
            "<bos> 102 120 210 1 012 021 120 1",
            "1 0",
        ),
        (
            lambda: PermutationComposition(distance=2, group="S3", segments=2, point="first"),
            2,
            "<bos> 1 102 120 210 = 1 012 021 120 =",
            "1 0",
        ),
    ],
)
def test_the_docstrings_worked_examples_are_what_the_code_generates(
    make, distance: int, decoded: str, answers: str
) -> None:
    task = make()
    batch = task.sample(1, distance, torch.Generator().manual_seed(0))
    assert task.vocab.decode(batch.tokens[0]) == decoded
    assert task.vocab.decode(batch.targets[0][batch.targets[0] != IGNORE]) == answers
    assert decoded in inspect.getmodule(type(task)).__doc__


@pytest.mark.parametrize(
    ("make", "smallest"),
    [
        (lambda d: Parity(distance=d, segments=8), 1),  # 2**(8 (D + 1)): 2**16 at D = 1, 2**8 at D = 0
        (lambda d: Parity(distance=d, segments=1), 11),  # one segment: 2**(D + 1)
        (lambda d: ModularSum(distance=d, modulus=5, segments=1), 5),  # 5**6 = 15625, 5**5 = 3125
        (lambda d: PermutationComposition(distance=d, group="S3", segments=1), 4),  # 6**5 x 3, 6**4 x 3
        (lambda d: PermutationComposition(distance=d, group="S5", segments=1), 1),  # 120**2 x 5, 120 x 5
    ],
)
def test_state_tracking_sample_space_check_at_its_edge(make, smallest: int) -> None:
    """The shortest accepted distance fills every split at once (MIN_SAMPLE_BITS holds for these tasks);
    one shorter is refused with the shortest allowed distance in the message."""
    task = make(smallest)
    assert task.min_distance == smallest
    for split in ("train", "val", "test"):
        assert task.generate(split, 256, smallest, seed=0).tokens.shape[0] == 256
    with pytest.raises(ValueError, match=rf"allowed: >= 2\*\*{MIN_SAMPLE_BITS}.*>= {smallest} here"):
        make(smallest - 1)


def test_state_tracking_trains_short_and_evaluates_long() -> None:
    """The extrapolation regime: several short training distances, evaluation far beyond them."""
    task = Parity(distance=[1, 2, 4], eval_distance=[4, 64])
    assert task.train_distances == (1, 2, 4) and task.eval_distances == (4, 64)
    assert task.max_seq_len == task.seq_len(64) == 8 * 66 + 1
    assert {task.train_batch(8, seed=0, step=s).tokens.shape[1] for s in range(30)} == {25, 33, 49}


# --- every task in conf/data/: seeds, splits, the error for a tiny sample space --------------------------
def two_distance_task(data_name: str) -> SyntheticTask:
    """The task of conf/data/``data_name``.yaml trained at its default distance and 12 more."""
    (distance,) = task_from_config(data_name).train_distances
    return task_from_config(data_name, distance=[distance, distance + 12])


def test_same_seed_same_data_different_seed_different_data(data_name: str) -> None:
    task = two_distance_task(data_name)
    a = [task.train_batch(32, seed=7, step=s) for s in range(6)]
    b = [task.train_batch(32, seed=7, step=s) for s in range(6)]
    c = [task.train_batch(32, seed=8, step=s) for s in range(6)]
    assert all(torch.equal(x, y) for u, v in zip(a, b, strict=True) for x, y in zip(u, v, strict=True))
    assert not all(
        x.tokens.shape == z.tokens.shape and torch.equal(x.tokens, z.tokens)
        for x, z in zip(a, c, strict=True)
    )
    assert all(len(set(map(tuple, x.tokens.tolist()))) > 30 for x in a)  # samples within a batch differ
    assert len({x.tokens.shape[1] for x in a + c}) == 2  # training draws both configured distances
    for x in a:
        check_batch(task, x, int(x.distances.max()), int((x.targets[0] != IGNORE).sum()))


def test_splits_are_disjoint_and_decode_round_trips(data_name: str) -> None:
    task = task_from_config(data_name)
    (distance,) = task.train_distances
    train_rows = {
        tuple(r) for s in range(8) for r in task.generate("train", 256, distance, 0, s).tokens.tolist()
    }
    val = task.generate("val", 256, distance, seed=0).tokens
    assert not train_rows & {tuple(r) for r in val.tolist()}
    for row in val[:4]:
        assert torch.equal(task.vocab.encode(task.vocab.decode(row)), row)
    with pytest.raises(ValueError, match="unknown words.*allowed words"):
        task.vocab.encode("spaceship")


class OneSample(SyntheticTask):
    """A task without a sample-space check of its own: every sample is the same."""

    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        tokens = torch.ones(batch_size, self.seq_len(distance), dtype=torch.long)
        return TaskBatch(tokens, torch.full_like(tokens, IGNORE), torch.full_like(tokens, IGNORE))

    def seq_len(self, distance: int) -> int:
        return distance + 2


def test_a_split_without_samples_fails_clearly_instead_of_looping() -> None:
    """The one sample hashes into one bucket: two of the three splits never get a sample."""
    task, failed = OneSample(distance=3), []
    for split in ("train", "val", "test"):
        try:
            assert task.generate(split, 4, 3, seed=0).tokens.shape == (4, 5)
        except ValueError as error:
            assert f"the {split!r} split at distance 3 found only 0 of 4 samples" in str(error)
            assert "sample space is too small" in str(error)
            failed.append(split)
    assert len(failed) == 2


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MQAR(vocab_size=31), r"data.vocab_size=31 is odd"),
        (
            lambda: MQAR(num_pairs=65, vocab_size=128),
            r"data.num_pairs=65 is out of range; allowed: .*\[1, 64\]",
        ),
        (lambda: MQAR(spacing=-1), r"data.spacing=-1 is out of range"),
        (lambda: MQAR(distance=21, num_pairs=8, spacing=8), r"data.distance=21 is too short .* >= 22"),
        (
            lambda: MQAR(distance=0, num_pairs=1, vocab_size=8, spacing=0),
            r"data.vocab_size=8 .* only about 2\*\*4.0 distinct samples; allowed: >= 2\*\*12",
        ),
        (lambda: MQAR(eval_distance=[-1]), r"data.eval_distance=-1"),
        (lambda: Copying(length=0), r"data.length=0 is out of range; allowed: .*\[1, 1024\]"),
        (lambda: Copying(num_symbols=1), r"data.num_symbols=1 is out of range"),
        (lambda: Copying(distance=6, length=8), r"data.distance=6 is too short for data.length=8: .* >= 7"),
        (lambda: Copying(region=20), r"data.region=20 only applies to selective copying"),
        (lambda: Copying(selective=True, length=8, region=8), r"data.region=8 is out of range"),
        (lambda: Copying(selective="yes"), r"data.selective='yes'; allowed: true or false"),
        (
            lambda: Copying(distance=2, length=2, num_symbols=4),
            r"data.num_symbols=4 .* only about 2\*\*4.0 distinct",
        ),
        (
            lambda: InductionHeads(num_symbols=2),
            r"data.num_symbols=2 is out of range; allowed: .*\[3, 1024\]",
        ),
        (lambda: InductionHeads(trigger="fixed"), r"data.trigger='fixed'; allowed: random, special"),
        (lambda: InductionHeads(jitter=-2), r"data.jitter=-2 is out of range"),
        (lambda: InductionHeads(distance=0, num_symbols=4, jitter=0), r"data.distance=0 .* distinct samples"),
        (lambda: InductionHeads(distance=2.5), r"data.distance=2.5 is not an integer"),
        (lambda: PronounCoref(competitors=9), r"data.competitors=9 is out of range; allowed: .*\[0, 8\]"),
        (lambda: PronounCoref(distance=0, competitors=2), r"data.distance=0 is too short: allowed .* >= 1"),
        (lambda: PronounCoref(cue="name"), r"data.cue='name'; allowed: pronoun, description, mixed"),
        (lambda: PronounCoref(distance=1, competitors=0), r"data.distance=1 .* distinct samples"),
        (lambda: ModularSum(modulus=1), r"data.modulus=1 is out of range; allowed: .*\[2, 64\]"),
        (lambda: ModularSum(segments=0), r"data.segments=0 is out of range; allowed: .*\[1, 1024\]"),
        (lambda: ModularSum(distance=-1), r"data.distance=-1 is out of range"),
        (
            lambda: Parity(distance=0),
            r"data.distance=0 with data.segments=8 allows only about 2\*\*8.0 distinct samples; .*>= 1 here",
        ),
        (lambda: Parity(distance=[0, 16]), r"data.distance=0 .* 2\*\*8.0 distinct samples"),
        (lambda: Parity(distance=16, eval_distance=[0]), r"data.distance=0 .* distinct samples"),
        (lambda: PermutationComposition(group="S4"), r"data.group='S4'; allowed: S3, A4, S5"),
        (lambda: PermutationComposition(point="middle"), r"data.point='middle'; allowed: last, first"),
        (lambda: PermutationComposition(distance=2.0), r"data.distance=2.0 is not an integer"),
        (
            lambda: PermutationComposition(distance=3, group="S3", segments=1),
            r"data.distance=3 with data.group=S3 and data.segments=1 allows only about 2\*\*11.9",
        ),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


# --- any valid parameters: the distance contract the diagnostics rely on ------------------------------------
@st.composite
def any_task(draw: st.DrawFn) -> tuple[SyntheticTask, bool]:
    """A task with random valid parameters, and whether every answer (not only the last) is exactly D back."""
    kind = draw(st.sampled_from([MQAR, Copying, InductionHeads, PronounCoref]))
    if kind is MQAR:
        pairs, spacing = draw(st.integers(1, 12)), draw(st.integers(0, 8))
        smallest = max(0, 2 * pairs + spacing - 2)
        kwargs = {
            "num_pairs": pairs,
            "spacing": spacing,
            "vocab_size": 2 * draw(st.integers(max(pairs, 2), 128)),
        }
    elif kind is Copying:
        length, selective = draw(st.integers(1, 12)), draw(st.booleans())
        region = draw(st.integers(length + 1, 3 * length + 1)) if selective else None
        smallest = length - 1
        kwargs = {
            "length": length,
            "num_symbols": draw(st.integers(2, 32)),
            "selective": selective,
            "region": region,
        }
    elif kind is InductionHeads:
        smallest = 0
        kwargs = {
            "num_symbols": draw(st.integers(3, 32)),
            "trigger": draw(st.sampled_from(["random", "special"])),
            "jitter": draw(st.integers(0, 8)),
        }
    else:
        competitors = draw(st.integers(0, 8))
        smallest = 1
        kwargs = {
            "competitors": competitors,
            "cue": draw(st.sampled_from(["pronoun", "description", "mixed"])),
        }
    try:
        task = kind(distance=draw(st.integers(smallest, smallest + 80)), **kwargs)
    except ValueError as error:  # too small a sample space: a documented refusal, not a failure
        assume("distinct samples" not in str(error))
        raise
    return task, not kwargs.get("selective", False)


@settings(max_examples=80, deadline=None)
@given(any_task(), st.integers(0, 2**31), st.sampled_from(["train", "val", "test"]))
def test_the_source_is_exactly_distance_back_for_any_valid_parameters(
    task_and_exact: tuple[SyntheticTask, bool], seed: int, split: str
) -> None:
    task, every_answer_exact = task_and_exact
    (distance,) = task.train_distances
    batch = task.generate(split, 16, distance, seed)
    check_batch(task, batch, distance, int((batch.targets[0] != IGNORE).sum()))
    for tokens, targets, positions in zip(batch.tokens, batch.targets, answer_positions(batch), strict=True):
        exact = positions if every_answer_exact else positions[-1:]  # the diagnostics use the last answer
        for p in exact:
            assert tokens[p - distance - 1] == targets[p]


# --- every task with every model, through the real configs --------------------------------------------
def test_every_task_validates_with_every_model(compose, data_name: str, model_name: str) -> None:
    validate(compose([f"data={data_name}", f"model={model_name}"]))  # raises on any mismatch


def check_training_run(tmp_path: Path, *overrides: str) -> None:
    result = train_job(tmp_path, *overrides, "trainer=debug", "train.eval_samples=16")
    assert result["status"] == "ok" and result["steps"] == 4 and result["val_acc"] is not None
    distance = result["config"]["data"]["distance"]
    assert set(map(int, result["test_acc_per_distance"])) == {distance}  # one per configured distance


def test_each_task_trains_end_to_end(tmp_path: Path, data_name: str) -> None:
    check_training_run(tmp_path, f"data={data_name}")


@pytest.mark.slow
def test_each_task_trains_with_each_model(tmp_path: Path, data_name: str, model_name: str) -> None:
    check_training_run(tmp_path, f"data={data_name}", f"model={model_name}")


# --- the presets: every grid point is a valid config ------------------------------------------------------
SHORT = {"mqar": ["data.num_pairs=3", "data.spacing=0"]}  # MQAR's minimum distance is 2 N + spacing - 2


def check_every_point(overrides: list[str]) -> None:
    """Each job of the sweep, as Hydra's basic sweeper would launch it, passes the config validation."""
    with initialize_config_module("longrange.conf", version_base="1.3"):
        params = hydra_compose("config", overrides=overrides, return_hydra_config=True).hydra.sweeper.params
    points = grid_points(params, overrides)
    assert len(points) > 1
    for point in points:
        validate(compose_config(point))


@pytest.mark.parametrize(
    "preset", ["length_extrapolation", pytest.param("distance_sweep", marks=pytest.mark.slow)]
)
def test_every_point_of_the_presets_is_valid_for_every_task(preset: str, data_name: str) -> None:
    check_every_point([f"experiment={preset}", f"data={data_name}", *SHORT.get(data_name, [])])


def test_every_point_of_the_zoo_and_its_capacity_axis_is_valid() -> None:
    check_every_point(["experiment=zoo_sweep"])
    for num_pairs in (4, 2):  # the capacity axis (README): fewer pairs than the zoo's 8
        validate(compose_config(["experiment=zoo_sweep", "model=attention", f"data.num_pairs={num_pairs}"]))


def test_the_state_tracking_preset_sweeps_every_model_short_to_long() -> None:
    """experiment=state_tracking: the three tasks, every file of conf/model/ (the extended-eigenvalue
    variants included), two rates, three seeds; trained at most 16 updates, evaluated at >= 8x that. Every
    point of one seed and rate is validated (the seed and the rate change nothing the validation checks),
    and the group axis of the permutation task (A4, S5) with one model."""
    overrides = ["experiment=state_tracking"]
    with initialize_config_module("longrange.conf", version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    models = {p.stem for p in (CONF / "model").glob("*.yaml")}
    assert set(params.model.split(",")) == models and {"deltanet_negeig", "mamba_negeig"} <= models
    assert params.data.split(",") == ["permutation", "modular", "parity"]
    assert len(params["train.lr"].split(",")) == 2 and len(str(params.seed).split(",")) == 3
    assert max(cfg.data.distance) <= 16 and max(cfg.data.eval_distance) >= 8 * max(cfg.data.distance)
    assert len(grid_points(params, overrides)) == len(models) * 3 * 2 * 3
    check_every_point([*overrides, "seed=0", "train.lr=1e-3"])
    for group in ("A4", "S5"):
        validate(compose_config([*overrides, "data=permutation", f"data.group={group}", "model=gru"]))


def test_the_s5_preset_tracks_a_ball_through_s5_for_every_model() -> None:
    """experiment=state_tracking_s5: every file of conf/model/, three seeds, one rate; the ball named
    first in S5; evaluated at >= 8x the longest trained distance; every point validates."""
    overrides = ["experiment=state_tracking_s5"]
    with initialize_config_module("longrange.conf", version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert set(params.model.split(",")) == {p.stem for p in (CONF / "model").glob("*.yaml")}
    assert str(params.seed).split(",") == ["0", "1", "2"] and "train.lr" not in params
    assert (cfg.data.group, cfg.data.point) == ("S5", "first")
    assert max(cfg.data.eval_distance) >= 8 * max(cfg.data.distance)
    check_every_point([*overrides, "seed=0"])

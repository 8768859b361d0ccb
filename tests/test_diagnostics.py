"""Diagnostics: attention maps and mass, gradient flow, memory probe, the interpret CLI, the report figures.

Two tiny end-to-end runs (a few seconds each, shared by the tests of this file): the attention model and
a GRU on a short task. The GRU run checks that a model without ``attention_maps`` gets every other
diagnostic and no attention map.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import read_json, tensorboard_events, train_job

from longrange.datasets.coref import CorefRecall
from longrange.experiments.figures import attention_figure, to_image
from longrange.experiments.interpret import main as interpret_main
from longrange.experiments.report.analysis import load_jobs
from longrange.experiments.report.build import diagnostics_figures, diagnostics_panels
from longrange.experiments.results import DIAGNOSTICS_FILE, write_json_atomic
from longrange.experiments.run.measurements import (
    collect_answers,
    gradient_flow,
    last_answers,
    memory_probe,
    probe_offsets,
)
from longrange.models.module import LongRangeModule

DISTANCE = 4
LENGTH = DISTANCE + 6  # coref without offset: L = D + 6, the answer is the last position
TINY = [
    f"data.distance={DISTANCE}",
    "data.max_offset=0",
    "data.load=0",
    "data.num_nouns=8",
    "train.batch_size=32",
    "train.eval_samples=64",
    "train.warmup_steps=20",
    "train.lr=3e-3",
    "trainer.max_steps=150",
    "trainer.val_check_interval=50",
    "trainer.log_every_n_steps=50",
    "trainer.enable_progress_bar=false",
    "threads=1",
]


def run_tiny(out_dir: Path, overrides: list[str]) -> Path:
    train_job(out_dir, *TINY, *overrides)
    return out_dir


@pytest.fixture(scope="module")
def attention_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = ["model=attention", "model.width=32", "model.num_heads=2", "model.d_ff=64"]
    return run_tiny(tmp_path_factory.mktemp("attention"), model)


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_tiny(tmp_path_factory.mktemp("gru"), ["model=gru", "model.width=32", "model.d_input=32"])


def read(run_dir: Path, name: str) -> dict:
    return read_json(run_dir / name)


# --- the attention model: it learns to look at the antecedent, and TensorBoard shows it -------------
# The two tests that need the model to have learned (a training outcome) run with the slow tests.
@pytest.mark.slow
def test_attention_mass_on_the_antecedent_is_far_above_uniform(attention_run: Path) -> None:
    result, diagnostics = read(attention_run, "result.json"), read(attention_run, DIAGNOSTICS_FILE)
    assert result["val_acc"] >= 0.9
    uniform = 1 / LENGTH
    assert diagnostics["attention_uniform"][str(DISTANCE)] == pytest.approx(uniform)
    mass = diagnostics["attention_mass"][str(DISTANCE)]  # per layer, max over heads
    assert set(mass) == {"layer0", "layer1"}
    assert max(mass.values()) > max(0.5, 4 * uniform)


def test_event_files_hold_attention_images_and_scalars(attention_run: Path) -> None:
    accumulator, diagnostics = tensorboard_events(attention_run), read(attention_run, DIAGNOSTICS_FILE)
    images = accumulator.Tags()["images"]
    assert {f"attention/d={DISTANCE}", "diagnostics/gradient_flow", "diagnostics/memory_probe"} <= set(images)
    heatmaps = accumulator.Images(f"attention/d={DISTANCE}")
    assert [e.step for e in heatmaps] == [50, 150]  # after the first validation and the last
    for event in heatmaps:
        assert event.encoded_image_string.startswith(b"\x89PNG") and event.width > 300
    for layer in (0, 1):
        scalars = accumulator.Scalars(f"val/attn_mass/layer{layer}/d={DISTANCE}")
        assert len(scalars) == 3
        final = diagnostics["attention_mass"][str(DISTANCE)][f"layer{layer}"]
        assert scalars[-1].value == pytest.approx(final, abs=1e-4)  # same weights, same samples


@pytest.mark.slow
def test_gradient_flow_and_probe_reach_back_to_the_antecedent(attention_run: Path) -> None:
    diagnostics = read(attention_run, DIAGNOSTICS_FILE)
    gradient = {int(k): v for k, v in diagnostics["gradient_norm"][str(DISTANCE)].items()}
    assert sorted(gradient) == list(range(LENGTH - 1))  # every position before the answer
    assert all(v > 0 for v in gradient.values())
    probe = {int(k): v for k, v in diagnostics["probe_accuracy"][str(DISTANCE)].items()}
    assert sorted(probe) == probe_offsets(DISTANCE) == [0, 1, 2, 4, 5]
    assert diagnostics["probe_chance"][str(DISTANCE)] == pytest.approx(1 / 8)
    assert probe[0] >= 0.9  # the antecedent's own position
    assert probe[DISTANCE + 1] >= 0.9  # the answer position of a model that answers correctly
    assert 0 < diagnostics["cost_s"] < read(attention_run, "result.json")["wall_time_s"]


# --- a model without attention maps: everything else still works -----------------------------------
def test_a_model_without_attention_gets_the_other_diagnostics(gru_run: Path) -> None:
    diagnostics = read(gru_run, DIAGNOSTICS_FILE)
    assert diagnostics["attention_mass"] == {} and diagnostics["attention_uniform"] == {}
    assert len(diagnostics["gradient_norm"][str(DISTANCE)]) == LENGTH - 1
    assert len(diagnostics["probe_accuracy"][str(DISTANCE)]) == len(probe_offsets(DISTANCE))
    accumulator = tensorboard_events(gru_run)
    assert set(accumulator.Tags()["images"]) == {"diagnostics/gradient_flow", "diagnostics/memory_probe"}
    assert not [t for t in accumulator.Tags()["scalars"] if "attn_mass" in t]


# --- definitions, on the real task --------------------------------------------------------------
def test_the_antecedent_sits_at_p_minus_d_minus_1() -> None:
    task = CorefRecall(distance=[5, 9], load=1)
    batches = [task.generate("val", 16, d, seed=0) for d in (5, 9)]
    answers = collect_answers(batches, limit=10)
    assert sorted(answers) == [5, 9]
    for d, found in answers.items():
        assert len(found.position) == 10
        assert torch.equal(found.position - found.antecedent, torch.full((10,), d + 1))
        rows = torch.arange(10)
        assert torch.equal(found.tokens[rows, found.antecedent], found.target)  # coref: answer = antecedent


def test_probe_and_gradient_flow_work_on_an_untrained_lstm() -> None:
    torch.manual_seed(0)
    task = CorefRecall(distance=8, num_nouns=4, max_offset=0)
    model = {"_target_": "longrange.models.lstm.LSTM", "d_input": 16, "width": 16}
    module = LongRangeModule(model=model, vocab=task.vocab.words).eval()
    fit = last_answers(task.generate("train", 128, 8, seed=0))[8]
    score = last_answers(task.generate("val", 32, 8, seed=0))[8]
    accuracy, chance = memory_probe(module, fit, score, distance=8)
    assert sorted(accuracy) == [0, 1, 2, 4, 8, 9] and chance == pytest.approx(1 / 4)
    gradient = gradient_flow(module, score)
    assert sorted(gradient) == list(range(8 + 5)) and all(v > 0 for v in gradient.values())
    assert all(p.grad is None for p in module.parameters())  # diagnostics never touch the model's grads


def test_long_samples_get_the_answer_row_and_a_zoom() -> None:
    L, heads = 70, 2
    maps = [torch.rand(heads, L, L).tril().softmax(-1) for _ in range(2)]
    words = [f"w{i}" for i in range(L)]
    figure = attention_figure(words, maps, answer=L - 1, antecedent=4, title="long")
    assert len(figure.axes) == 2 * 2 + 1  # (answer row, zoom) per layer + colour bar
    assert figure.axes[1].get_xticklabels()[0].get_text() == "w0"  # zoom: positions 0..12 around 4
    assert to_image(figure).shape[2] == 3


# --- the interpret CLI ----------------------------------------------------------------------------
def test_interpret_renders_a_typed_sentence(attention_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "kite.png"
    interpret_main(
        [
            str(attention_run / "checkpoints" / "last.ckpt"),
            "i fixed a kite then we laughed quietly the",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert out.read_bytes().startswith(b"\x89PNG")
    assert "prediction after '<bos> i fixed a kite then we laughed quietly the': kite" in printed
    assert "attention on 'kite' (position 4)" in printed


def test_interpret_rejects_unknown_words_and_lists_the_allowed_ones(attention_run: Path, capsys) -> None:
    checkpoint = str(attention_run / "checkpoints" / "last.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        interpret_main([checkpoint, "i watched a zebra then the"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "unknown words ['zebra']" in error
    assert "allowed words:" in error and "movie" in error and "kite" in error


# --- the sweep report's figures -------------------------------------------------------------------
def test_report_draws_diagnostics_per_series_skipping_stale_files(
    attention_run: Path, gru_run: Path, tmp_path: Path
) -> None:
    """One panel per series; a diagnostics.json from another config in the same folder is not drawn."""
    import shutil

    sweep = tmp_path / "sweep"
    for name, run in (("attention", attention_run), ("gru", gru_run), ("stale", gru_run)):
        shutil.copytree(run, sweep / name)
    stale = read(sweep / "stale", DIAGNOSTICS_FILE) | {"config_hash": "another config"}
    write_json_atomic(sweep / "stale" / DIAGNOSTICS_FILE, stale)
    written = diagnostics_figures(load_jobs(sweep), tmp_path / "report")
    assert sorted(written) == ["attention_mass", "gradient_flow", "memory_probe"]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in written.values())
    assert diagnostics_figures([], tmp_path / "empty") == {}


def test_diagnostics_never_average_two_series(tmp_path: Path) -> None:
    """Two budgets of one model are two series, so two panels: not one panel holding their mean."""
    for steps, norm in ((250, 1.0), (500, 3.0)):
        run = tmp_path / f"steps={steps}"
        config = {"model": {"_target_": "x.GRU"}, "data": {"distance": 4}, "trainer": {"max_steps": steps}}
        result = {"status": "ok", "config": config, "config_hash": str(steps), "parameters": 1, "steps": 1}
        write_json_atomic(run / "result.json", result)
        diagnostics = {
            "gradient_norm": {4: {0: norm}},
            "probe_accuracy": {4: {0: 1.0}},
            "probe_chance": {4: 0.5},
        }
        write_json_atomic(run / DIAGNOSTICS_FILE, diagnostics | {"config_hash": str(steps)})
    panels, _ = diagnostics_panels(load_jobs(tmp_path))
    gradients = panels["gradient_flow"]
    assert sorted(gradients) == ["gru max_steps=250", "gru max_steps=500"]
    assert [gradients[s][4][0] for s in sorted(gradients)] == [1.0, 3.0]  # not their mean, 2.0

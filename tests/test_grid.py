"""The sweep grid's two additions to Hydra's cartesian product (experiments/sweep/grid.py): axes of one
model only, and the two-stage choice of a key on the first seed's validation accuracy."""

from __future__ import annotations

from pathlib import Path

from longrange.experiments.results import write_json_atomic
from longrange.experiments.sweep.grid import chosen, folder_name, grid_points, stages


def test_per_model_axes_expand_only_their_model_and_yield_to_the_command_line() -> None:
    per_model = {"deltanet": {"model.num_heads": "2,8"}, "mamba": {"model.d_state": [4, 32]}}
    points = grid_points({"model": "deltanet,mamba,gru"}, ["seed=0,1"], per_model)
    assert [p for p in points if "model=gru" in p] == [["model=gru", "seed=0"], ["model=gru", "seed=1"]]
    assert ["model=deltanet", "seed=1", "model.num_heads=8"] in points
    assert ["model=mamba", "seed=0", "model.d_state=32"] in points  # a YAML list works as well
    assert len(points) == 2 * 2 + 2 * 2 + 2
    narrowed = grid_points({"model": "deltanet"}, ["model.num_heads=4"], per_model)
    assert narrowed == [["model=deltanet", "model.num_heads=4"]]


def test_without_a_selection_or_a_second_seed_there_is_one_stage() -> None:
    points = grid_points({"model": "gru", "train.lr": "1e-3,1e-2"}, ["seed=0,1"])
    assert stages(points, None) == [points]
    assert stages(grid_points({"model": "gru", "train.lr": "1e-3,1e-2"}, ["seed=3"]), "train.lr") == [
        grid_points({"model": "gru", "train.lr": "1e-3,1e-2"}, ["seed=3"])
    ]


def test_later_seeds_run_at_the_value_the_first_seed_chose_on_validation(tmp_path: Path) -> None:
    """Per point (here: each width), the rate whose seed-0 job has the best *validation* accuracy; test
    accuracy is not read (the loser has the better test score); a point without results keeps its first."""
    points = grid_points({"model": "gru", "train.lr": "1e-3,1e-2", "seed": "0,1,2"}, [],
                         {"gru": {"model.width": "8,16,32"}})  # fmt: skip
    first, rest = stages(points, "train.lr")
    assert len(first) == 6 and len(rest) == 12 and all("seed=0" in p for p in first)
    scores = {("8", "0.001"): (0.9, 0.1), ("8", "0.01"): (0.5, 1.0), ("16", "0.001"): (0.2, 0.9),
              ("16", "0.01"): (0.7, 0.0)}  # fmt: skip
    for (width, lr), (val, test) in scores.items():
        job = ["model=gru", f"train.lr={lr}", "seed=0", f"model.width={width}"]
        write_json_atomic(tmp_path / folder_name(job, set()) / "result.json",
                          {"status": "ok", "val_acc": val, "test_acc": test})  # fmt: skip
    kept = chosen(first, rest, "train.lr", lambda p: tmp_path / folder_name(p, set()))
    rates = {(p[3], p[1]) for p in kept}
    assert rates == {("model.width=8", "train.lr=0.001"), ("model.width=16", "train.lr=0.01"),
                     ("model.width=32", "train.lr=0.001")}  # fmt: skip
    assert len(kept) == 6  # 3 widths x seeds 1 and 2

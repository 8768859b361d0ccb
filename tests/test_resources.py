"""Memory: the estimate before training, the refusal of jobs that cannot fit, evaluation bounded by a token
budget, and SIGTERM honoured during a long evaluation (experiments/resources.py, datasets/datamodule.py).

Limits are set explicitly (``resources.max_memory_gb``) so that no test depends on the machine's memory.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch
from helpers import compose_config, read_json, run_cli, start_cli, wait_for

from longrange.datasets.datamodule import TaskDataModule
from longrange.experiments.results import config_hash, read_result
from longrange.experiments.run import footprint, resources
from longrange.experiments.run.config import ConfigError, validate


def estimate(*overrides: str) -> resources.Estimate:
    cfg = compose_config(list(overrides))
    task, _ = validate(cfg)
    return resources.estimate(cfg, task)


# The typo: refused in seconds, before anything is written, with the estimate in the message.
def test_an_eval_distance_typo_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    start = time.perf_counter()
    done = run_cli(["data.eval_distance=[8,100000]", "resources.max_memory_gb=2"], tmp_path)
    seconds = time.perf_counter() - start
    assert done.returncode != 0 and list(tmp_path.iterdir()) == []
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("config error: data.eval_distance=100000: the job needs an estimated ")
    assert (
        "GB at its peak" in message and "more than the 2.00 GB allowed (resources.max_memory_gb=2)" in message
    )
    assert "lower data.eval_distance" in message
    assert seconds < 120, f"refused after {seconds:.0f} s"  # the run took 11 minutes to fail


# A training step that cannot fit names the training keys and what to lower.
def test_a_training_step_too_large_is_refused_with_its_keys() -> None:
    cfg = compose_config(["data.distance=100000", "resources.max_memory_gb=24"])
    task, _ = validate(cfg)
    expected = (
        r"data.distance=100000, train.batch_size=64: the job needs an estimated \d+\.\d GB at its peak "
        r"\(training step\), more than the 24.0 GB allowed \(resources.max_memory_gb=24\); lower "
        r"data.distance or train.batch_size"
    )
    with pytest.raises(ConfigError, match=expected):
        resources.check(cfg, task)
    default = compose_config(["resources.max_memory_gb=24"])
    assert resources.check(default, validate(default)[0]).total < 24 * resources.GB


# A sweep's parallel jobs share the machine's memory; SLURM jobs get the launcher's mem_gb each.
def test_parallel_jobs_share_the_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "available_memory", lambda: (8 * resources.GB, "MemAvailable"))
    joblib = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 4}
    assert resources.parallel_jobs(joblib, points=18) == (4, None)
    assert resources.parallel_jobs(joblib, points=3) == (3, None)
    basic = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
    assert resources.parallel_jobs(basic, 18) == (1, None)
    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", "mem_gb": 8}
    assert resources.parallel_jobs(slurm, 18) == (1, 8 * resources.GB)
    cfg = compose_config([])
    assert resources.limit(cfg, 4) == (2 * resources.GB, "MemAvailable 8.00 GB shared by 4 parallel jobs")
    assert resources.limit(cfg, 1, 8 * resources.GB)[1] == "hydra.launcher.mem_gb=8 per job"
    configured = compose_config(["resources.max_memory_gb=3"])
    assert resources.limit(configured, 4) == (3 * resources.GB, "resources.max_memory_gb=3")


def test_resources_keys_are_validated_and_not_hashed(tmp_path: Path) -> None:
    for override, message in (
        ("resources.eval_tokens=0", "resources.eval_tokens=0 is out of range; allowed: >= 1"),
        ("resources.max_memory_gb=-1", "resources.max_memory_gb=-1 is out of range; allowed: > 0 or null"),
        ("++resources.max_memory=4", "resources.max_memory: unknown key for ResourcesConfig"),
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate(compose_config([override]))
    plain = compose_config([], tmp_path)
    changed = compose_config(["resources.max_memory_gb=3", "resources.eval_tokens=128"], tmp_path)
    hashes = {config_hash(_container(cfg)) for cfg in (plain, changed)}
    without = {k: v for k, v in _container(plain).items() if k != "resources"}  # results written before
    assert hashes == {config_hash(without)}


def _container(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


# The peak counts what torch allocates inside the block and is alive at once: what is freed stops counting,
# what existed before never counts, even when freed inside (torch may add a few bytes of scalars).
def test_the_peak_counts_live_memory_allocated_inside() -> None:
    existing, before = torch.ones(10_000), [torch.ones(50_000)]

    def work(extra: int) -> None:
        before.clear()  # 200,000 bytes allocated before, freed here: neither counted nor subtracted
        a = torch.empty(1000)  # 4,000 bytes
        b = existing + 1  # 40,000 bytes; existing (from before) is not counted
        held = torch.empty(extra, dtype=torch.uint8)  # extra bytes, alive at the peak
        del a
        c = torch.empty(500)  # 2,000 bytes, after a was freed
        del b, c, held

    assert 44_000 <= footprint.peak_bytes(lambda: work(0)) <= 44_000 + 64
    before.append(torch.ones(50_000))
    assert 1_044_000 <= footprint.peak_bytes(lambda: work(1_000_000)) <= 1_044_000 + 64


# An operator's own buffers count, not only its outputs: at inference, aten::gru projects the whole input
# (3 x width per token) inside one operator, then runs the recurrence.
def test_buffers_inside_an_operator_count() -> None:
    gru, inputs = torch.nn.GRU(16, 32, batch_first=True), torch.randn(2, 256, 16)
    with torch.inference_mode():
        peak = footprint.peak_bytes(lambda: gru(inputs))
    assert peak >= 2 * 256 * 3 * 32 * 4


def test_growth_is_linear_unless_the_measurements_are_quadratic() -> None:
    lengths = (32, 128, 512)
    linear = footprint.Growth.fit(lengths, [5000 + 100 * n + (300 if n == 128 else 0) for n in lengths])
    assert linear.c == 0 and linear(10_000) >= 100 * 10_000
    quadratic = footprint.Growth.fit(lengths, [100 * n + 64 * n * n for n in lengths])
    assert quadratic.c == pytest.approx(64) and quadratic(4096) == pytest.approx(100 * 4096 + 64 * 4096**2)


# Every model file is measured the same way: no per-model code. Memory grows with the length.
def test_every_model_is_measured(model_name: str) -> None:
    short = estimate(f"model={model_name}", "data.distance=64")
    long = estimate(f"model={model_name}", "data.distance=512")
    assert 0 < short.total < long.total
    measured = footprint.measure(_container(compose_config([f"model={model_name}"]).model), 60)
    assert measured.train(512) > measured.eval(512) > 0


# Evaluation batches hold at most eval_tokens tokens (one sample at least); the samples do not change.
def test_evaluation_batches_stay_within_the_token_budget() -> None:
    task, _ = validate(compose_config(["data.distance=8", "data.eval_distance=[8,300]"]))
    budgeted = TaskDataModule(task, batch_size=64, eval_samples=100, seed=0, eval_tokens=1000)
    whole = TaskDataModule(task, batch_size=64, eval_samples=100, seed=0)
    cut, uncut = budgeted.eval_set("val").batches, whole.eval_set("val").batches
    assert all(b.tokens.numel() <= max(1000, b.tokens.shape[1]) for b in cut)
    assert max(len(b.tokens) for b in cut if b.tokens.shape[1] == task.seq_len(300)) == 3  # 3 x 314 <= 1000
    for field in range(3):
        assert torch.equal(
            torch.cat([b[field].flatten() for b in cut]), torch.cat([b[field].flatten() for b in uncut])
        )


LONG_EVAL = [
    *("model=mamba", "data.distance=8", "data.eval_distance=[8,2000]", "data.max_offset=0", "trainer=debug"),
    *("train.batch_size=64", "train.eval_samples=64", "resources.max_memory_gb=64"),
]


# A job with a long evaluation distance fits its budgeted estimate, and the budget is what keeps it
# small: without it (batches of 64 samples of 2006 tokens) the same job peaks over 0.5 GB higher
# (measured: 0.79 GB with a budget of 4096 tokens, 2.04 GB without).
@pytest.mark.slow
def test_a_long_evaluation_stays_within_the_token_budget(tmp_path: Path) -> None:
    peaks = {}
    for tokens in (4096, 64 * 2006):
        run_dir = tmp_path / str(tokens)
        done = run_cli([f"hydra.run.dir={run_dir}", *LONG_EVAL, f"resources.eval_tokens={tokens}"], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        peaks[tokens] = read_result(run_dir)["memory_peak_mb"] * 2**20
    expected = estimate(*LONG_EVAL, "resources.eval_tokens=4096")
    assert peaks[4096] <= expected.total, (peaks, expected.describe())
    assert peaks[64 * 2006] - peaks[4096] > 500 * 2**20, peaks


# SIGTERM while a long evaluation runs: Lightning stops between two (budget-sized) batches; the job records
# interrupted and exits non-zero within 10 s.
@pytest.mark.slow
def test_sigterm_during_a_long_evaluation_records_interrupted_within_10_s(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    long = ["model=lstm", "data.distance=8", "data.eval_distance=20000", "train.eval_samples=256",
            "resources.eval_tokens=20000", "resources.max_memory_gb=64", "trainer.max_steps=2",
            "trainer.val_check_interval=2", "train.batch_size=8", "data.max_offset=0"]  # fmt: skip
    process = start_cli([f"hydra.run.dir={run_dir}", *long], tmp_path)
    wait_for(run_dir / "checkpoints" / "last.ckpt")  # saved at step 2, just before the validation
    time.sleep(8)  # past generating the set, inside the validation: 256 samples of 20,006 tokens, one a batch
    sent = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    seconds = time.perf_counter() - sent
    result = read_json(run_dir / "result.json")
    assert process.returncode == 143 and result["status"] == "interrupted", output[-3000:]
    assert result["val_acc"] is None  # stopped inside the validation, not after it
    assert seconds < 10, f"exited {seconds:.1f} s after SIGTERM"

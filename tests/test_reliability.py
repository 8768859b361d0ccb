"""Reliability: failures, signals, resume, divergence, checkpoints, reproducibility, isolation, atomicity.

Each test states the guarantee it checks (the README's "Reliability" section lists them). Misbehaving
models live in tests/faulty_models.py and are selected like any model, which also shows that a model
variant needs no change outside its own file and config.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import FAST, run_cli, start_cli, sweep_results, wait_for
from omegaconf import open_dict

from longrange.experiments.report.build import report
from longrange.experiments.results import read_result, write_json_atomic
from longrange.experiments.run.job import readable_checkpoint
from longrange.experiments.sweep.jobs import JobLock
from longrange.experiments.train import train

run = run_cli
results = sweep_results


def faulty(name: str, **knobs) -> list[str]:
    return [
        "model=gru",
        f"model._target_=faulty_models.{name}",
        *(f"+model.{k}={v}" for k, v in knobs.items()),
    ]


# A failing job does not stop the sweep; it records its error; the sweep exits non-zero.
@pytest.mark.slow
def test_one_failing_job_does_not_stop_the_sweep(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        "data.distance=2,5,8",
        *faulty("FailingGRU", fail_at_distance=5),
    ]
    done = run(args + FAST, tmp_path)
    assert done.returncode != 0
    by_distance = {r["config"]["data"]["distance"]: r for r in results(sweep_dir).values()}
    assert [by_distance[d]["status"] for d in (2, 5, 8)] == ["ok", "failed", "ok"]
    assert "RuntimeError: injected failure" in by_distance[5]["error"]


# Memory does not grow across failed jobs of one process (basic launcher keeps failures).
@pytest.mark.slow
def test_memory_does_not_grow_across_failed_jobs(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    failing = [*faulty("FailingGRU", fail_at_distance=5, hog_mb=300)]
    # the grid runs in order: three jobs at distance 5 fail (seeds 0-2), then the job at distance 2
    args = ["-m", f"hydra.sweep.dir={sweep_dir}", "data.distance=5,2", "seed=0,1,2", *failing]
    run(args + FAST, tmp_path)
    jobs = sorted(
        results(sweep_dir).values(), key=lambda r: (-r["config"]["data"]["distance"], r["config"]["seed"])
    )
    assert [j["status"] for j in jobs] == ["failed"] * 3 + ["ok"] * 3
    growth = jobs[3]["memory_mb_at_start"] - jobs[1]["memory_mb_at_start"]
    assert growth < 150, f"memory grew by {growth:.0f} MB over 2 failed jobs that each held 300 MB"


# SIGTERM mid-fit: status interrupted, exit code non-zero; a rerun resumes from the checkpoint.
@pytest.mark.slow
def test_sigterm_records_interrupted_and_the_rerun_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [f"hydra.run.dir={run_dir}", *faulty("SlowGRU", sleep_s=0.02), "data.distance=4",
            "trainer.max_steps=300", "trainer.val_check_interval=20", *FAST[1:]]  # fmt: skip
    process = start_cli(args, tmp_path)
    wait_for(run_dir / "checkpoints" / "last.ckpt")
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode not in (0, None), output[-2000:]
    interrupted = read_result(run_dir)
    assert interrupted["status"] == "interrupted" and interrupted["steps"] < 300
    resumed = run(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Restoring states from the checkpoint" in resumed.stdout + resumed.stderr
    assert read_result(run_dir)["status"] == "ok" and read_result(run_dir)["steps"] == 300


# SIGTERM while a validation set at D = 100,000 is generated (minutes of work that writes nothing): the job
# ends within 10 s as interrupted, and a rerun resumes from the checkpoint taken before it.
@pytest.mark.slow
def test_sigterm_during_evaluation_set_generation_stops_within_10_s(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # trainer=debug (in FAST): a checkpoint at step 2, then the first validation, which generates the sets
    args = [f"hydra.run.dir={run_dir}", "model=gru", "data.distance=8", "data.eval_distance=[8,100000]"]
    args += ["resources.max_memory_gb=24", *FAST]
    for attempt in ("first", "rerun"):
        process, seen = start_cli(args, tmp_path), []
        assert process.stdout is not None
        if attempt == "first":
            wait_for(run_dir / "checkpoints" / "last.ckpt", timeout=180)  # step 2 done: validation starts
        else:  # the checkpoint is there from the start: wait for the resume itself
            for line in process.stdout:
                seen.append(line)
                if "Restored all states from the checkpoint" in line:
                    break
        time.sleep(3)  # inside the generation of the D = 100,000 validation samples (minutes)
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        output = "".join(seen) + process.communicate(timeout=60)[0]
        assert time.monotonic() - sent < 10, output[-2000:]
        assert process.returncode == 143, output[-2000:]
        result = read_result(run_dir)
        assert result["status"] == "interrupted" and result["reason"] == "SIGTERM", result
        assert result["steps"] == 2, result  # stopped in the validation after step 2, both times


# SIGTERM to a local sweep's launcher alone (``kill PID``): its joblib workers get it too, their jobs end
# within seconds as interrupted, and no worker outlives the launcher.
@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_its_workers(tmp_path: Path) -> None:
    from longrange.experiments.sweep.jobs import child_processes

    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=cpu_parallel", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep_dir}",
            "data.distance=4,5", *faulty("SlowGRU", sleep_s=0.05), "trainer.max_steps=2000",
            "trainer.val_check_interval=20", *FAST[1:]]  # fmt: skip
    launcher = start_cli(args, tmp_path)
    deadline = time.monotonic() + 180
    while len(list(sweep_dir.glob("*/checkpoints/last.ckpt"))) < 2:  # both jobs are training
        assert time.monotonic() < deadline and launcher.poll() is None, "the two jobs never checkpointed"
        time.sleep(0.2)
    workers = child_processes(launcher.pid)
    assert workers, "no worker processes found"
    launcher.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    launcher.communicate(timeout=60)
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() - sent < 20:
        time.sleep(0.2)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "a worker outlived the launcher"
    statuses = [r["status"] for r in results(sweep_dir).values()]
    assert statuses == ["interrupted", "interrupted"], statuses


# Resume from the last checkpoint gives bit-identical final weights (dropout on: RNG state matters).
@pytest.mark.slow
def test_resume_is_bit_exact(make_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ["model=attention", "model.dropout=0.1", "data.load=0", "data.distance=[3,6]",
                 "trainer.max_steps=30", "trainer.val_check_interval=10"]  # fmt: skip
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert train(make_config(*overrides), straight)["status"] == "ok"
    monkeypatch.setenv("LONGRANGE_TEST_INTERRUPT_AT", "25")
    cfg = make_config(*overrides)
    with open_dict(cfg):  # the same attention model, raising KeyboardInterrupt at training step 25
        cfg.model._target_ = "faulty_models.InterruptingTransformer"
    assert train(cfg, interrupted)["status"] == "interrupted"
    monkeypatch.delenv("LONGRANGE_TEST_INTERRUPT_AT")
    assert train(cfg, interrupted)["status"] == "ok"
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_result(straight)["test_acc"] == read_result(interrupted)["test_acc"]


# A non-finite loss ends the job as diverged; the report shows it as diverged.
def test_nan_loss_is_recorded_as_diverged(make_config, tmp_path: Path) -> None:
    cfg = make_config("model=gru", "trainer.max_steps=10")
    with open_dict(cfg):
        cfg.model._target_ = "faulty_models.NaNGRU"
    result = train(cfg, tmp_path / "job")
    assert result["status"] == "diverged" and "non-finite training loss nan at step 2" in result["error"]
    table = report(tmp_path)["markdown"].read_text()
    assert "1 jobs: 1 diverged" in table and "- diverged: `job`" in table
    assert "| nangru | – |" in table  # no accuracy shown for it


# Checkpoints hold plain data: they load with weights_only=True; a crafted pickle is refused.
def test_checkpoints_load_weights_only_and_refuse_pickled_code(make_config, tmp_path: Path) -> None:
    from longrange.models.module import LongRangeModule

    train(make_config("model=gru"), tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["model"]["_target_"] == "longrange.models.gru.GRU"
    assert LongRangeModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt").num_parameters > 0

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    # The project's own reader of a job's checkpoint (what a resume loads) runs no pickled code: it sets
    # the file aside as unreadable and the job starts from scratch.
    crafted = tmp_path / "checkpoints" / "last.ckpt"
    crafted.write_bytes(pickle.dumps({"state_dict": Payload()}))
    record: dict = {}
    assert readable_checkpoint(tmp_path, record) is None and "checkpoint_set_aside" in record
    assert not (tmp_path / "pwned").exists() and not crafted.exists()


# Two fresh processes, same seed and thread count: identical weights and metrics, for every model.
@pytest.mark.slow
def test_same_seed_reproduces_bit_exactly_in_fresh_processes(model_name: str, tmp_path: Path) -> None:
    runs = [tmp_path / "first", tmp_path / "second"]
    for run_dir in runs:
        args = [f"hydra.run.dir={run_dir}", f"model={model_name}", "data.distance=[3,7]", "threads=1", *FAST]
        done = run(args + ["trainer.max_steps=8"], tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    first, second = read_result(runs[0]), read_result(runs[1])
    for key in ("val_acc", "test_acc", "test_acc_per_distance", "config_hash"):
        assert first[key] == second[key]


# A bad value anywhere in a sweep grid fails before any job trains, and no folder is created.
def test_bad_grid_point_fails_before_any_job(tmp_path: Path) -> None:
    done = run(["-m", "hydra.sweep.dir=sweep", "model=gru,lstm", "data.distance=6,-2"], tmp_path)
    assert done.returncode != 0
    assert "config error in sweep point" in done.stderr and "data.distance=-2 is out of range" in done.stderr
    assert list(tmp_path.iterdir()) == []


# Parallel joblib jobs: each writes only inside its own folder; no env var or thread count leaks.
@pytest.mark.slow
def test_joblib_jobs_are_isolated(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=cpu_parallel", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep_dir}",
            "data.distance=2,3,4,5", *faulty("LeakProbe")]  # fmt: skip
    done = run(args + FAST, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["status"] for r in results(sweep_dir).values()] == ["ok"] * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
    for job_dir in (p for p in sweep_dir.iterdir() if p.is_dir() and p.name != ".progress"):  # progress.py's
        written = {".hydra", "checkpoints", "tensorboard", "result.json", "train.log", "diagnostics.json"}
        assert {p.name for p in job_dir.iterdir()} <= written | {"job.lock"}  # the job's lock (jobs.py)


# A kill during a result write leaves result.json absent or valid JSON, never truncated.
def test_killed_writer_never_leaves_a_truncated_result(tmp_path: Path) -> None:
    writer = (
        "import sys, itertools\nfrom pathlib import Path\n"
        "from longrange.experiments.results import write_json_atomic\n"
        "for i in itertools.count():\n"
        "    write_json_atomic(Path(sys.argv[1]) / 'result.json', {'i': i, 'payload': 'x' * 200_000})\n"
    )
    rng = random.Random(0)
    for _ in range(8):
        process = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path)])
        time.sleep(0.5 + rng.random() * 0.5)
        process.kill()
        process.wait()
        text = (tmp_path / "result.json").read_text() if (tmp_path / "result.json").exists() else None
        assert text is None or json.loads(text)["payload"] == "x" * 200_000


def test_failed_rename_keeps_the_previous_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_json_atomic(tmp_path / "result.json", {"status": "ok"})

    def crash(*args):
        raise OSError("killed during rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_json_atomic(tmp_path / "result.json", {"status": "running"})
    assert read_result(tmp_path) == {"status": "ok"}


# The report on a partial sweep marks every status explicitly and still renders.
def test_report_marks_every_status(tmp_path: Path) -> None:
    base = {"config": {"model": {"_target_": "x.GRU"}, "data": {"distance": 4}, "seed": 0}, "chance": 0.1,
            "choices": {"model": "gru"}, "parameters": 1000, "steps": 10}  # fmt: skip
    statuses = {"ok": {"test_acc_per_distance": {"4": 1.0}, "test_acc": 1.0}, "failed": {"error": "E: x"},
                "interrupted": {}, "diverged": {}, "running": {}}  # fmt: skip
    for seed, (status, extra) in enumerate(statuses.items()):
        config = base["config"] | {"seed": seed}
        write_json_atomic(
            tmp_path / f"seed={seed}" / "result.json", base | extra | {"status": status, "config": config}
        )
    with JobLock(tmp_path / "seed=4") as lock:  # a live process holds the running job
        assert lock.acquire()
        paths = report(tmp_path)
    table = paths["markdown"].read_text()
    assert "5 jobs: 1 diverged, 1 failed, 1 interrupted, 1 ok, 1 running" in table
    assert "| gru | 1.000 |" in table  # the one ok seed
    assert (
        "| fixed | gru | 4 | 1.000 | – | 1 |" in table
        and "1 diverged, 1 failed, 1 interrupted, 1 running" in table
    )
    assert paths["plot"].exists()
    # Once no process holds it, a result that still says "running" is a job that died: stale.
    assert "1 interrupted (stale)" in report(tmp_path)["markdown"].read_text()


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_malloc_keeps_freed_memory_in_a_job_process() -> None:
    # In a fresh interpreter: a 64 MB result (over glibc's largest dynamic mmap threshold, 32 MB) freed and
    # allocated again, as a training step's activations are. glibc's default maps it afresh each time
    # (16,384 page faults); with the job's settings it is served from memory already mapped (none).
    code = """
import resource, sys, torch
from longrange.experiments.run.job import keep_freed_memory
if sys.argv[1] == "on":
    assert keep_freed_memory()
x = torch.ones(16 << 20)
for _ in range(10):  # the heap reaches its size
    y = x * 2.0
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    y = x * 2.0
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", code, mode], capture_output=True, text=True, check=True
            ).stdout
        )  # fmt: skip
        for mode in ("off", "on")
    }
    assert faults["off"] > 10 * 5_000, faults  # 16,384 pages mapped afresh per step
    # none once the heap has its size; where other allocations fragment it, it may grow by a block or two
    # more (32,768 seen once in a fresh clone): still a fraction of the default's
    assert faults["on"] < faults["off"] / 4, faults

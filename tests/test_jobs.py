"""One writer per job, no stale "running", damaged checkpoints set aside (experiments/jobs.py, train.py).

Each test states the guarantee it checks; the README's reliability section lists them with their limits.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import FAST, event_writers, read_json, start_cli, sweep_results, train_job, wait_for

from longrange.experiments.report.build import report
from longrange.experiments.results import read_result, write_json_atomic
from longrange.experiments.sweep.jobs import LOCK_FILE, SKIPPED, JobLock, is_locked, is_stale, job_state

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from longrange.experiments.sweep.jobs import JobLock
    lock = JobLock(Path(sys.argv[1]))
    print(lock.acquire(), flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


def hold_lock(run_dir: Path, seconds: float = 60) -> subprocess.Popen:
    """Another process that tries to take the job's lock, prints whether it got it, then sleeps."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir), str(seconds)], stdout=subprocess.PIPE, text=True
    )


# The lock is exclusive between processes, tells who holds it, and dies with its holder (even SIGKILL).
def test_the_lock_is_exclusive_and_released_when_its_process_dies(tmp_path: Path) -> None:
    other = hold_lock(tmp_path)
    assert other.stdout.readline().strip() == "True"
    lock = JobLock(tmp_path)
    assert not lock.acquire() and is_locked(tmp_path) and not is_stale(tmp_path)
    assert lock.holder()["pid"] == other.pid
    other.send_signal(signal.SIGKILL)
    other.wait()
    assert not is_locked(tmp_path) and is_stale(tmp_path)
    assert lock.acquire()  # a lock left by a dead process is simply taken over
    second = hold_lock(tmp_path, 0)
    assert second.stdout.readline().strip() == "False"
    second.wait()
    lock.release()
    assert not is_locked(tmp_path)


# A job held by another live process is skipped: nothing written, no failure, the holder named.
def test_a_job_running_elsewhere_is_skipped_without_writing(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "result.json", {"status": "running", "config_hash": "other"})
    before = (tmp_path / "result.json").read_text()
    with JobLock(tmp_path) as lock:
        assert lock.acquire()
        result = train_job(tmp_path, *FAST)
        assert job_state(tmp_path, "another launch").startswith("running elsewhere (pid")
    assert result["status"] == SKIPPED and f"running elsewhere (pid {os.getpid()} " in result["reason"]
    assert (tmp_path / "result.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, "result.json"]


# Two identical sweeps started at the same moment on one folder: every job trained exactly once, one
# set of event files per job, no last-v1.ckpt; both exit 0 and end with a summary that tells the jobs
# they trained ("ok") from those another process ran ("running elsewhere", "done elsewhere").
@pytest.mark.slow
def test_two_identical_sweeps_train_every_job_exactly_once(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "conc"
    grid = ["model=lstm,gru", "data.distance=4,8", "trainer.max_steps=40", "trainer.val_check_interval=20"]
    args = ["-m", f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=basic", *FAST, *grid]
    first, second = start_cli(args, tmp_path), start_cli(args, tmp_path)
    outputs = [process.communicate(timeout=900)[0] for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs[0][-3000:] + outputs[1][-3000:]
    ok_counts = []
    for output in outputs:
        summary = re.search(r"sweep summary \([^)]*\): (.*)", output)
        assert summary, output[-3000:]
        counts = {state: int(n) for n, state in re.findall(r"(\d+) ([a-z ]+?)(?:,|$)", summary.group(1))}
        assert set(counts) <= {"ok", "running elsewhere", "done elsewhere"} and sum(counts.values()) == 4
        ok_counts.append(counts.get("ok", 0))
    # "ok": trained by this launch, or done before it started (a late start); never both trained one job
    assert sum(ok_counts) >= 4, outputs
    results = sweep_results(sweep_dir)
    assert len(results) == 4 and {r["status"] for r in results.values()} == {"ok"}
    for name in results:
        log = (sweep_dir / name / "train.log").read_text()  # both processes log a job here
        assert log.count(": ok, test acc") == 1, log
        assert len(event_writers(sweep_dir / name)) == 1  # one writer: no duplicate curves
        assert sorted(p.name for p in (sweep_dir / name / "checkpoints").iterdir()) == ["last.ckpt"]


# A job killed with SIGKILL says "running" in its result; the report shows it as interrupted (stale)
# (no process holds its lock), and a rerun resumes it from its last checkpoint.
@pytest.mark.slow
def test_a_killed_job_is_reported_stale_and_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "sweep" / "job"
    slow = ["model=gru", "model._target_=faulty_models.SlowGRU", "+model.sleep_s=0.1", "data.distance=4"]
    steps = ["trainer.max_steps=60", "trainer.val_check_interval=10"]  # killed after step 10, >= 5 s early
    args = [f"hydra.run.dir={run_dir}", *slow, *steps, *FAST[1:]]
    process = start_cli(args, tmp_path)
    wait_for(run_dir / "checkpoints" / "last.ckpt")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert read_result(run_dir)["status"] == "running" and is_stale(run_dir)
    table = report(tmp_path / "sweep")["markdown"].read_text()
    assert "1 jobs: 1 interrupted (stale)" in table and "- interrupted (stale): `job`" in table
    resumed = start_cli(args, tmp_path)
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert "died without a result (interrupted, stale); resuming" in output
    assert "Restoring states from the checkpoint" in output
    assert read_result(run_dir)["status"] == "ok" and read_result(run_dir)["steps"] == 60


# A checkpoint cut short is renamed and kept, the job starts from scratch and completes, and its
# result and log say so.
def test_a_truncated_checkpoint_is_set_aside_and_the_job_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert train_job(tmp_path, *FAST)["status"] == "ok"
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])  # a partial copy
    failed = read_json(tmp_path / "result.json") | {"status": "failed"}  # so the rerun does not skip it
    write_json_atomic(tmp_path / "result.json", failed)
    result = train_job(tmp_path, *FAST)
    assert result["status"] == "ok" and result["steps"] == 4
    aside = result["checkpoint_set_aside"]
    assert Path(aside["path"]).name.startswith("last.ckpt.damaged-") and Path(aside["path"]).exists()
    assert "central directory" in aside["error"]
    assert checkpoint.exists() and read_result(tmp_path)["checkpoint_set_aside"] == aside
    assert "unreadable checkpoint" in caplog.text and "training from scratch" in caplog.text
    assert event_writers(tmp_path) == {str(os.getpid())}  # the run that cannot be continued: events gone

"""Sweeps on a real SLURM cluster through Hydra's own submitit launcher (``hydra/launcher=slurm``).

The cluster is the single-node one of ``.ci/slurm-cluster`` (munge, slurmctld, slurmd, slurmdbd on MariaDB:
submitit polls ``sacct``). CI (``.ci/run``) starts it, which installs the Debian packages if needed, and
sets LONGRANGE_SLURM=required so that a cluster that cannot start fails these tests instead of skipping
them. Elsewhere the session fixture uses a running cluster, or starts one if this is root on a machine
with the packages installed (and stops it at the end), or skips with the reason.

Every job here is tiny (one core, 2 GB, 16 evaluation samples); the two that must outlive a SLURM event
(a ``scancel``, a time limit) use ``faulty_models.SlowGRU``, which sleeps a fixed time per step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TESTS = Path(__file__).resolve().parent
SCRIPT = TESTS.parent / ".ci" / "slurm-cluster"
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct")
REQUIRED = os.environ.get("LONGRANGE_SLURM") == "required"  # set by .ci/run: fail rather than skip
PARTITION = "cpu"  # the script's default partition
# What a user sets on a real cluster (partition, cores, memory), at the smallest size.
SMALL = [f"hydra.launcher.partition={PARTITION}", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
         "train.eval_samples=16"]  # fmt: skip
SLOW_GRU = ["model=gru", "model._target_=faulty_models.SlowGRU", "train.batch_size=8", "data.max_offset=0"]
# SLURM time limits are whole minutes, checked every 30 s: with a 1-minute limit and a 1-second signal delay,
# USR2 comes 29-59 s into each run of the job. 300 steps of at least 0.2 s cannot finish in one run; each run
# gets 15-50 s of training after start-up, so allow more requeues than the preset's 3 on a busy machine.
TIME_LIMITED = [*SLOW_GRU, "+model.sleep_s=0.2", "trainer.max_steps=300", "trainer.val_check_interval=10",
                "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=1",
                "hydra.launcher.max_num_timeout=6"]  # fmt: skip


def cluster(command: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_env() -> Iterator[dict[str, str]]:
    """The environment that points SLURM's clients (and so submitit) at the test cluster."""

    def unavailable(reason: str) -> None:
        message = f"no SLURM test cluster: {reason}"
        if REQUIRED:
            pytest.fail(f"{message} (LONGRANGE_SLURM=required)")
        pytest.skip(message)

    if not sys.platform.startswith("linux") or shutil.which("bash") is None:
        unavailable("the test cluster needs Linux and bash")
    started = False
    if cluster("status").returncode != 0:
        search = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
        missing = [name for name in DAEMONS if shutil.which(name, path=search) is None]
        if os.geteuid() != 0:
            unavailable("none running (`.ci/slurm-cluster status`) and starting one needs root")
        if missing and not REQUIRED:
            unavailable(
                f"none running and {', '.join(missing)} not installed; `sudo .ci/slurm-cluster start` "
                "installs munge, slurm and MariaDB with apt (Debian), then starts one"
            )
        start = cluster("start", timeout=1200)  # installs what is missing (only if LONGRANGE_SLURM=required)
        if start.returncode != 0:
            unavailable(f"`.ci/slurm-cluster start` failed:\n{start.stderr[-3000:]}")
        started = True
    conf = re.search(r"SLURM_CONF=(\S+)", cluster("env").stdout)
    assert conf, "`.ci/slurm-cluster env` printed no SLURM_CONF"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_"))}
    env |= {"SLURM_CONF": conf.group(1), "PYTHONPATH": str(TESTS)}  # PYTHONPATH: faulty_models, in jobs too
    yield env
    if started:
        cluster("stop")


def launch(sweep_dir: Path, *overrides: str, launcher: str = "slurm") -> list[str]:
    return [sys.executable, "-m", "longrange.experiments.train", "-m", f"hydra/launcher={launcher}",
            f"hydra.sweep.dir={sweep_dir}", *SMALL, *overrides]  # fmt: skip


@pytest.fixture(scope="module")
def time_limited_sweep(slurm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A job that runs past its time limit, launched by the first test that asks for it, so that its minutes
    of SLURM time limits overlap the other tests (each job takes one of the node's cores); the last test,
    test_a_job_past_its_time_limit_is_requeued_and_resumes, waits for it and checks it."""
    sweep_dir = tmp_path_factory.mktemp("time_limit") / "sweep"
    log = (sweep_dir.parent / "launcher.log").open("w")  # a file, not a pipe nobody reads while it runs
    launcher = subprocess.Popen(launch(sweep_dir, *TIME_LIMITED), cwd=sweep_dir.parent, env=slurm_env,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    yield {"launcher": launcher, "sweep_dir": sweep_dir, "started": time.monotonic(), "log": log.name}
    if launcher.poll() is None:  # a test stopped early: leave nothing running
        launcher.kill()
        launcher.wait()
        for job in slurm_jobs(sweep_dir) if (sweep_dir / ".submitit").exists() else []:
            subprocess.run(["scancel", job], env=slurm_env, timeout=60)
    log.close()


def sweep(env: dict[str, str], sweep_dir: Path, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    command = launch(sweep_dir, *overrides, **kwargs)
    return subprocess.run(command, cwd=sweep_dir.parent, env=env, capture_output=True, text=True, timeout=900)


def results(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/result.json"))}


def slurm_jobs(sweep_dir: Path) -> list[str]:
    """SLURM ids of the sweep's jobs, oldest first, from submitit's folders: ``<array>_<task>`` for the tasks
    of an array (a sweep of several jobs), ``<job>`` for a sweep of one."""
    folders = {p.parent.name for p in (sweep_dir / ".submitit").glob("*/*_submitted.pkl")}
    return sorted(folders, key=lambda name: tuple(map(int, name.split("_"))))


def job_log(sweep_dir: Path, task: str) -> str:
    """A job's .out and .err (submitit appends across requeues)."""
    logs = sorted((sweep_dir / ".submitit" / task).glob("*_log.*"))
    return "".join(p.read_bytes().decode(errors="replace") for p in logs)  # bytes: keep the \r of redraws


def sacct(env: dict[str, str], task: str, field: str = "State", every_run: bool = False) -> list[str]:
    """One line per run of the job (``every_run``: requeued runs too), accounting's view."""
    command = ["sacct", "-n", "-X", "-P", "-j", task, "-o", field] + (["-D"] if every_run else [])
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60).stdout.splitlines()


def wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.5)


@pytest.mark.usefixtures("time_limited_sweep")  # started first: its minutes of time limits overlap the rest
def test_sweep_runs_as_one_slurm_array_and_the_report_reads_it(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    sweep_dir, start = tmp_path / "sweep", time.monotonic()
    done = sweep(slurm_env, sweep_dir, "model=lstm,gru", "trainer.max_steps=50")
    print(f"2-job sweep on SLURM: {time.monotonic() - start:.1f} s wall")
    assert done.returncode == 0, done.stderr[-3000:]
    found = results(sweep_dir)
    assert sorted(r["choices"]["model"] for r in found.values()) == ["gru", "lstm"]
    assert all(r["status"] == "ok" and r["steps"] == 50 for r in found.values()), found
    tasks = slurm_jobs(sweep_dir)
    assert len(tasks) == 2 and len({task.split("_")[0] for task in tasks}) == 1, tasks  # one array, 2 tasks
    for task in tasks:
        wait_for(lambda t=task: sacct(slurm_env, t) == ["COMPLETED"], f"{task} COMPLETED in accounting")
    script = next((sweep_dir / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "--cpus-per-task=1" in script and "--mem=2GB" in script and f"--partition={PARTITION}" in script
    # The preset keeps the progress bar out of the .out files: a redraw per val_check_interval steps at most.
    redraws = max(job_log(sweep_dir, task).count("\r") for task in tasks)
    assert redraws < 30, f"{redraws} progress-bar redraws in a 50-step job's log"

    report = [sys.executable, "-m", "longrange.experiments.report", str(sweep_dir)]
    made = subprocess.run(report, env=slurm_env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    assert "2 jobs: 2 ok" in (sweep_dir / "results.md").read_text()


@pytest.mark.usefixtures("time_limited_sweep")
def test_scancel_records_interrupted_and_the_rerun_resumes(slurm_env: dict[str, str], tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    args = [*SLOW_GRU, "+model.sleep_s=0.1", "trainer.max_steps=150", "trainer.val_check_interval=10"]
    launcher = subprocess.Popen(launch(sweep_dir, *args), cwd=tmp_path, env=slurm_env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: any(sweep_dir.glob("*/checkpoints/last.ckpt")), "the job's first checkpoint")
        (task,) = slurm_jobs(sweep_dir)
        cancelled = time.monotonic()
        subprocess.run(["scancel", task], env=slurm_env, check=True, timeout=60)
        output = launcher.communicate(timeout=300)[0]
        print(f"scancel -> launcher exit: {time.monotonic() - cancelled:.1f} s")
    finally:
        launcher.kill()
    assert launcher.returncode != 0 and "CANCELLED" in output, output[-3000:]
    (run_dir,) = [p.parent for p in sweep_dir.glob("*/result.json")]
    interrupted = json.loads((run_dir / "result.json").read_text())
    assert interrupted["status"] == "interrupted" and 10 <= interrupted["steps"] < 150, interrupted
    assert interrupted["error"] == "SIGTERM"
    assert sacct(slurm_env, task)[0].startswith("CANCELLED")  # "CANCELLED by <uid>"

    again = sweep(slurm_env, sweep_dir, *args)  # the same command: a new SLURM job resumes the run
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((run_dir / "result.json").read_text())
    assert resumed["status"] == "ok" and resumed["steps"] == 150
    assert "Restoring states from the checkpoint" in (run_dir / "train.log").read_text()  # the job's own log


def test_gpu_preset_requests_a_gpu_and_a_failed_job_says_why(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    # The test cluster's node has a stand-in GPU: SLURM allocates it; a CPU-only machine has no CUDA for it.
    sweep_dir = tmp_path / "sweep"
    done = sweep(slurm_env, sweep_dir, "trainer=gpu", "trainer.max_steps=5", launcher="slurm_gpu")
    (task,) = slurm_jobs(sweep_dir)
    assert "--gpus-per-node=1" in next((sweep_dir / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "gres/gpu=1" in "".join(sacct(slurm_env, task, field="AllocTRES"))
    (result,) = results(sweep_dir).values()
    if torch.cuda.is_available():
        assert done.returncode == 0 and result["status"] == "ok", done.stderr[-3000:]
        return
    assert done.returncode != 0 and result["status"] == "failed"
    message = "No supported gpu backend found"  # Lightning's own words, not Hydra's wrapper (`full_key: ...`)
    assert message in done.stderr  # the launcher's error names the cause
    report = [sys.executable, "-m", "longrange.experiments.report", str(sweep_dir)]
    subprocess.run(report, env=slurm_env, capture_output=True, timeout=300)
    table = (sweep_dir / "results.md").read_text()
    failed = [line for line in table.splitlines() if line.startswith("- failed")]
    # The report's reason is the exception's own message on one line (Lightning's, unwrapped from Hydra's
    # InstantiationException).
    assert failed and message in failed[0], failed


def test_a_job_past_its_time_limit_is_requeued_and_resumes(
    slurm_env: dict[str, str], time_limited_sweep: dict
) -> None:
    launcher, sweep_dir = time_limited_sweep["launcher"], time_limited_sweep["sweep_dir"]
    returncode = launcher.wait(timeout=900)
    print(f"time-limited job, requeued: {time.monotonic() - time_limited_sweep['started']:.1f} s wall")
    output = Path(time_limited_sweep["log"]).read_text()
    # The requeue that submitit's USR2 handler asks for (`scontrol requeue`) kills the job's processes,
    # `scontrol` itself included if it has not exited yet (a busy machine); train.py records that
    # CalledProcessError as a requeue (interrupted), not as a failure.
    race = "'scontrol', 'requeue'" in output and "died with <Signals.SIGTERM" in output
    assert returncode == 0, ("requeue race, see above: " if race else "") + output[-3000:]
    (result,) = results(sweep_dir).values()
    assert result["status"] == "ok" and result["steps"] == 300, result
    (job,) = slurm_jobs(sweep_dir)
    wait_for(lambda: sacct(slurm_env, job) == ["COMPLETED"], "accounting to record COMPLETED")
    runs = sacct(slurm_env, job, every_run=True)  # one line per run: REQUEUED ..., COMPLETED
    assert len(runs) >= 2 and set(runs[:-1]) == {"REQUEUED"}, runs
    log = job_log(sweep_dir, job)
    signals = set(re.findall(r"submitit WARNING \((.+?)\) - Caught signal SIGUSR2 .* timed-out", log))
    assert len(signals) == len(runs) - 1  # each requeue: submitit's USR2 handler, the job timed out
    # Lightning's INFO lines go to the job's own log in a sweep (the console shows one line per job):
    (run_dir,) = [sweep_dir / name for name in results(sweep_dir)]
    assert "Restoring states from the checkpoint" in (run_dir / "train.log").read_text()  # (a run signalled
    # before its first checkpoint, on a very busy machine, restarts from the previous one or from scratch)

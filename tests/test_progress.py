"""A sweep a person can follow (experiments/progress.py): one line per finished job with done / total and the
time left, failures marked, library noise filtered at its source, everything still in the job's log file."""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from helpers import FAST, run_cli

from longrange.experiments.sweep.console import (
    LEAFSPEC_WARNING,
    PROGRESS_LOGGER,
    ConsoleFormatter,
    SweepConsole,
    silence_library_noise,
)
from longrange.experiments.sweep.progress import Done, duration, labels, time_left

NOISE = ("The `srun` command is available", "isinstance(treespec, LeafSpec)", "litlogger", "GPU available")
LINE = re.compile(r"^\[\s*(\d+)/(\d+)\] (\S+) (.*)$", re.M)


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Two jobs in joblib workers (the presets' launcher): distance 8 trains, distance 16 fails."""
    sweep_dir = tmp_path_factory.mktemp("progress") / "sweep"
    failing = ["model=gru", "model._target_=faulty_models.FailingGRU", "+model.fail_at_distance=16"]
    args = [
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra/launcher=cpu_parallel",
        "data.distance=8,16",
        *failing,
    ]
    done = run_cli(args + FAST, sweep_dir.parent)
    assert done.returncode != 0  # a failed job makes the sweep exit non-zero, as before
    return sweep_dir, done.stdout + done.stderr


@pytest.mark.slow  # a sweep of two jobs in joblib workers (~25 s on 2 free cores)
def test_a_sweep_prints_one_line_per_job_with_its_result_count_and_time_left(failing_sweep) -> None:
    sweep_dir, output = failing_sweep
    lines = LINE.findall(output)
    assert [(count, total) for count, total, *_ in lines] == [("1", "2"), ("2", "2")], output[-3000:]
    by_distance = {rest.split()[0]: rest for *_, rest in lines}
    assert by_distance["data.distance=8"].split()[1:4] == ["ok", "test", "acc"]
    assert "FAILED (RuntimeError: injected failure)" in by_distance["data.distance=16"]
    assert "sweep done in" in lines[-1][3] and "(1 failed)" in lines[-1][3]


@pytest.mark.slow  # a sweep of two jobs in joblib workers (~25 s on 2 free cores)
def test_the_library_noise_is_gone_from_the_console_and_the_log_files_keep_everything(failing_sweep) -> None:
    sweep_dir, output = failing_sweep
    for message in NOISE:
        assert message not in output, message
    assert "parameters" not in output  # a job's own info lines stay in its log file
    logs = sorted(sweep_dir.glob("*/train.log"))
    assert len(logs) == 2
    for log_file in logs:
        text = log_file.read_text()
        assert "GPU available" in text and "parameters" in text  # Lightning's and the project's info lines
        assert "[longrange.progress] [" in text  # the progress line too
        assert not any(message in text for message in NOISE[:3])


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux's `script` for a terminal")
@pytest.mark.slow
def test_single_runs_keep_their_console_and_lightnings_progress_bar(tmp_path: Path) -> None:
    """In a terminal a single run draws Lightning's progress bar; into a pipe or a file (a SLURM .out
    file, a log) the same run draws none."""
    args = ["model=gru", "data.distance=4", *FAST, "trainer.enable_progress_bar=true"]
    command = [
        sys.executable,
        "-m",
        "longrange.experiments.train",
        f"hydra.run.dir={tmp_path / 'tty'}",
        *args,
    ]
    typescript = tmp_path / "terminal.txt"
    in_terminal = subprocess.run(
        [
            "script",
            "-qec",
            f"stty cols 120 rows 40; {shlex.join(command)}",
            str(typescript),
        ],  # a sized terminal
        cwd=tmp_path,
        capture_output=True,
        timeout=600,
    )
    assert in_terminal.returncode == 0, typescript.read_text()[-3000:]
    shown = typescript.read_text(errors="replace")
    assert "parameters" in shown and "GPU available" in shown  # info lines as before
    assert "Epoch 0" in shown  # Lightning's progress bar
    assert not any(message in shown for message in NOISE[:3])
    piped = run_cli([f"hydra.run.dir={tmp_path / 'pipe'}", *args], tmp_path)
    assert piped.returncode == 0, piped.stderr[-3000:]
    assert "parameters" in piped.stdout and "Epoch 0" not in piped.stdout + piped.stderr


def test_only_the_named_warnings_are_filtered() -> None:
    from lightning_fabric.utilities.warnings import PossibleUserWarning

    srun = "The `srun` command is available on your system but is not used. HINT: ..."
    slurm, pytree = "lightning_fabric.plugins.environments.slurm", "pytorch_lightning.utilities._pytree"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        silence_library_noise()
        warnings.warn_explicit(srun, PossibleUserWarning, "slurm.py", 204, module=slurm)
        warnings.warn_explicit(
            LEAFSPEC_WARNING.replace("\\", ""), FutureWarning, "_pytree.py", 21, module=pytree
        )
        warnings.warn_explicit("another warning", PossibleUserWarning, "slurm.py", 210, module=slurm)
        warnings.warn_explicit(srun, PossibleUserWarning, "elsewhere.py", 1, module="somebody.else")
        warnings.warn_explicit(
            "`isinstance(x, LeafSpec)` is fine", FutureWarning, "_pytree.py", 30, module=pytree
        )
    assert [str(w.message)[:20] for w in seen] == ["another warning", srun[:20], "`isinstance(x, LeafS"]


def test_lightnings_tip_is_dropped_and_its_other_info_kept() -> None:
    silence_library_noise()
    logger, seen = logging.getLogger("pytorch_lightning.utilities.rank_zero"), []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    level, _ = logger.level, logger.setLevel(logging.INFO)  # as Lightning sets it
    try:
        logger.info("💡 Tip: For seamless cloud logging, try installing [litlogger](https://...)")
        logger.info("GPU available: False, used: False")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen == ["GPU available: False, used: False"]


def test_the_console_of_a_sweep_job_shows_warnings_and_progress_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import longrange.experiments.sweep.console as console

    def record(name: str, level: int, message: str = "m") -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, message, None, None)

    sweep_console = SweepConsole()
    assert sweep_console.filter(record("pytorch_lightning", logging.INFO))  # outside a sweep job: everything
    monkeypatch.setattr(console, "_QUIET", True)
    assert not sweep_console.filter(record("pytorch_lightning", logging.INFO))
    assert not sweep_console.filter(record("longrange", logging.INFO))
    assert sweep_console.filter(record("py.warnings", logging.WARNING)) and sweep_console.filter(
        record("x", logging.ERROR)
    )
    assert sweep_console.filter(record(PROGRESS_LOGGER, logging.INFO))

    formatter = ConsoleFormatter(fmt="[%(name)s] %(message)s")
    failed = record(PROGRESS_LOGGER, logging.INFO, "[2/2] gru  FAILED (boom)")
    failed.alert = True
    monkeypatch.setattr(console, "colour", lambda: True)
    assert formatter.format(failed) == "\033[1;31m[2/2] gru  FAILED (boom)\033[0m"  # red on a terminal
    monkeypatch.setattr(console, "colour", lambda: False)
    assert formatter.format(failed) == "[2/2] gru  FAILED (boom)"  # the marker alone otherwise
    assert formatter.format(record("longrange", logging.INFO)) == "[longrange] m"


def test_time_left() -> None:
    assert time_left([Done(1.0, None)], [], [1.0], elapsed_s=5) is None  # nothing trained here yet
    # 2 jobs trained (10 s per unit of cost), 2 workers busy all along: 4 pending units on 2 workers
    done = [Done(1.0, 10.0), Done(1.0, 10.0)]
    assert time_left(done, [], [2.0, 2.0], elapsed_s=10) == pytest.approx(20.0)
    # one job running with 5 s to go and one pending: the pending one runs beside it
    assert time_left(done, [(1.0, 5.0)], [0.5], elapsed_s=12.5) == pytest.approx(5.0)
    # the sweep cannot end before its longest remaining job
    assert time_left(done, [], [10.0, 0.1], elapsed_s=10) == pytest.approx(100.0)
    assert time_left(done, [], [], elapsed_s=10) == 0.0


def test_durations_and_labels() -> None:
    assert [duration(s) for s in (4.4, 61, 1000, 3599, 3700)] == [
        "4 s",
        "1 min 1 s",
        "17 min",
        "1 h 0 min",
        "1 h 2 min",
    ]
    grid = [
        (Path(f"{d},m={m}"), {"model": m, "data.distance": d, "seed": 0, "trainer.max_steps": 3})
        for m in ("gru", "lstm")
        for d in (8, [8, 16])
    ]
    found = labels(grid, "gru")
    assert (
        found["8,m=gru"] == "gru data.distance=8" and found["[8, 16],m=lstm"] == "lstm data.distance=[8,16]"
    )


@pytest.mark.slow  # two submitit jobs (~30 s)
def test_submitit_jobs_lines_reach_the_launching_terminal(tmp_path: Path) -> None:
    """Submitit jobs write to their own .out files; the launching process echoes their lines."""
    sweep_dir = tmp_path / "sweep"
    grid = ["model=gru", "data.distance=4,8"]
    args = ["-m", f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=local", *grid, *FAST]
    done = run_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = LINE.findall(done.stdout)
    assert sorted(count for count, *_ in lines) == ["1", "2"], done.stdout[-3000:]
    assert "sweep done in" in lines[-1][3]
    assert not any(message in done.stdout + done.stderr for message in NOISE)

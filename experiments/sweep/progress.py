"""What a sweep prints: a line per finished job, done / total, time left; library noise silenced at source.

:class:`Progress` is a Hydra callback (``hydra.callbacks.progress`` in conf/config.yaml). Its hooks run in
the job's own process (Hydra's ``run_job`` calls them around the task, in a joblib worker and in a submitit
job alike), so in every process that trains:

* ``on_job_start`` installs ``console.silence_library_noise`` (two warnings filters and one logging
  filter, each matching exactly one library message by category, module or logger, and text; every other
  warning stays visible, and is logged to the job's log file too) and, inside a sweep, quiets the console
  (``console.quiet``): warnings and errors from anywhere, and the progress lines, nothing else. The job's
  log file (``<job>/train.log``, conf/hydra/job_logging/longrange.yaml) still gets every record,
  Lightning's included. Single runs keep their console (and Lightning's progress bar) as they were.
* ``on_job_end`` prints the job's line, e.g.::

      [ 7/24] gru data.distance=64   ok  test acc 0.981  41 s  · about 2 min left
      [ 8/24] lstm data.distance=128 FAILED (RuntimeError: ...)  12 s  · about 2 min left

  The count is of the jobs this launch has finished (trained, failed or skipped), out of the grid
  (``grid.expected_jobs``); the label is the model and the grid's varying keys. A failure is marked
  ``FAILED`` / ``DIVERGED`` in capitals, and the line is red when the console is a terminal (not with
  ``NO_COLOR`` set).

Bookkeeping, in ``<sweep>/.progress/`` per launch (``jobs.LAUNCH_ENV``, set when the sweep starts and
inherited by every job): each finished job appends one JSON line to ``<launch>.jsonl`` and its printed line
to ``<launch>.lines.jsonl``, both under one ``flock`` (two jobs finishing at once get distinct counts, in
order). The time left (:func:`time_left`) comes from the mean time of the jobs trained so far, the jobs
still running and the number of jobs that actually ran at once since the launch started (so it holds for
joblib, for submitit on this machine and for a SLURM queue); it is rough when job sizes differ a lot.

Submitit: the hooks run inside each submitit job, whose output goes to its ``.out`` file under
``<sweep>/.submitit/``; the launching process, which only waits for the results, prints the jobs' lines
as they arrive (:class:`Echo`), so the terminal shows the same lines as with joblib.

Plain Python at import (no torch, no Lightning): Hydra imports it in the launching process.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from longrange.experiments.results import read_result
from longrange.experiments.run.resources import parallel_jobs
from longrange.experiments.sweep.console import PROGRESS_LOGGER, quiet, red, silence_library_noise
from longrange.experiments.sweep.grid import expected_jobs
from longrange.experiments.sweep.jobs import LAUNCH_ENV, job_state

PROGRESS_DIR = ".progress"  # in the sweep folder: <launch>.jsonl (finished jobs), <launch>.lines.jsonl
log = logging.getLogger(PROGRESS_LOGGER)


# --- the time left --------------------------------------------------------------------------------
@dataclass
class Done:
    """A job this launch finished: its estimated cost and, if it trained here, its wall time."""

    cost: float
    wall_s: float | None  # None: skipped (done earlier, or running elsewhere)


def time_left(
    done: Iterable[Done], running: Iterable[tuple[float, float]], pending: Iterable[float], elapsed_s: float
) -> float | None:
    """Seconds until the sweep ends, or None before any job has trained in this launch.

    ``running``: (cost, seconds it has run so far) per job running now; ``pending``: the costs of the jobs
    not started. Seconds per unit of cost come from the trained jobs; the jobs that run at once from how
    busy the launch has been (wall time of its trained and running jobs over ``elapsed_s``). The sweep
    cannot end before its longest remaining job does."""
    trained = [d for d in done if d.wall_s is not None and d.cost > 0]
    if not trained:
        return None
    rate = sum(d.wall_s or 0.0 for d in trained) / sum(d.cost for d in trained)
    running = list(running)
    left = [max(0.0, cost * rate - ran) for cost, ran in running] + [cost * rate for cost in pending]
    if not left:
        return 0.0
    busy = sum(d.wall_s or 0.0 for d in trained) + sum(ran for _, ran in running)
    workers = max(busy / max(elapsed_s, 1e-9), 0.1)
    return max(sum(left) / workers, max(left))


def duration(seconds: float) -> str:
    """41 s, 3 min 5 s, 12 min, 1 h 2 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 600:
        return f"{seconds // 60} min {seconds % 60} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


# --- the bookkeeping of a launch ------------------------------------------------------------------
def launch_file(sweep_dir: Path, launch: str, suffix: str) -> Path:
    """``<sweep>/.progress/<launch><suffix>``; the launch id (host:pid:ns) made a plain file name."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in launch)
    return Path(sweep_dir) / PROGRESS_DIR / f"{name}{suffix}"


@contextmanager
def locked(path: Path) -> Iterator[IO[str]]:
    """``path`` opened for appending and reading under an exclusive ``flock`` (released on leaving)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield f


def append_line(f: IO[str], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Append ``entry`` as one JSON line to an open file; returns every entry of the file, ``entry`` last."""
    f.write(json.dumps(entry) + "\n")
    f.flush()
    if "+" not in f.mode:
        return [entry]
    f.seek(0)
    return [json.loads(line) for line in f.read().splitlines() if line.strip()]


class Echo:
    """For launchers whose jobs do not write to this terminal (submitit: each job's output goes to its
    ``.out`` file), a thread of the launching process that prints the jobs' lines as they are appended to
    ``<sweep>/.progress/<launch>.lines.jsonl``. One per process; a daemon, stopped (after a last read) at
    the sweep's end or at exit (a failed job skips Hydra's ``on_multirun_end``)."""

    _thread: threading.Thread | None = None
    _stop = threading.Event()
    _printed = 0

    @classmethod
    def start(cls, path: Path) -> None:
        cls.stop()
        cls._stop, cls._printed = threading.Event(), 0
        cls._thread = threading.Thread(target=cls._follow, args=(path, cls._stop), daemon=True)
        cls._thread.start()
        atexit.unregister(cls.stop)
        atexit.register(cls.stop)

    @classmethod
    def stop(cls) -> None:
        if cls._thread is not None:
            cls._stop.set()
            cls._thread.join(timeout=10)
            cls._thread = None

    @classmethod
    def _follow(cls, path: Path, stop: threading.Event) -> None:
        while True:
            stopping = stop.wait(2.0)
            try:
                text = path.read_text()
            except OSError:
                text = ""
            complete = text[: text.rfind("\n") + 1].splitlines()  # a line being written is left for later
            for raw in complete[cls._printed :]:
                entry = json.loads(raw)
                print(red(entry["line"]) if entry.get("alert") else entry["line"], flush=True)
            cls._printed = max(cls._printed, len(complete))
            if stopping:
                return


# --- the line of one job --------------------------------------------------------------------------
@dataclass
class Outcome:
    text: str  # "ok", "FAILED (reason)", "already done with this config, skipped", ...
    alert: bool
    trained: bool  # trained (or failed) in this launch
    result: dict[str, Any]


def outcome(run_dir: Path, launch: str, failure: BaseException | None) -> Outcome:
    """What happened to a job of this launch, from its result.json, its lock and Hydra's job return."""
    result = read_result(run_dir) or {}
    if result.get("launch") == launch and result.get("status") != "running":
        status = str(result["status"])
        if status == "ok":
            return Outcome("ok", False, True, result)
        return Outcome(f"{status.upper()} ({_one_line(result.get('reason'))})", True, True, result)
    if failure is not None:  # failed before writing a result of its own
        return Outcome(f"FAILED ({type(failure).__name__}: {_one_line(str(failure))})", True, True, {})
    state = job_state(run_dir, launch)
    if state.startswith(("running elsewhere", "done elsewhere")):
        return Outcome(f"skipped: {state}", False, False, result)
    if result.get("status") == "ok":
        return Outcome("already done with this config, skipped", False, False, result)
    return Outcome(state, state != "ok", False, result)


def _one_line(text: Any, width: int = 160) -> str:
    lines = str(text or "").strip().splitlines()
    line = lines[-1] if lines else "no reason recorded"
    return line if len(line) <= width else line[: width - 1] + "…"


def labels(grid: list[tuple[Path, dict[str, Any]]], model: str) -> dict[str, str]:
    """Job folder name -> ``model key=value ...`` with the keys whose value varies across the grid
    (``model``: the model of the jobs whose grid point does not name one)."""
    keys = sorted({k for _, point in grid for k in point if k != "model"})
    varying = [k for k in keys if len({repr(point.get(k)) for _, point in grid}) > 1]
    found = {}
    for run_dir, point in grid:
        values = [f"{k}={_compact(point[k])}" for k in varying if k in point]
        found[run_dir.name] = " ".join([str(point.get("model", model)), *values])
    return found


def _compact(value: Any) -> str:
    """A grid value as written on the command line: ``[8,16]``, not ``[8, 16]``."""
    return "[" + ",".join(map(_compact, value)) + "]" if isinstance(value, list | tuple) else str(value)


def job_line(
    count: int, total: int, label: str, width: int, result: Outcome, wall_s: float | None, suffix: str
) -> str:
    """``[ 7/24] gru data.distance=64   ok  test acc 0.981  41 s  · about 2 min left``"""
    parts = [f"[{count:>{len(str(total))}}/{total}] {label.strip():<{width}}", result.text]
    if result.result.get("status") == "ok" and result.result.get("test_acc") is not None:
        parts.append(f"test acc {result.result['test_acc']:.3f}")
    if result.trained and wall_s is not None:
        parts.append(duration(wall_s))
    return "  ".join(parts) + (f"  · {suffix}" if suffix else "")


class Progress(Callback):
    """Hydra callback: quiet, truthful sweep output (see the module docstring)."""

    def __init__(self) -> None:
        self._started: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # jobs.SweepSummary (registered before this callback) names the launch; only if it is absent:
        launch = os.environ.setdefault(LAUNCH_ENV, f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}")
        if "submitit" in str(config.hydra.launcher.get("_target_", "")).lower():  # jobs print elsewhere
            Echo.start(launch_file(Path(config.hydra.sweep.dir), launch, ".lines.jsonl"))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        Echo.stop()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()
        silence_library_noise()
        logging.captureWarnings(True)  # warnings through logging: on the console and in the job's log file
        quiet(_is_sweep(config))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        try:
            if _is_sweep(config) and os.environ.get(LAUNCH_ENV):
                self._report(config, job_return)
        finally:
            quiet(False)

    def _report(self, config: DictConfig, job_return: Any) -> None:

        launch, sweep_dir = os.environ[LAUNCH_ENV], Path(config.hydra.sweep.dir)
        run_dir = Path(config.hydra.runtime.output_dir)
        failure = _failure(job_return)
        result = outcome(run_dir, launch, failure)
        wall_s = time.time() - self._started if self._started is not None else None
        entry = {"job": run_dir.name, "status": result.text, "alert": result.alert}
        entry |= {"cost": 1.0, "wall_s": wall_s if result.trained else None}
        grid = expected_jobs(sweep_dir)
        names = labels(grid, str(config.hydra.runtime.choices.get("model", "")))
        label = names.get(run_dir.name) or _own_label(config)
        width = max((len(n) for n in names.values()), default=len(label))
        with locked(launch_file(sweep_dir, launch, ".jsonl")) as done:  # counts and lines in one order
            entries = append_line(done, entry)
            total, finished = max(len(grid), len(entries)), {e["job"] for e in entries}
            workers = parallel_jobs(config.hydra.get("launcher"), total)[0]
            suffix = self._suffix(launch, grid, entries, finished, total, workers)
            line = job_line(len(entries), total, label, width, result, wall_s, suffix)
            with open(launch_file(sweep_dir, launch, ".lines.jsonl"), "a") as lines:
                append_line(lines, {"line": line, "alert": result.alert})
        log.info(line, extra={"alert": result.alert})

    @staticmethod
    def _suffix(
        launch: str,
        grid: list[tuple[Path, dict[str, Any]]],
        entries: list[dict[str, Any]],
        finished: set[str],
        total: int,
        workers: int = 1,
    ) -> str:
        started = int(launch.rsplit(":", 1)[-1]) / 1e9 if launch.rsplit(":", 1)[-1].isdigit() else None
        elapsed = time.time() - started if started else None
        failed = sum(1 for e in entries if e.get("alert"))
        if len(entries) >= total:
            spent = f"sweep done in {duration(elapsed)}" if elapsed is not None else "sweep done"
            times = [e["wall_s"] for e in entries if e.get("wall_s")]
            if times:  # what no order can beat: the job times shared by the workers, or the longest job
                floor = max(sum(times) / workers, max(times))
                over = f"{workers} worker" + ("s" if workers > 1 else "")
                spent += f" (floor {duration(floor)}: {len(times)} job times over {over})"
            return spent + (f" ({failed} failed)" if failed else "")
        if elapsed is None:
            return ""
        running, pending = [], []
        for run_dir, _ in grid:
            if run_dir.name in finished:
                continue
            cost = 1.0  # every job counts the same: sizes are not estimated
            result = read_result(run_dir) or {}
            if result.get("status") == "running" and result.get("launch") == launch:
                ran = time.time() - (run_dir / "result.json").stat().st_mtime
                running.append((cost, max(ran, 0.0)))
            else:
                pending.append(cost)
        done = [Done(e.get("cost", 1.0), e.get("wall_s")) for e in entries]
        left = time_left(done, running, pending, elapsed)
        if left is None:
            return ""
        estimate = f"about {duration(left)} left" if left >= 10 else "almost done"
        return estimate + (f" ({failed} failed so far)" if failed else "")


def _failure(job_return: Any) -> BaseException | None:
    """The exception a job raised (Hydra's JobReturn re-raises it on reading ``return_value``), or None."""
    from hydra.core.utils import JobStatus

    if job_return is None or job_return.status != JobStatus.FAILED:
        return None
    try:
        _ = job_return.return_value
    except Exception as error:
        return error
    return None


def _is_sweep(config: DictConfig) -> bool:
    from hydra.types import RunMode

    return config.hydra.get("mode") == RunMode.MULTIRUN


def _own_label(config: DictConfig) -> str:
    """A job outside the grid's folder names: its model and its own overrides."""
    model = config.hydra.runtime.choices.get("model", "")
    return " ".join([str(model), *(o for o in config.hydra.overrides.task if not o.startswith("model="))])

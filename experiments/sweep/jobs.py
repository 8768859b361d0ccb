"""One writer per job: a lock in each job folder, and what the report and the sweep learn from it.

A job takes its folder's lock (:class:`JobLock`, ``fcntl.flock`` on ``<job>/job.lock``) before it reads
its previous result, and keeps it until its result is written. The kernel releases an ``flock`` when its
process ends, however it ends (exit, exception, SIGKILL, the OOM killer), so there are no stale locks on
one machine and nothing to clean up. Hence:

* a second process that finds the lock held (another sweep in the same folder, a relaunched array job,
  a joblib worker of another launch) skips the job: it logs ``skipped: running elsewhere (pid P on host
  H)``, writes nothing into the job folder and does not count it as failed (:data:`SKIPPED`);
* a result that says ``running`` while nobody holds the lock belongs to a process that died without a
  word: :func:`is_stale` says so (the report shows it as ``interrupted (stale)``) and a rerun takes the
  lock and resumes the job from its last checkpoint.

The lock file also holds the holder's host, pid and start time (for people and for the skip message);
the lock itself is the ``flock``, never the file's content. Shared filesystems: ``flock`` is as good as
the filesystem's support for it. Linux NFS clients (>= 2.6.12) emulate it with whole-file POSIX locks,
which the server arbitrates across nodes; Lustre honours it across nodes only when mounted with
``-o flock`` (``localflock``: per node; neither: ``flock`` fails); BeeGFS and some others lock per node
unless configured otherwise. Where ``flock`` fails outright the job runs unlocked after a warning (as
before locks existed); where it is node-local, two nodes can run one job twice and a report read on
another node than the job's sees a running job as stale.

Plain Python (no torch, no Lightning): the report imports :func:`is_stale`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from longrange.experiments.results import RESULT_FILE, read_result
from longrange.experiments.sweep.grid import expected_jobs

log = logging.getLogger("longrange")
LOCK_FILE = "job.lock"
SKIPPED = "skipped"  # train()'s status for a job another live process holds; never written to result.json
STOP_WAIT_S = 10  # a launcher's SIGTERM: how long its jobs get to record ``interrupted`` before their end
LAUNCH_ENV = "LONGRANGE_LAUNCH"  # set by SweepSummary for the jobs of one launch (inherited by workers)
_HELD = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)  # what flock says when another process holds it


class JobLock:
    """The exclusive lock of one job folder. ``acquire()`` never waits: True when this process now holds
    it, False when another process does (its :meth:`holder` tells which). Release with :meth:`release`
    (or by leaving a ``with`` block, or by the process ending)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in _HELD:
                os.close(fd)
                return False
            log.warning("%s: file locks unsupported here (%s): the job runs unlocked", self.path, error)
        self._fd = fd
        about = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(about | {"launch": os.environ.get(LAUNCH_ENV)}) + "\n").encode(), 0)
        return True

    def release(self) -> None:
        """Release the lock (the file stays: removing it would race with a process opening it)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def holder(self) -> dict[str, Any]:
        """Host, pid and start time written by the process that took the lock last ({} if unknown)."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def __enter__(self) -> JobLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(run_dir: Path) -> bool:
    """Whether a live process holds the job's lock now (one that this process holds counts too)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # never locked (or a result from before locks existed)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as error:
        return error.errno in _HELD
    finally:
        os.close(fd)  # also releases the shared lock just taken


def is_stale(run_dir: Path) -> bool:
    """For a job whose result says ``running``: True when no live process holds its lock (the process
    died without writing its end: SIGKILL, the OOM killer, a node failure). The report passes this to
    ``analysis.load_jobs`` and shows such jobs as ``interrupted (stale)``."""
    return not is_locked(run_dir)


def describe_holder(holder: dict[str, Any]) -> str:
    """``pid 123 on host h since 2026-11-29 14:20:00`` (what is known of it)."""
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}"


class SweepSummary(Callback):
    """Hydra callback: tags the jobs of this launch (environment variable :data:`LAUNCH_ENV`, inherited by
    joblib workers and submitit jobs, recorded in each result's ``launch``) and, when the sweep ends,
    logs one line per job that this launch did not run itself (``skipped: running elsewhere``, or done
    by another launch meanwhile) and a count of the grid's statuses. Skipped jobs are no failure: they do
    not make the sweep exit non-zero."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[LAUNCH_ENV] = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        pass_sigterm_to_workers(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:

        sweep_dir, launch = Path(config.hydra.sweep.dir), os.environ.get(LAUNCH_ENV)
        counts: dict[str, int] = {}
        for run_dir, _ in expected_jobs(sweep_dir):
            state = job_state(run_dir, launch)
            short = state.split(" (")[0]  # without the holder or the status in parentheses
            counts[short] = counts.get(short, 0) + 1
            if short in ("running elsewhere", "done elsewhere"):
                log.info("%s: skipped by this launch: %s", run_dir.name, state)
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        log.info("sweep summary (%s): %s", sweep_dir, summary or "no jobs")


def pass_sigterm_to_workers(sweep_dir: Path) -> None:
    """In a sweep's launcher: a SIGTERM is passed on to the processes it started (joblib's workers), whose
    jobs then record ``interrupted`` and stop within seconds; the launcher waits for that (at most
    :data:`STOP_WAIT_S`, while any job of the sweep holds its lock), ends the workers left (idle ones wait
    for work that will never come), and ends itself as it would have. Without it a SIGTERM to the launcher
    alone (``kill PID``; Ctrl-C reaches the whole process group) left the workers running their jobs to
    the end. Linux (``/proc``); elsewhere a SIGTERM still ends the launcher only."""
    previous = signal.getsignal(signal.SIGTERM)

    def forward(signum: int, frame: Any) -> None:
        for pid in child_processes(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline, folders = time.monotonic() + STOP_WAIT_S, [d for d, _ in expected_jobs(sweep_dir)]
        while time.monotonic() < deadline and any(is_locked(d) for d in folders):
            time.sleep(0.2)
        for pid in child_processes(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signal.SIGTERM)  # the default action: end as before

    if Path("/proc").is_dir():
        signal.signal(signal.SIGTERM, forward)


def child_processes(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from ``/proc/<pid>/stat``; empty where there is no /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:  # field 4, after "(comm)"
                found.append(int(stat.parent.name))
    return found


def job_state(run_dir: Path, launch: str | None = None) -> str:
    """One job's state as a launch (:data:`LAUNCH_ENV`) sees it: ``running elsewhere (pid ...)`` while a
    process of another launch holds the job, ``done elsewhere (<status>)`` when another launch wrote its
    result after this one started, ``interrupted (stale)`` for a result saying ``running`` that nobody
    holds, ``missing`` without a result, else the result's status (``ok``, ``failed``, ..., ``running``)."""
    locked = is_locked(run_dir)
    if locked:
        holder = JobLock(run_dir).holder()
        if launch is None or holder.get("launch") != launch:
            return f"running elsewhere ({describe_holder(holder)})"
    result = read_result(run_dir)
    if result is None:
        return "missing"
    status = str(result.get("status"))
    if status == "running":
        return "running" if locked else "interrupted (stale)"
    started = int(launch.rsplit(":", 1)[-1]) / 1e9 if launch else None
    written = (Path(run_dir) / RESULT_FILE).stat().st_mtime
    if started is not None and result.get("launch") != launch and written >= started:
        return f"done elsewhere ({status})"
    return status

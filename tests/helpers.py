"""Helpers shared by the tests: run the command line, compose and train tiny jobs, read what jobs wrote."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TESTS = Path(__file__).resolve().parent
CONF = TESTS.parent / "conf"
# A job of a few steps on small batches (seconds): for tests of behaviour, never of research outcomes.
FAST = ["trainer=debug", "train.eval_samples=16", "train.batch_size=8", "data.max_offset=0", "data.load=0"]


def compose_config(overrides: list[str], out_dir: Path | None = None) -> DictConfig:
    """The root config with overrides; artefacts go to ``out_dir`` (normally Hydra's output folder)."""
    extra = [] if out_dir is None else [f"trainer.default_root_dir={out_dir}", f"logger.save_dir={out_dir}"]
    with initialize_config_module("longrange.conf", version_base="1.3"):
        return compose("config", overrides=overrides + extra)


def train_job(out_dir: Path, *overrides: str) -> dict[str, Any]:
    """Compose a config and train it in this process (``train()``), writing into ``out_dir``."""
    from longrange.experiments.train import train

    return train(compose_config(list(overrides), out_dir), out_dir)


def run_cli(args: list[str], cwd: Path, timeout: int = 600, **popen: Any) -> subprocess.CompletedProcess:
    """``python -m longrange.experiments.train ARGS`` in a fresh process; tests/ is importable (faulty
    models). Output is captured as text."""
    env = os.environ | {"PYTHONPATH": str(TESTS)}
    command = [sys.executable, "-m", "longrange.experiments.train", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **popen)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def sweep_results(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """Job folder name -> its result.json, for every job of a sweep folder."""
    return {p.parent.name: read_json(p) for p in sorted(Path(sweep_dir).glob("*/result.json"))}


def tensorboard_events(run_dir: Path, subdir: str = "tensorboard") -> EventAccumulator:
    """Everything a run wrote for TensorBoard, read back with TensorBoard's own reader."""
    guidance = {"images": 0, "scalars": 0, "tensors": 0}
    accumulator = EventAccumulator(str(Path(run_dir) / subdir), size_guidance=guidance)
    return accumulator.Reload()


def start_cli(args: list[str], cwd: Path, **popen: Any) -> subprocess.Popen:
    """``run_cli`` without waiting: the running process (stdout and stderr together, as text), for tests
    that signal it or run two at once."""
    env = os.environ | {"PYTHONPATH": str(TESTS)}
    command = [sys.executable, "-m", "longrange.experiments.train", *args]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def wait_for(path: Path, timeout: float = 120) -> None:
    """Wait until ``path`` exists (a job's checkpoint, a lock file); fails after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while not Path(path).exists():
        assert time.time() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.1)


def event_writers(run_dir: Path) -> set[str]:
    """The processes (pids) that wrote TensorBoard events into a job's folder: one set of event files per
    writer (``events.out.tfevents.<time>.<host>.<pid>.<n>``; one run writes a few: fit, test, hparams)."""
    files = (Path(run_dir) / "tensorboard").glob("events.out.tfevents.*")
    return {path.name.split(".")[-2] for path in files}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> Any:
    return json.load(urllib.request.urlopen(url, timeout=5))


@contextmanager
def serving_tensorboard(logdir: Path, ready: Callable[[str], bool], timeout: float = 120) -> Iterator[str]:
    """TensorBoard's own server on ``logdir`` (loopback, a free port); yields its address once
    ``ready(address)`` is true (polled every second; connection errors count as not ready), or after
    ``timeout`` seconds; the server is stopped on leaving."""
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
               "--port", str(port), "--reload_interval", "1"]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if ready(address):
                    break
            except OSError:
                pass
            time.sleep(1)
        yield address
    finally:
        server.terminate()
        server.wait(timeout=30)

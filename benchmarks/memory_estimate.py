"""The memory estimate of ``experiments/resources.py`` against the peak resident memory of real jobs.

    python -m benchmarks.memory_estimate                                   # every model, D = 250 and 1000
    python -m benchmarks.memory_estimate --models lstm,gru --distances 100,2000 --steps 2
    python -m benchmarks.memory_estimate --sweep outputs/sweeps/zoo_sweep   # jobs already run: no training

Each job runs in a fresh process through the command line (``longrange-train``), at the default batch of
64, for ``--steps`` steps with one validation, the test and the diagnostics, and records its peak resident
memory (VmHWM, ``memory_peak_mb`` in result.json). The estimate is computed in this process from the same
config, before the job runs. Prints a Markdown table: estimate (and the phase at its peak), measured
peak, and their ratio. The limit check is lifted for these jobs (``resources.max_memory_gb``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, load_average


def estimate(overrides: list[str]) -> tuple[float, str]:
    from hydra import compose, initialize_config_module

    from longrange.experiments.run.config import validate
    from longrange.experiments.run.resources import GB
    from longrange.experiments.run.resources import estimate as estimate_memory

    with initialize_config_module("longrange.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    task, _ = validate(cfg)
    found = estimate_memory(cfg, task)
    return found.total / GB, found.peak.name


def measure(overrides: list[str], run_dir: Path) -> dict:
    command = [sys.executable, "-m", "longrange.experiments.train", f"hydra.run.dir={run_dir}", *overrides]
    done = subprocess.run(command, cwd=run_dir.parent, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(overrides)} failed:\n{done.stderr[-2000:]}")
    return json.loads((run_dir / "result.json").read_text())


def compare_sweep(sweep_dir: Path) -> None:
    """The estimate against the measured peak (``memory_peak_mb``) of every ok job of a finished sweep, from
    each job's own overrides (``.hydra/overrides.yaml``): one row per model and longest sequence length."""
    import yaml

    rows: dict[tuple[str, int], list[float]] = {}
    for path in sorted(sweep_dir.glob("*/result.json")):
        result = json.loads(path.read_text())
        if result.get("status") != "ok" or not result.get("memory_peak_mb"):
            continue
        overrides = yaml.safe_load((path.parent / ".hydra" / "overrides.yaml").read_text())
        expected, _ = estimate([*overrides, "resources.max_memory_gb=1000"])
        length = max(int(k) for k in result["state_size"]) if result.get("state_size") else 0
        key = (result["choices"]["model"], length)
        rows.setdefault(key, []).append(result["memory_peak_mb"] / 1024 / expected)
        measured = result["memory_peak_mb"] / 1024
        print(key, f"estimate {expected:.2f} GB, measured {measured:.2f} GB", flush=True)
    print("| model | longest distance | jobs | measured / estimate (min-max) |")
    print("|---|---:|---:|---|")
    for (model, distance), found in sorted(rows.items()):
        print(f"| {model} | {distance} | {len(found)} | {min(found):.2f}-{max(found):.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    models = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
    parser.add_argument("--models", default=",".join(models), help="comma-separated conf/model names")
    parser.add_argument("--distances", default="250,1000", help="comma-separated data.distance values")
    parser.add_argument("--steps", type=int, default=2, help="training steps per job (one validation)")
    parser.add_argument("--eval-samples", type=int, default=64, help="train.eval_samples")
    parser.add_argument("--sweep", type=Path, help="compare with a finished sweep's jobs")
    args = parser.parse_args(argv)
    if args.sweep:
        return compare_sweep(args.sweep)
    rows = [
        "| model | D | L | estimate | phase at its peak | measured peak RSS | measured / estimate | time |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models.split(","):
            for distance in (int(d) for d in args.distances.split(",")):
                overrides = [
                    f"model={model}", f"data.distance={distance}", f"trainer.max_steps={args.steps}",
                    f"trainer.val_check_interval={args.steps}", "trainer.enable_progress_bar=false",
                    f"train.eval_samples={args.eval_samples}", "resources.max_memory_gb=1000",
                ]  # fmt: skip
                expected, phase = estimate(overrides)
                start = time.perf_counter()
                result = measure(overrides, Path(folder) / f"{model}-{distance}")
                seconds, peak = time.perf_counter() - start, result["memory_peak_mb"] / 1024
                length = distance + 14  # coref: D + 6 + max_offset (8)
                rows.append(
                    f"| {model} | {distance} | {length} | {expected:.2f} GB | {phase} | {peak:.2f} GB | "
                    f"{peak / expected:.2f} | {seconds:.0f} s |"
                )
                print(rows[-1], flush=True)
    print("\n".join(rows))
    print(f"\nload average (1/5/15 min): {load_average()}; OMP threads 1; pid {os.getpid()}")


if __name__ == "__main__":
    main()

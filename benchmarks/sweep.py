"""Items 5 and 6: a sweep's wall time with the joblib preset against the sequential launcher, and the time
from the command to the first training step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, Section, alternate, median, ratios, spread

TRAIN = [sys.executable, "-m", "longrange.experiments.train"]
GRID = ["model=lstm,gru,attention", "data.distance=8,32"]
SMALL = [
    "trainer.max_steps=200",
    "trainer.val_check_interval=100",
    "train.eval_samples=64",
    "trainer.enable_progress_bar=false",
]
JOBLIB = ["hydra/launcher=cpu_parallel", "threads=1"]
BASIC = ["hydra/launcher=basic", "threads=2"]


def _env(omp_wait_policy: str | None = None) -> dict[str, str]:
    """The environment of a user's shell: no OMP_WAIT_POLICY unless asked for (benchmarks/run.py sets one)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(PYTHONWARNINGS="ignore", HYDRA_FULL_ERROR="1")
    if omp_wait_policy:
        env["OMP_WAIT_POLICY"] = omp_wait_policy
    return env


def run_sweep(launcher: list[str], out: Path, omp_wait_policy: str | None = None) -> float:
    command = [*TRAIN, "-m", *GRID, *SMALL, *launcher, f"hydra.sweep.dir={out}"]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=_env(omp_wait_policy), check=True, capture_output=True)
    seconds = time.perf_counter() - start
    results = [json.loads(p.read_text()) for p in out.rglob("result.json")]
    if len(results) != 6 or any(r["status"] != "ok" for r in results):
        raise RuntimeError(f"sweep in {out} did not finish all 6 jobs")
    return seconds


def sweep(quick: bool) -> Section:
    section = Section(
        "sweep", "5. Sweep wall time: joblib preset (2 jobs x 1 thread) vs sequential (2 threads)"
    )
    repeats = 1 if quick else 2
    with tempfile.TemporaryDirectory() as tmp:
        folders = (Path(tmp) / f"sweep{i}" for i in range(100))
        found = alternate(
            {
                "joblib": lambda: run_sweep(JOBLIB, next(folders)),
                "basic, PASSIVE": lambda: run_sweep(BASIC, next(folders), "PASSIVE"),
            },
            repeats,
        )
        spinning = run_sweep(BASIC, next(folders))  # once: up to 10-100x slower on a busy machine
    joblib, passive = found["joblib"], found["basic, PASSIVE"]
    section.text(
        "The same 6-job grid (`" + " ".join(GRID) + "`, " + ", ".join(SMALL[:3]) + ") from the command line, "
        "start-up, validation, test and the end-of-run diagnostics included, each sweep in a fresh folder. "
        f"joblib and the basic launcher with `OMP_WAIT_POLICY=PASSIVE` alternated ({repeats} each); the "
        "basic launcher with the default (spinning) OpenMP policy once, after them. Target: joblib at "
        "least 1.7x faster than the sequential launcher."
    )
    section.table(
        ["launcher", "wall time", "joblib speed-up"],
        [
            [
                "joblib: `hydra/launcher=cpu_parallel threads=1` (2 jobs x 1 thread)",
                f"{median(joblib):.1f} s",
                "",
            ],
            [
                "basic: `hydra/launcher=basic threads=2`, OMP_WAIT_POLICY=PASSIVE",
                f"{median(passive):.1f} s",
                spread(ratios(passive, joblib)) + "x",
            ],
            [
                "basic: `hydra/launcher=basic threads=2`, OpenMP default (spin)",
                f"{spinning:.1f} s",
                f"{spinning / median(joblib):.1f}x",
            ],
        ],
    )
    section.text(
        "With 2 cores, joblib's advantage is capped by (a) the cores being shared with everything else on "
        "the machine (see the load average), (b) each joblib worker importing torch and Lightning once "
        "(~2-3 s, in parallel), (c) jobs of unequal length (GRU is slower than LSTM) leaving a core idle at "
        "the end, and (d) a second thread speeding up a job where a core is free (see `threads`). "
        "With the default (spinning) OpenMP policy the sequential launcher's 2 threads collapse whenever "
        "another process takes a core; with PASSIVE they do not, but gain little for these small models."
    )
    return section


STARTUP_CHILD = r"""
import sys, time
marks = {"interpreter": time.time()}
import longrange.experiments.train as train
marks["imports"] = time.time()
sys.argv = ["train", *sys.argv[1:]]
try:
    train.main()
except SystemExit:
    pass
marks["exit"] = time.time()
print("MARKS", __import__("json").dumps(marks))
"""
CLOCK = "benchmarks.fit_clock.FitClock"  # Lightning's phases, added from the command line (+callbacks.clock)

IMPORT_CHILD = "import time, sys; s = time.time(); import {module}; print(time.time() - s)"


def startup(quick: bool) -> Section:
    section = Section("startup", "6. Start-up: from the command to the first training step")
    repeats = 2 if quick else 3
    rows = []
    for module in ("torch", "hydra", "pytorch_lightning", "longrange.experiments.train"):
        times = [
            float(
                subprocess.run(
                    [sys.executable, "-c", IMPORT_CHILD.format(module=module)],
                    cwd=REPO,
                    env=_env(),
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )  # fmt: skip
            for _ in range(repeats)
        ]
        rows.append([f"`import {module}`", f"{median(times):.2f} s"])
    marks_found, messages = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            clock = Path(tmp) / f"clock{repeat}.json"
            command = [
                sys.executable, "-c", STARTUP_CHILD, "trainer.max_steps=2", "trainer.val_check_interval=2",
                "train.eval_samples=64", f"hydra.run.dir={tmp}/run{repeat}",
                f"+callbacks.clock._target_={CLOCK}", f"+callbacks.clock.path={clock}",
            ]  # fmt: skip
            spawn = time.time()
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
            marks = json.loads(done.stdout.split("MARKS", 1)[1])
            marks |= {k: v[0] for k, v in json.loads(clock.read_text())["marks"].items()}  # [wall, CPU]
            marks_found.append({k: v - spawn for k, v in marks.items()})
            messages.append(done.stdout + done.stderr)
    order = ["interpreter", "imports", "fit start", "first step"]
    labels = {
        "interpreter": "Python interpreter up",
        "imports": "project, torch, Lightning, Hydra imported",
        "fit start": "config composed and validated, task, model, Trainer built (Trainer.fit's set-up)",
        "first step": "first training step starts (data set-up, first batch)",
    }
    previous = 0.0
    timeline = []
    for key in order:
        at = median([m[key] for m in marks_found])
        timeline.append([labels[key], f"{at:.2f} s", f"+{at - previous:.2f} s"])
        previous = at
    section.text(
        "Fresh processes, medians of the repeats. Imports alone (each in its own interpreter, so they "
        "overlap: `pytorch_lightning` includes torch, and torch._dynamo through lightning_fabric):"
    )
    section.table(["import", "time"], rows)
    section.text(
        "A run of the default config (`python -m longrange.experiments.train trainer.max_steps=2 ...`), "
        "timestamps since the command was issued:"
    )
    section.table(["reached", "at", "step"], timeline)
    noise = {
        "Lightning's litlogger tip": "litlogger",
        "torch _pytree FutureWarning (LeafSpec)": "LeafSpec",
        "'GPU available: False' banner": "GPU available",
    }
    imported = median([m["imports"] for m in marks_found])
    first = median([m["first step"] for m in marks_found])
    section.text(
        f"Where the time goes: importing takes {imported:.1f} s of the {first:.1f} s to the first step "
        "(`pytorch_lightning` pulls in torch._dynamo via lightning_fabric, ~1 s, and torchmetrics); Hydra's "
        "composition, the config check (with the memory footprint), the task, the model and the Trainer "
        f"take the other {first - imported:.1f} s. Section 3 compares the whole fixed cost with a plain "
        "loop's. The basic launcher imports once for a whole sweep; joblib once per worker."
    )
    printed = [name for name, needle in noise.items() if any(needle in m for m in messages)]
    section.text(
        "Console noise of that run: "
        + "; ".join(f"{name}: {'printed' if name in printed else 'silenced'}" for name in noise)
        + "."
        + (
            " What is still printed goes away with the logger `pytorch_lightning.utilities.rank_zero` at "
            "level WARNING in conf/hydra/job_logging/longrange.yaml (proposed, not measured here)."
            if printed
            else ""
        )
    )
    return section


LAUNCH_CHILD = r"""
import json, sys, time
from hydra import compose, initialize_config_module
from omegaconf import open_dict
from longrange.experiments.sweep.grid import grid_points, stages
from longrange.experiments.sweep.order import estimates
from longrange.experiments.sweep.validate import ValidateConfig
task = sys.argv[1:]
with initialize_config_module("longrange.conf", version_base="1.3"):
    config = compose("config", overrides=task[:1], return_hydra_config=True)
    with open_dict(config):
        config.hydra.overrides.task, config.hydra.job.config_name = task, "config"
    start = time.perf_counter()
    ValidateConfig().on_multirun_start(config)
    checked = time.perf_counter()
    sweeper = config.hydra.sweeper
    points = grid_points(sweeper.params, task, sweeper.get("per_model"))
    first = stages(points, sweeper.get("select_on_first_seed"))[0]
    costs = estimates("config", first)
    names = (" ".join(o for o in p if not o.startswith("experiment=")) for p in first)
    ordered = sorted(zip(costs, names), key=lambda c: -c[0])
    print(json.dumps({"points": len(points), "first": len(first), "check": checked - start,
                      "order": time.perf_counter() - checked, "top": ordered[:3]}))
"""
LAUNCHES = {  # the demo's grid (the Makefile's GRID) and the largest preset
    "demo (`make demo`)": ["experiment=distance_sweep", "data.distance=[8,16,32,64,128],128"],
    "`experiment=state_tracking`": ["experiment=state_tracking"],
}


def launch(quick: bool) -> Section:
    """What a sweep's launcher does before its first job: the check of every point (each composed once,
    validated, its memory estimated) and the start order (each job's cost estimated)."""
    section = Section("launch", "6b. A sweep's launch: the check and the start order, before the first job")
    rows = []
    for name, task in LAUNCHES.items():
        done = subprocess.run([sys.executable, "-c", LAUNCH_CHILD, *task], cwd=REPO, env=_env(),
                              capture_output=True, text=True, check=True)  # fmt: skip
        found = json.loads(done.stdout.strip().splitlines()[-1])
        top = "; ".join(f"{text.removeprefix('seed=0 ')} ({cost:.0f} s)" for cost, text in found["top"])
        rows.append([name, found["points"], f"{found['check']:.1f} s", found["first"],
                     f"{found['order']:.1f} s", top])  # fmt: skip
    section.text(
        "In one process, as the launcher does it (imports aside): *check*, every point of the grid "
        "composed with Hydra, validated and its peak memory estimated (`sweep/validate.py`); *order*, the "
        "cost of each job of the first stage estimated from its model's step timed at the job's batch "
        "size (`sweep/order.py`; a sweep with `select_on_first_seed` estimates its second stage when it "
        "starts). Each point is composed once: the order reads the check's configs."
    )
    section.table(
        ["grid", "points", "check", "first-stage jobs", "order", "first three jobs (estimate)"], rows
    )
    return section

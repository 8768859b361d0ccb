"""Item 3: the entry point users run (`longrange-train`, a whole process) against a plain PyTorch loop doing
the same work (benchmarks/plain_loop.py), alternated in one run; and where the difference goes.

    python -m benchmarks.run entry_point            # or --quick: one repeat of a 200-step job, no profile

Each side is a fresh process started from here, ``nice``-free, with the user's environment:

* *longrange-train*: ``python -m longrange.experiments.train experiment=distance_sweep model=M
  data.distance=D hydra.run.dir=<tmp>``, a job of `make demo` (500 steps, batch 64, 5 validations of
  5 x 256 samples at D-2..D+2, a checkpoint at each, the test set, the diagnostics), plus
  ``benchmarks.fit_clock.FitClock`` passed on the command line (``+callbacks.clock...``): timestamps of
  Lightning's phases, nothing else changed;
* *plain loop*: ``python -m benchmarks.plain_loop SPEC OUT`` with SPEC the same job's config composed by
  Hydra's compose API. It trains the same weights on the same batches (checked: equal accuracies).

Figures: the whole process (wall, and CPU = user + system of the child), the fit (the time inside
``Trainer.fit``, from Lightning's ``setup`` to its ``teardown`` hook, against the plain loop's training and
validation: same tokens on both sides, so the ratio is the per-token ratio), and the fixed cost from the
command to the first training step. The imports floor is timed in fresh interpreters. One extra run of
the entry point under cProfile splits the fixed cost and the end of training into their causes.
"""

from __future__ import annotations

import cProfile  # noqa: F401  # the profile run uses `python -m cProfile`; pstats reads its output
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from benchmarks.common import REPO, Section, alternate, load_average, median, ratios, spread

TRAIN = [sys.executable, "-m", "longrange.experiments.train"]
PLAIN = [sys.executable, "-m", "benchmarks.plain_loop"]
CLOCK = "benchmarks.fit_clock.FitClock"


@dataclass
class Case:
    model: str
    distance: int
    steps: int = 500

    @property
    def overrides(self) -> list[str]:
        return ["experiment=distance_sweep", f"model={self.model}", f"data.distance={self.distance}",
                f"trainer.max_steps={self.steps}"]  # fmt: skip

    @property
    def label(self) -> str:
        return f"{self.model}, D = {self.distance}, {self.steps} steps"


def env() -> dict[str, str]:
    """A user's shell: no OMP_WAIT_POLICY (benchmarks/run.py sets one for its own process)."""
    found = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    found["HYDRA_FULL_ERROR"] = "1"
    return found


def spec(case: Case) -> dict[str, Any]:
    """The job's resolved config as the entry point composes it: what the plain loop reads."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("longrange.conf", version_base="1.3"):
        cfg = compose("config", overrides=case.overrides)

    def node(name: str) -> Any:
        return OmegaConf.to_container(cfg[name], resolve=True)

    keys = ("max_steps", "val_check_interval", "gradient_clip_val", "log_every_n_steps")
    return {"seed": cfg.seed, "threads": cfg.threads, "model": node("model"), "data": node("data"),
            "train": node("train"), "resources": node("resources"),
            "trainer": {k: cfg.trainer[k] for k in keys}}  # fmt: skip


def check_plain_loop(found: dict[str, Any]) -> None:
    """The plain loop's evaluation sets are the data module's (same batches, same cuts)."""
    import torch

    from benchmarks import plain_loop
    from longrange.datasets import datamodule
    from longrange.experiments.run.config import instantiate

    assert plain_loop.EVAL_BLOCK_TOKENS == datamodule.EVAL_BLOCK_TOKENS
    task, train = instantiate(found["data"]), found["train"]
    args = (train["batch_size"], train["eval_samples"], found["seed"], found["resources"]["eval_tokens"])
    data = datamodule.TaskDataModule(task, *args)
    for split in ("val", "test"):
        mine, theirs = plain_loop.eval_batches(task, split, *args), data.eval_set(split).batches
        same = len(mine) == len(theirs) and all(
            torch.equal(a, b) for x, y in zip(mine, theirs, strict=True) for a, b in zip(x, y, strict=True)
        )
        if not same:
            raise RuntimeError(f"benchmarks/plain_loop.py's {split} set differs from TaskDataModule's")


def spawn(command: list[str], log: Path) -> tuple[float, float, float]:
    """Run ``command`` in a fresh process: (start time.time(), wall seconds, CPU seconds user + system)."""
    with log.open("w") as out:
        started, began = time.time(), time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=env(), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}:\n{tail}")
    return started, wall, usage.ru_utime + usage.ru_stime


def first_scalar(folder: Path, prefix: str = "train/") -> float | None:
    """time.time() of the first scalar under ``prefix`` in the job's TensorBoard files (callback-free)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    times = [
        event.wall_time
        for path in folder.rglob("events.out.tfevents.*")
        for event in EventFileLoader(str(path)).Load()
        if any(value.tag.startswith(prefix) for value in event.summary.value)
    ]
    return min(times) if times else None


def entry_run(case: Case, folder: Path) -> dict[str, Any]:
    clock = folder / "clock.json"
    command = [*TRAIN, *case.overrides, f"hydra.run.dir={folder}", f"+callbacks.clock._target_={CLOCK}",
               f"+callbacks.clock.path={clock}"]  # fmt: skip
    started, wall, cpu = spawn(command, folder.with_suffix(".log"))
    record = json.loads(clock.read_text())
    result = json.loads((folder / "result.json").read_text())
    diagnostics = json.loads((folder / "diagnostics.json").read_text())
    if result["status"] != "ok":
        raise RuntimeError(f"{folder}: {result['status']}")
    first = first_scalar(folder)
    return {"started": started, "wall": wall, "cpu": cpu, "marks": record["marks"],
            "seconds": record["seconds"], "validations": record["validations"], "steps": result["steps"],
            "val_acc": result["val_acc"], "test_acc": result["test_acc"],
            "diagnostics_s": diagnostics.get("cost_s"), "diagnostics": diagnostics,
            "first_scalar": None if first is None else first - started}  # fmt: skip


def plain_run(spec_path: Path, folder: Path) -> dict[str, Any]:
    log = folder.with_suffix(".log")
    started, wall, cpu = spawn([*PLAIN, str(spec_path), str(folder)], log)
    found = json.loads(log.read_text().split("PLAIN ", 1)[1])
    return found | {"started": started, "wall": wall, "cpu": cpu}


def phases(run: dict[str, Any], plain: bool) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds per phase of one run, from its marks (wall relative to the command's start)."""
    m = {k: (v[0] - run["started"], v[1]) for k, v in run["marks"].items()}
    checkpoint, validation = run["seconds"]["checkpoint"], run["seconds"]["validation"]
    loop_end = m["fit end"] if plain else m["loop end"]

    def between(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        return b[0] - a[0], b[1] - a[1]

    steps = between(m["first step"], loop_end)
    training = (steps[0] - checkpoint[0] - validation[0], steps[1] - checkpoint[1] - validation[1])
    end = (0.0, 0.0) if plain else between(loop_end, m["fit end"])
    return {
        "command -> fit starts (imports, config, model, data)": m["fit start"],
        "fit start -> first step (fit set-up, validation set)": between(m["fit start"], m["first step"]),
        "training steps": training,
        "checkpoint saves (+ the validation loop's start)": tuple(checkpoint),
        "validations": tuple(validation),
        "end of training (diagnostics) and fit teardown": end,
        "test (incl. generating the test set)": between(m["fit end"], m["test end"]),
        "after the test -> process gone (result, hparams, exit)": (run["wall"] - m["test end"][0],
                                                                   run["cpu"] - m["test end"][1]),
    }  # fmt: skip


def fit_seconds(run: dict[str, Any]) -> tuple[float, float]:
    """(wall, CPU) seconds of the fit: Trainer.fit, or the plain loop's training + validation."""
    start, end = run["marks"]["fit start"], run["marks"]["fit end"]
    return end[0] - start[0], end[1] - start[1]


def fixed_cost(run: dict[str, Any]) -> tuple[float, float]:
    """(wall, CPU) seconds from the command to the first training step."""
    first = run["marks"]["first step"]
    return first[0] - run["started"], first[1]


IMPORTS = {
    "interpreter alone (`python -c pass`)": "pass",
    "`import torch`": "import torch",
    "the plain loop's imports (`import benchmarks.plain_loop`: torch, the task and model files)":
        "import benchmarks.plain_loop",
    "`import pytorch_lightning` (the floor no change in this project removes)": "import pytorch_lightning",
    "`import longrange.experiments.train` (the entry point's imports)": "import longrange.experiments.train",
}  # fmt: skip


def import_floor(repeats: int, folder: Path) -> dict[str, list[tuple[float, float]]]:
    """Whole-process (wall, CPU) seconds of ``python -c IMPORT``, alternated."""
    sides = {
        label: (lambda code=code: spawn([sys.executable, "-c", code], folder / "import.log")[1:])
        for label, code in IMPORTS.items()
    }
    return alternate(sides, repeats)  # type: ignore[arg-type]


# --- the profile: where the entry point's extra seconds go ------------------------------------------
# name -> (file suffix, function): the functions read from the profile (cumulative seconds, calls)
FUNCTIONS = {
    "module": ("longrange/experiments/train.py", "<module>"),
    "hydra main": ("hydra/main.py", "decorated_main"),
    "hydra run": ("hydra/_internal/utils.py", "_run_hydra"),
    "task function": ("longrange/experiments/train.py", "main"),
    "validate callback": ("sweep/validate.py", "on_run_start"),
    "validate": ("run/config.py", "_validate"),
    "footprint": ("run/footprint.py", "measure"),
    "build_backbone": ("models/module.py", "build_backbone"),
    "train": ("longrange/experiments/train.py", "train"),
    "trainer init": ("pytorch_lightning/trainer/trainer.py", "__init__"),
    "fit": ("pytorch_lightning/trainer/trainer.py", "fit"),
    "test": ("pytorch_lightning/trainer/trainer.py", "test"),
    "training_step": ("longrange/models/module.py", "training_step"),
    "backward": ("torch/_tensor.py", "backward"),
    "optimizer": ("torch/optim/adam.py", "step"),
    "log": ("pytorch_lightning/core/module.py", "log"),
    "log_metrics": ("logger_connector/logger_connector.py", "log_metrics"),
    "lr_monitor": ("callbacks/lr_monitor.py", "on_train_batch_start"),
    "fetch": ("pytorch_lightning/loops/fetchers.py", "__next__"),
    "train_batch": ("longrange/datasets/base.py", "train_batch"),
    "save_checkpoint": ("pytorch_lightning/trainer/trainer.py", "save_checkpoint"),
    "eval sets": ("datasets/datamodule.py", "_generate"),
    "validation_step": ("longrange/models/module.py", "validation_step"),
    "samples": ("run/callbacks.py", "on_validation_epoch_end"),
    "diagnostics": ("run/callbacks.py", "on_train_end"),
    "measurements": ("run/callbacks.py", "_measure"),
    "curves_figure": ("experiments/figures.py", "curves_figure"),
    "to_image": ("experiments/figures.py", "to_image"),
    "add_image": ("torch/utils/tensorboard/writer.py", "add_image"),
    "hparams": ("pytorch_lightning/loggers/tensorboard.py", "log_hyperparams"),
}


def profile(case: Case, folder: Path) -> tuple[float, list[list[Any]], dict[str, float]]:
    """One entry-point run under cProfile: (wall seconds of the run, rows label / seconds / calls, and the
    cumulative seconds of each of :data:`FUNCTIONS`)."""
    out = folder / "entry.prof"
    command = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "longrange.experiments.train",
               *case.overrides, f"hydra.run.dir={folder / 'profiled'}"]  # fmt: skip
    _, wall, _ = spawn(command, folder / "profile.log")
    stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
    ct: dict[str, float] = {}
    calls: dict[str, int] = {}
    for key, (suffix, function) in FUNCTIONS.items():
        found = [(v[1], v[3]) for (path, _, name), v in stats.items()
                 if name == function and path.replace(os.sep, "/").endswith(suffix)]  # fmt: skip
        calls[key], ct[key] = sum(c for c, _ in found), sum(t for _, t in found)
    total = sum(v[2] for v in stats.values())

    def row(label: str, seconds: float, key: str | None = None) -> list[Any]:
        return [label, f"{seconds:.2f} s", calls[key] if key else ""]

    rows = [
        row("the whole process (profiled)", total),
        row("imports (train.py's module level, before Hydra's main)", ct["module"] - ct["hydra main"]),
        row("Hydra: composing the config, logging set-up, its callbacks (the check excluded)",
            ct["hydra run"] - ct["task function"] - ct["validate callback"]),
        row("the config check (ValidateConfig.on_run_start: validate + resources.check)",
            ct["validate callback"], "validate callback"),
        row("  config.validate (run once per process)", ct["validate"], "validate"),
        row("  footprint.measure (the memory check)", ct["footprint"], "footprint"),
        row("  build_backbone (meta, footprint, module)", ct["build_backbone"], "build_backbone"),
        row("train() outside fit and test (lock, record, module, data, Trainer, result.json, hparams)",
            ct["train"] - ct["fit"] - ct["test"]),
        row("  Trainer construction", ct["trainer init"], "trainer init"),
        row("  TensorBoard hparams row", ct["hparams"], "hparams"),
        row("Trainer.fit", ct["fit"], "fit"),
        row("  the module's training_step (forward, loss, logging)", ct["training_step"], "training_step"),
        row("  backward", ct["backward"], "backward"),
        row("  AdamW step", ct["optimizer"], "optimizer"),
        row("  self.log calls of the module", ct["log"], "log"),
        row("  Lightning's metrics to TensorBoard (log_metrics)", ct["log_metrics"], "log_metrics"),
        row("  LearningRateMonitor (every step)", ct["lr_monitor"], "lr_monitor"),
        row("  batch fetching (incl. task.train_batch)", ct["fetch"], "fetch"),
        row("    task.train_batch (the data itself, both sides)", ct["train_batch"], "train_batch"),
        row("  checkpoint saves", ct["save_checkpoint"], "save_checkpoint"),
        row("  generating the validation set (and the test set, in test)", ct["eval sets"], "eval sets"),
        row("  validation_step", ct["validation_step"], "validation_step"),
        row("  LogDecodedSamples + Diagnostics after each validation", ct["samples"], "samples"),
        row("  Diagnostics.on_train_end (all of it)", ct["diagnostics"], "diagnostics"),
        row("    its measurements (gradient flow, memory probe)", ct["measurements"], "measurements"),
        row("    its two figures: drawing (curves_figure)", ct["curves_figure"], "curves_figure"),
        row("    its two figures: rendering to pixels (to_image)", ct["to_image"], "to_image"),
        row("    its two figures: TensorBoard add_image", ct["add_image"], "add_image"),
        row("Trainer.test", ct["test"], "test"),
    ]  # fmt: skip
    ct["hydra own"] = ct["hydra run"] - ct["task function"] - ct["validate callback"]
    return wall, rows, ct


def figure_cost(diagnostics: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Seconds to draw and render the two end-of-training figures of ``Diagnostics.on_train_end`` (from a
    job's diagnostics.json), as shipped (``panel_row``: layout="constrained") against the same figures
    with no layout engine (fixed margins, as ``figures._fixed_grid`` draws the attention heatmaps)."""
    from longrange.experiments.figures import GRADIENT_AXES, PROBE_AXES, curves_figure, to_image

    def keyed(found: dict[str, Any]) -> dict[int, dict[int, float]]:
        return {int(d): {int(k): v for k, v in curve.items()} for d, curve in found.items()}

    gradient, probe = keyed(diagnostics["gradient_norm"]), keyed(diagnostics["probe_accuracy"])
    chance = {"LSTM": min(diagnostics["probe_chance"].values())}

    def draw(engine: str | None) -> float:
        start = time.perf_counter()
        for figure in (curves_figure({"LSTM": gradient}, *GRADIENT_AXES, log_y=True),
                       curves_figure({"LSTM": probe}, *PROBE_AXES, chance=chance)):  # fmt: skip
            if engine is not None:
                figure.set_layout_engine(engine)
            to_image(figure)
        return time.perf_counter() - start

    first = draw(None)  # matplotlib's fonts and caches, loaded once per process: the job pays this one
    found = alternate({"shipped": lambda: draw(None), "fixed": lambda: draw("none")}, repeats)
    return found | {"first": [first]}


FOOTPRINT_CHILD = r"""
import json, sys, time
import pytorch_lightning  # as in a job: Lightning (and torch._dynamo) already imported
from omegaconf import OmegaConf
from longrange.experiments.run.config import instantiate
from longrange.experiments.run.footprint import measure
node = OmegaConf.to_container(OmegaConf.load(f"conf/model/{sys.argv[1]}.yaml"), resolve=True)
data = OmegaConf.to_container(OmegaConf.load("conf/data/coref.yaml"), resolve=True)
vocab = len(instantiate(data, distance=int(sys.argv[2])).vocab.words)  # the job's task
start = time.perf_counter()
measure(node, vocab)
print("FOOTPRINT", time.perf_counter() - start)
"""
DEMO_MODELS = ("gru", "attention", "lstm", "bag")  # conf/experiment/distance_sweep.yaml


def footprint_cost(distance: int, folder: Path) -> dict[str, float]:
    """Seconds of ``footprint.measure`` (the memory check before training) per model of the demo, each in a
    fresh process after importing Lightning: what a single run pays in ``ValidateConfig.on_run_start``,
    and what a sweep's launcher pays once per model before its first job."""
    found = {}
    for model in DEMO_MODELS:
        log = folder / f"footprint-{model}.log"
        spawn([sys.executable, "-c", FOOTPRINT_CHILD, model, str(distance)], log)
        found[model] = float(log.read_text().split("FOOTPRINT", 1)[1])
    return found


RAW = Path(tempfile.gettempdir()) / "longrange-entry-point.json"  # the last run's figures, for a second look


def entry_point(quick: bool) -> Section:
    """Measure (a few minutes), keep the figures in :data:`RAW`, and write the section from them."""
    case = Case("lstm", 64, 200 if quick else 500)
    repeats = 1 if quick else 3
    loads, began = [load_average()], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        found_spec = spec(case)
        check_plain_loop(found_spec)
        spec_path = root / "spec.json"
        spec_path.write_text(json.dumps(found_spec))
        folders = iter(range(1000))
        runs = alternate(
            {
                "entry": lambda: entry_run(case, root / f"entry{next(folders)}"),
                "plain": lambda: plain_run(spec_path, root / f"plain{next(folders)}"),
            },
            repeats,
        )  # type: ignore[arg-type]
        loads.append(load_average())
        imports = import_floor(2 if quick else 3, root)
        loads.append(load_average())
        profiled = None if quick else profile(case, root)
        figures = figure_cost(runs["entry"][0]["diagnostics"], 2 if quick else 3)  # type: ignore[index]
        footprints = footprint_cost(case.distance, root)
        loads.append(load_average())
    raw = {"case": [case.model, case.distance, case.steps], "repeats": repeats, "runs": runs,
           "imports": imports, "loads": loads, "profiled": profiled, "figures": figures,
           "footprints": footprints, "elapsed": time.perf_counter() - began}  # fmt: skip
    RAW.write_text(json.dumps(raw))
    return report(json.loads(RAW.read_text()))


def report(raw: dict[str, Any]) -> Section:
    """The section, from the figures of one run (:func:`entry_point`'s, or :data:`RAW` read back)."""
    section = Section("entry_point", "3. Entry point against a plain loop (`longrange-train`, whole process)")
    case, repeats, runs, imports = Case(*raw["case"]), raw["repeats"], raw["runs"], raw["imports"]
    loads, profiled, figures, footprints = raw["loads"], raw["profiled"], raw["figures"], raw["footprints"]
    entry, plain = cast("list[dict[str, Any]]", runs["entry"]), cast("list[dict[str, Any]]", runs["plain"])
    for e, p in zip(entry, plain, strict=True):  # the same work: the same weights, so the same accuracies
        if (e["val_acc"], e["test_acc"], e["validations"]) != (p["val_acc"], p["test_acc"], p["validations"]):
            raise RuntimeError(f"the two sides differ: entry {e['val_acc']}, {e['test_acc']}, "
                               f"{e['validations']} validations; plain {p['val_acc']}, {p['test_acc']}, "
                               f"{p['validations']}")  # fmt: skip

    def row(label: str, key: Any, target: str = "") -> list[str]:
        a, b = [key(r) for r in entry], [key(r) for r in plain]
        return [label, f"{spread(a, 1)} s", f"{spread(b, 1)} s", spread(ratios(a, b)) + "x", target]

    floor = {label.split("`")[1] if "`" in label else label: times for label, times in imports.items()}
    lightning = median([t[0] for t in floor["import pytorch_lightning"]])
    rows = [
        row("fit, wall: Trainer.fit vs training + validation (= per token)", lambda r: fit_seconds(r)[0],
            "<= 1.05x"),
        row("fit, CPU", lambda r: fit_seconds(r)[1]),
        row("whole process, wall: command to exit", lambda r: r["wall"], "<= 1.15x"),
        row("whole process, CPU (user + system)", lambda r: r["cpu"]),
        row("fixed cost, wall: command to first training step", lambda r: fixed_cost(r)[0], "<= 3 s"),
        row("fixed cost, CPU until the first step", lambda r: fixed_cost(r)[1]),
    ]  # fmt: skip
    torch_floor = spread([t[0] for t in floor["import torch"]], 1)
    rows.append(["imports floor, wall: `python -c \"import pytorch_lightning\"` (whole process)",
                 f"{spread([t[0] for t in floor['import pytorch_lightning']], 1)} s",
                 f"{torch_floor} s (`import torch`)", "", ""])  # fmt: skip
    first_scalar_s = [r["first_scalar"] for r in entry if r["first_scalar"] is not None]
    entry_phases = [phases(r, plain=False) for r in entry]
    plain_phases = [phases(r, plain=True) for r in plain]
    breakdown = []
    for name in entry_phases[0]:
        cells = []
        for column in (0, 1):  # wall, CPU
            a = median([p[name][column] for p in entry_phases])
            b = median([p[name][column] for p in plain_phases])
            cells += [f"{a:.2f} s", f"{b:.2f} s", f"{a - b:+.2f} s"]
        breakdown.append([name, *cells])
    per_step = {
        column: [[p["training steps"][column] / case.steps * 1e3 for p in side]
                 for side in (entry_phases, plain_phases)]
        for column in (0, 1)
    }  # fmt: skip
    breakdown.append(["  per training step (ratio)", *(
        cell for column in (0, 1) for cell in (
            f"{median(per_step[column][0]):.1f} ms", f"{median(per_step[column][1]):.1f} ms",
            spread(ratios(*per_step[column])) + "x")
    )])  # fmt: skip
    section.text(
        f"`{case.label}`, L = {case.distance + 14}: a job of `make demo`, the one issue 20 timed "
        f"(`python -m longrange.experiments.train {' '.join(case.overrides)} hydra.run.dir=<tmp>`: "
        f"{entry[0]['validations']} validations of 5 x 256 samples at D-2..D+2 with a checkpoint each, "
        "1280 test samples, the end-of-training diagnostics), against benchmarks/plain_loop.py doing the "
        "same work in a plain PyTorch process (no Lightning, no Hydra): the same model built from "
        "conf/model/lstm.yaml after the same seeding, the same `task.train_batch(64, seed, step)` stream, "
        "the validation and test sets cut as `TaskDataModule` cuts them (checked equal), AdamW with the "
        "module's groups, warmup and cosine decay, clipping at 1.0, a validation and one `torch.save` "
        "(weights, optimiser, schedule, RNG) every 100 steps. Both train the same weights: validation and "
        f"test accuracy are equal in every repeat (checked: {entry[0]['val_acc']:.4f} and "
        f"{entry[0]['test_acc']:.4f}). {repeats} repeat(s) per side, alternated (A B B A ...), fresh "
        "processes, median (range); ratios per alternated pair. *fit* = Lightning's `setup` to `teardown` "
        "hooks (benchmarks/fit_clock.py, added with `+callbacks.clock._target_=...`: the project unchanged), "
        "the diagnostics at the end of training included, against the plain loop's training and "
        "validation; the sides process the same tokens, so the fit ratio is the per-token ratio. *CPU* = "
        "user + system seconds of the process: on this shared machine (see the load) wall time depends on "
        "what else runs, CPU time much less; on a quiet machine a one-thread job's wall time is close to "
        "its CPU time. Targets from issue 20. Rerun: `python -m benchmarks.run entry_point`."
    )
    section.table(["", "longrange-train", "plain loop", "ratio", "target"], rows,
                  load=f"{loads[0]} before, {loads[1]} after")  # fmt: skip
    if first_scalar_s:
        section.text(
            "Callback-free cross-check of the fixed cost: the first `train/` scalar in the job's TensorBoard "
            f"file (written after step 10) came {spread(first_scalar_s, 1)} s after the command."
        )
    section.text("Where the time goes, phase by phase (medians of the repeats, from each side's timestamps):")
    section.table(["phase", "entry, wall", "plain, wall", "difference", "entry, CPU", "plain, CPU",
                   "difference"], breakdown, load=f"{loads[0]} before, {loads[1]} after")  # fmt: skip
    section.text(
        f"Imports alone, a fresh `python -c ...` process each, alternated ({len(floor['import torch'])} "
        f"repeats, median (range)). `import pytorch_lightning` ({lightning:.1f} s here) is the floor that "
        "no change in this project removes; it includes torch and, through lightning_fabric, torch._dynamo, "
        "which the plain loop loads later, at its first `torch.optim.AdamW` (about 1 s)."
    )
    section.table(["imports", "process wall time", "process CPU time"],
                  [[label, f"{spread([t[0] for t in times], 2)} s", f"{spread([t[1] for t in times], 2)} s"]
                   for label, times in imports.items()], load=loads[2])  # fmt: skip
    if profiled is not None:
        wall, rows_profiled, _ = profiled
        section.text(
            f"One more run of the entry point under cProfile (`python -m cProfile -m "
            f"longrange.experiments.train ...`, {wall:.1f} s wall, the profiler's overhead included: it "
            "inflates Python-heavy code, such as Lightning's loop, more than torch's kernels): cumulative "
            "seconds and calls."
        )
        section.table(["function", "cumulative (under cProfile)", "calls"], rows_profiled, load=loads[3])
    shipped, fixed, first = figures["shipped"], figures["fixed"], figures["first"][0]
    section.text(
        "The two figures `Diagnostics.on_train_end` draws and renders (gradient flow, memory probe; "
        "experiments/figures.py `curves_figure` + `to_image`), from this job's diagnostics.json, in this "
        f'process: {spread(shipped)} s as shipped (`panel_row`, layout="constrained"), '
        f"{spread(fixed)} s with no layout engine (fixed margins, as `_fixed_grid` draws the attention "
        f"heatmaps), {spread(ratios(shipped, fixed), 1)}x ({len(shipped)} alternated repeats). The first "
        f"figure of a process costs more (matplotlib loads its fonts and caches): {first:.2f} s for the "
        "pair here, which is what a job pays, once, at its end."
    )
    section.text(
        "`footprint.measure` (the memory check before training: `ValidateConfig.on_run_start` in a single "
        "run; in a sweep, the launcher measures each model once before the first job), a fresh process per "
        "model after importing Lightning, as in a job: "
        + ", ".join(f"{model} {seconds:.2f} s" for model, seconds in footprints.items())
        + "."
    )

    def diff(*names: str) -> float:  # CPU seconds per job, entry - plain, summed over phases
        return sum(median([p[n][1] for p in entry_phases]) - median([p[n][1] for p in plain_phases])
                   for n in names)  # fmt: skip

    def cpu(label: str) -> float:
        return median([t[1] for t in floor[label]])

    diagnostics = diff("end of training (diagnostics) and fit teardown")
    lightning_beyond_torch = cpu("import pytorch_lightning") - cpu("import torch")
    ct = profiled[2] if profiled is not None else {}
    nan = float("nan")
    causes = [  # (cause, cost per job in CPU seconds, proposed fix, seconds it saves per job)
        ("diagnostics at the end of training: gradient flow and memory probe at every evaluated distance "
         "(5 in a fixed-distance demo job)", diagnostics - first,
         "experiments/run/callbacks.py `Diagnostics._measure`: measure at the trained distances only "
         "(the untrained D-2..D+2 neighbours exist for the accuracy's position-reliance column; their "
         "curves in the report are near-copies of D's). Changes the report's diagnostics figures",
         (diagnostics - first) * 4 / 5),
        ("diagnostics at the end of training: the two TensorBoard figures (the process's first figures)",
         first,
         "experiments/run/callbacks.py `Diagnostics.on_train_end`: write diagnostics.json only; the report "
         "already draws the same curves from it (report/build.py `diagnostics_figures`). Fixed margins "
         "instead of the constrained layout do not help (measured above)",
         first),
        ("command to first step: Lightning's import beyond torch "
         f"({lightning_beyond_torch:.1f} s as whole processes; the plain loop pays ~1 s of it too: "
         "torch._dynamo, at its first AdamW), Hydra's composition and logging set-up "
         f"({ct.get('hydra own', nan):.2f} s profiled), the config check "
         f"({ct.get('validate callback', nan):.2f} s profiled, {ct.get('footprint', nan):.2f} s of it the "
         "memory footprint)",
         diff("command -> fit starts (imports, config, model, data)",
              "fit start -> first step (fit set-up, validation set)"),
         "experiments/run/footprint.py `measure`: keep the footprint on disk per (model node, vocabulary, "
         f"torch version): saves its {footprints.get('lstm', nan):.2f} s here, "
         f"{footprints.get('gru', nan):.1f} s in a single GRU run, "
         f"{sum(footprints.values()):.1f} s before a demo sweep's first job. The rest: none (Lightning's "
         "import is the floor; Hydra's is Hydra's)",
         footprints.get("lstm", 0.0)),
        ("validations, checkpoints and the test under Lightning (its evaluation loop, per-distance "
         "logging, decoded samples)",
         diff("validations", "checkpoint saves (+ the validation loop's start)",
              "test (incl. generating the test set)"), "none: a few percent of those phases", 0.0),
        ("after the test to the process's end (result.json, TensorBoard hparams and finalize: under "
         "0.01 s profiled; the rest is the interpreter unloading Lightning)",
         diff("after the test -> process gone (result, hparams, exit)"), "none worth its risk", 0.0),
        (f"the {case.steps} training steps under Lightning's loop (per step "
         f"{spread(ratios(*per_step[1]))}x of the plain loop's, CPU)", diff("training steps"),
         "none: Lightning's loop, within the process-to-process spread", 0.0),
    ]  # fmt: skip
    causes.sort(key=lambda c: (-c[3], -c[1]))
    section.text(
        "The difference, cause by cause (the phases above, which add up to it), ranked by the seconds the "
        "proposed fix would save per job (CPU seconds, medians of this run; *profiled* figures come from "
        "the cProfile run):"
    )
    section.table(["cause", "costs per job", "proposed fix (file, function)", "saves per job"],
                  [[c, f"{cost:+.2f} s" if cost == cost else "–", fix, f"{saving:.2f} s" if saving else "–"]
                   for c, cost, fix, saving in causes], load=loads[3])  # fmt: skip
    return section


if __name__ == "__main__":
    import argparse

    from benchmarks.common import write_results

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--from-raw", action="store_true", help=f"no measurement: the section from {RAW}")
    parser.add_argument("--write", action="store_true", help="and write it into benchmarks/RESULTS.md")
    args = parser.parse_args()
    found = report(json.loads(RAW.read_text())) if args.from_raw else entry_point(args.quick)
    print("\n".join(found.lines))
    if args.write:
        raw = json.loads(RAW.read_text())
        peak = max(float(load.split(" / ")[0]) for load in raw["loads"])
        write_results([found], "python -m benchmarks.run entry_point", raw.get("elapsed", 0.0), peak)

"""Items 2, 4 and 7: training throughput per model, length and threads; RNN step time against L with and
without flushing denormals; peak memory of the attention model against L."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from typing import Any, cast

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import yaml
from omegaconf import OmegaConf

from benchmarks.common import (
    REPO,
    Section,
    alternate,
    load_average,
    median,
    ratios,
    seconds_per_call,
    si,
    spread,
)
from longrange.datasets.base import TaskBatch
from longrange.datasets.coref import CorefRecall
from longrange.experiments.run.config import TrainConfig
from longrange.experiments.run.job import keep_freed_memory
from longrange.experiments.sweep.grid import grid_points, parse_point
from longrange.models.module import LongRangeModule

BATCH = 64


def sweep_distances(preset: str) -> list[int]:
    """Every distance a preset's grid trains at (``conf/experiment/PRESET.yaml``), lists flattened: the
    grid expanded by Hydra's own parser (``longrange.experiments.sweep.grid``), e.g. ``8,16,[8,16]`` ->
    [8, 16]."""
    params = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "experiment" / f"{preset}.yaml"))
    found: set[int] = set()
    for point in grid_points(params["hydra"]["sweeper"]["params"], []):  # type: ignore[index]
        value = parse_point(point).get("data.distance")
        if value is not None:
            value = yaml.safe_load(value) if isinstance(value, str) else value
            found.update(int(d) for d in (value if isinstance(value, list) else [value]))
    return sorted(found)


DEMO_DISTANCES = sweep_distances("distance_sweep")  # `make demo`: L = D + 14 (coref, max_offset 8)


def model_names() -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))


def model_config(name: str, **overrides: object) -> dict:
    """conf/model/NAME.yaml as a run composes it (a file may build on another through its defaults list,
    e.g. deltanet_negeig.yaml on deltanet.yaml), with ``overrides``."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("longrange.conf", version_base="1.3"):
        node = compose("config", overrides=[f"model={name}"]).model
    config = cast("dict[str, Any]", OmegaConf.to_container(node, resolve=True))
    return {**config, **overrides}


def optimisation() -> dict[str, Any]:
    """The module's optimisation keywords (lr, weight_decay, ...) from conf/config.yaml's ``train`` node,
    where their values are written once (``TrainConfig.optimisation``)."""
    root = OmegaConf.load(REPO / "conf" / "config.yaml")
    node = cast("dict[str, Any]", OmegaConf.to_container(root.train, resolve=True))
    return TrainConfig(**node).optimisation()


def configured_optimiser(module: LongRangeModule, max_steps: int) -> tuple[Any, Any]:
    """The module's own AdamW and schedule (``configure_optimizers``, which reads ``trainer.max_steps``), from
    a real Trainer attached for the call only (no logger, checkpoints or progress bar)."""
    quiet = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # its banners (GPU available, ...) on every Trainee
        logger.setLevel(logging.WARNING)
    try:
        trainer = pl.Trainer(
            max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    module.trainer = trainer
    try:
        configured = module.configure_optimizers()
    finally:
        module.trainer = None  # type: ignore[assignment]
    return configured["optimizer"], configured["lr_scheduler"]["scheduler"]


class Trainee:
    """One default model on the coref task, trained by a plain PyTorch loop: the project's LightningModule
    (embedding, backbone, readout, loss), its own AdamW and schedule, gradient clipping at 1.0 as in
    conf/trainer/default.yaml, on a few pre-generated batches (so that generation is not timed).

    The task has no distractor (``load=0``, the bare cue): a step's cost depends on the length L = D + 14
    and the batch, not on the tokens, and without distractors the shortest lengths these benchmarks
    measure (L = 16, 18: D = 2, 4) exist; the headline task (load 1) needs D >= 5."""

    def __init__(
        self, name: str, distance: int, batch_size: int = BATCH, seed: int = 0, **model: object
    ) -> None:
        torch.manual_seed(seed)
        self.task = CorefRecall(distance=distance, load=0)
        self.module = LongRangeModule(model_config(name, **model), self.task.vocab.words, **optimisation())
        self.optimizer, self.scheduler = configured_optimiser(self.module, max_steps=1000)
        self.batches = [self.task.train_batch(batch_size, seed, step) for step in range(4)]
        self.tokens = self.batches[0].tokens.numel()
        self.steps = 0

    def step(self, batch: TaskBatch | None = None) -> float:
        batch = batch or self.batches[self.steps % len(self.batches)]
        self.steps += 1
        logits, targets, _ = self.module.answer_logits(batch)
        loss = F.cross_entropy(logits, targets)
        if not torch.isfinite(loss):
            raise RuntimeError("non-finite loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def throughput(quick: bool) -> Section:
    section = Section("throughput", "2. Training throughput (tokens/s, forward + backward + AdamW, batch 64)")
    lengths = (16, 64, 256, 1024)
    repeats, min_time = (1, 0.2) if quick else (2, 0.3)
    rows = []
    for name in model_names():
        cells = [(L, BATCH) for L in lengths] + ([(4096, 8)] if name == "attention" else [])
        for length, batch in cells:
            trainee = Trainee(name, length - CorefRecall().seq_len(0), batch_size=batch)

            def rate(count: int, trainee: Trainee = trainee) -> float:
                with threads(count):
                    return trainee.tokens / seconds_per_call(trainee.step, min_time, min_calls=2)

            found = alternate({"1": lambda: rate(1), "2": lambda: rate(2)}, repeats)
            rows.append(
                [
                    name,
                    trainee.task.seq_len(trainee.task.train_distances[0]),
                    batch,
                    si(median(found["1"])),
                    si(median(found["2"])),
                    f"{median(ratios(found['2'], found['1'])):.2f}x",
                ]
            )
    section.text(
        "One optimiser step of each default model (conf/model/*.yaml) on the coref task, plain PyTorch loop "
        "(see `Trainee`), 1 and 2 torch threads measured in alternation, with `OMP_WAIT_POLICY=PASSIVE` "
        "(set by benchmarks/run.py, so that another process on a core cannot stall the measurement; with "
        "libgomp's default spinning, 2 threads are faster than these figures where a core is free and "
        "10-100x slower where it is not, see `threads`). Attention at L=4096 uses batch 8 (a batch-64 "
        "step takes over a minute on this CPU); tokens/s barely depends on the batch at that size. L "
        "includes the coref task's max_offset of 8."
    )
    section.table(["model", "L", "batch", "1 thread", "2 threads", "2 / 1 threads"], rows)
    return section


ZOO_TARGETS = {256: 2.5, 1024: 3.0}  # issue 20: a step within these multiples of the LSTM's at these lengths


def zoo_speed(quick: bool) -> Section:
    """Issue 20's targets for every model: a training step (batch 64, 1 thread) within 2.5x of the LSTM's
    at L = 256 and 3x at L = 1024, with each step's FLOPs and the fraction of the core's GEMM peak."""
    from benchmarks.flops import gemm_peak, step_flops

    lengths = tuple(ZOO_TARGETS)
    title = "2c. Every model against the LSTM: step time, FLOPs and fraction of peak at L = 256 and 1024"
    section = Section("zoo_speed", title)
    repeats, min_time = (2, 0.5) if quick else (3, 1.0)
    step: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    flops: dict[tuple[str, int], int] = {}
    keep_freed_memory()  # as every job runs (experiments/run/job.py): steps of large tensors fault less
    with threads(1):
        peak = gemm_peak()
        for length in lengths:
            trainees = {name: Trainee(name, length - CorefRecall().seq_len(0)) for name in model_names()}
            for name, trainee in trainees.items():
                flops[(name, length)] = step_flops(trainee.step)

            def timed(trainee: Trainee, key: tuple[str, int]) -> float:
                trainee.steps = 0
                start = time.process_time()
                seconds = seconds_per_call(trainee.step, min_time, min_calls=2)
                cpu.setdefault(key, []).append((time.process_time() - start) / max(trainee.steps, 1))
                return seconds

            for name, trainee in trainees.items():  # each model alternated with the LSTM: same load on both
                if name == "lstm":
                    continue
                sides = {
                    name: lambda t=trainee, k=(name, length): timed(t, k),
                    "lstm": lambda t=trainees["lstm"], k=("lstm", length): timed(t, k),
                }
                found = alternate(sides, repeats)
                step.setdefault((name, length), []).extend(found[name])
                step.setdefault(("lstm", length), []).extend(found["lstm"])
                step.setdefault((f"{name}/lstm", length), []).extend(ratios(found[name], found["lstm"]))
            del trainees
    rows = []
    for name in model_names():
        cells: list[str] = []
        ok = True
        for length in lengths:
            seconds = median(cpu[(name, length)])
            ratio = seconds / median(cpu[("lstm", length)])
            ok = ok and (name == "lstm" or ratio <= ZOO_TARGETS[length])
            wall = "1.00" if name == "lstm" else spread(step[(f"{name}/lstm", length)])
            rate = flops[(name, length)] / seconds
            cells += [
                f"{seconds * 1e3:.0f} ms",
                f"{ratio:.2f}x",
                wall,
                f"{flops[(name, length)] / 1e9:.1f}",
                f"{rate / 1e9:.1f} ({rate / peak:.0%})",
            ]
        rows.append([name, *cells, "yes" if ok else "no"])
    section.text(
        "One optimiser step (forward, backward, clipping, AdamW: `Trainee`) of each default model on the "
        "coref task, batch 64, one thread, in a process with the jobs' memory setting (`keep_freed_memory`, "
        "section 3); each model measured in alternation with the LSTM, so that the "
        "machine's load falls on both alike. *CPU step*: the process's CPU time per step (one thread: robust "
        "to other processes taking the core, which wall time is not on a shared machine), median of repeats; "
        "*vs LSTM*: the ratio of the CPU times, targets <= 2.5x at L = 256 and <= 3x at L = 1024; *wall*: "
        "the wall-time ratio of the alternated pairs, median (range), for reference. *GFLOP*: one step's "
        "matrix products (forward and backward, 2 FLOPs per multiply-add) counted by torch's "
        "`FlopCounterMode`, with the corrections of benchmarks/flops.py (depthwise convolutions' backward, "
        "the CPU attention kernel, triangular solves, the LSTM's oneDNN kernel); elementwise work is not "
        "counted. *GFLOP/s (peak)*: those FLOPs per CPU second, and their fraction of this core's "
        "single-thread fp32 GEMM peak, measured in the same run (a 2048 x 2048 matmul, best of 3): "
        f"{peak / 1e9:.1f} GFLOP/s."
    )
    header = ["model"]
    for length in lengths:
        header += [f"CPU step L={length}", f"vs LSTM {length}", f"wall {length}", f"GFLOP {length}",
                   f"GFLOP/s (peak) {length}"]  # fmt: skip
    section.table([*header, "met"], rows)
    return section


@contextlib.contextmanager
def denormals(flush: bool) -> Iterator[None]:
    """Run with flushing of denormal floats on or off. The LSTM/GRU backbones switch flushing on in their
    forward; for the "off" side that switch is disabled for the duration."""
    real = torch.set_flush_denormal
    torch.set_flush_denormal = lambda mode: True  # type: ignore[assignment]  # backbones' own call: no-op
    real(flush)
    try:
        yield
    finally:
        torch.set_flush_denormal = real
        real(True)


def rnn_scaling(quick: bool) -> Section:
    section = Section("rnn", "4. RNN step time against L (batch 64, 1 thread)")
    lengths = (128, 256, 512, 1024)
    rounds = 2 if quick else 4
    rows = []
    for name in [n for n in model_names() if n in ("lstm", "gru", "rnn")]:
        trainees = {L: Trainee(name, L - CorefRecall().seq_len(0)) for L in lengths}
        seconds: dict[tuple[int, bool], list[float]] = {(L, f): [] for L in lengths for f in (True, False)}
        for turn in range(rounds):  # every length and both settings once per round, order alternating
            for L in lengths if turn % 2 == 0 else reversed(lengths):
                for flush in (True, False) if turn % 2 == 0 else (False, True):
                    with threads(1), denormals(flush):
                        start = time.perf_counter()
                        trainees[L].step()
                        seconds[L, flush].append(time.perf_counter() - start)

        def per_token(L: int, flush: bool, seconds: dict = seconds) -> list[float]:
            """Per-token time relative to L=128 measured in the same round."""
            return [
                (t / L) / (t0 / 128) for t, t0 in zip(seconds[L, flush], seconds[128, flush], strict=True)
            ]

        for L in lengths:
            on, off = median(seconds[L, True]), median(seconds[L, False])
            rows.append(
                [
                    name,
                    L,
                    f"{off * 1e3:.0f} ms",
                    f"{median(per_token(L, False)):.2f}",
                    f"{on * 1e3:.0f} ms",
                    spread(per_token(L, True)),
                    spread(ratios(seconds[L, False], seconds[L, True]), 1) + "x",
                    si(BATCH * L / on),
                ]
            )
    section.text(
        "Step = forward + backward + AdamW of the default backbone with the project's module (batch 64; "
        f"L includes the coref task's max_offset). {rounds} rounds, each measuring one step of every L "
        "with and without the fix, order alternating between rounds. *per token vs L=128* = (step time / L) "
        "over the same ratio at L=128 in the same round (1.00 = linear in L; target at most 1.3 at L=1024). "
        "*before* = denormal floats not flushed (PyTorch's default), *after* = flushed to zero, as "
        "models/lstm.py and models/gru.py now do (models/rnn.py, not part of this change, does not yet: "
        "in a run of the `rnn` model alone the *before* column applies until it or experiments/train.py "
        "sets the flag)."
    )
    section.table(
        [
            "model",
            "L",
            "before",
            "per token vs L=128",
            "after",
            "per token vs L=128",
            "speed-up",
            "tokens/s after",
        ],
        rows,
    )
    section.text(
        "Why: the loss sits at the last position only, so the gradient flowing back through time shrinks "
        "by about the forget/update gate (~0.73) per step. After a few hundred steps it falls below 1.2e-38, "
        "where float32 numbers become *denormal*, and x86 cores run every multiply-add on them 10-100x "
        "slower (microcode assists). The step time therefore explodes past L~300-500 in the backward pass "
        "(oneDNN's `mkldnn_rnn_layer_backward` for the LSTM, the native per-step kernels for the GRU and the "
        "RNN), on both code paths. Flushing denormals to zero (FTZ/DAZ, `torch.set_flush_denormal(True)`) "
        "removes it; the flushed values are below float32's resolution of any gradient that matters. "
        "The flag is per thread and inherited by threads created later: the backbones set it at import "
        "(before torch's thread pool exists) and in forward(). GRU is slower than LSTM per step because "
        "PyTorch has a fused oneDNN kernel for LSTM only; the GRU runs one small matmul + pointwise kernels "
        "per time step (and hidden 140 vs 120)."
    )
    return section


MEMORY_CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[3])
from benchmarks.training import Trainee
from longrange.datasets.coref import CorefRecall
from longrange.experiments.sweep.grid import grid_points, parse_point
torch.set_num_threads(1)
length, batch = int(sys.argv[1]), int(sys.argv[2])
trainee = Trainee("attention", length - CorefRecall().seq_len(0), batch_size=batch, max_len=max(4096, length))
def status(key):  # kB in /proc/self/status
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident size
start = time.perf_counter()
for batch_ in trainee.batches[:2]:  # the second step also holds AdamW's state
    trainee.step(batch_)
seconds = (time.perf_counter() - start) / 2
found = {"before": before, "peak": status("VmHWM"), "seconds": seconds, "L": trainee.tokens // batch}
print(json.dumps(found))
"""


def attention_memory(quick: bool) -> Section:
    section = Section("memory", "7. Attention: peak memory of a training step against L (batch 64)")
    lengths = (256, 512, 1024, 2048) if quick else (256, 512, 1024, 2048, 4096)
    rows, points = [], []
    for length in lengths:
        done = subprocess.run(
            [sys.executable, "-c", MEMORY_CHILD, str(length), str(BATCH), str(REPO)],
            capture_output=True,
            text=True,
            check=True,
        )
        found = json.loads(done.stdout.strip().splitlines()[-1])
        step = (found["peak"] - found["before"]) / 2**30
        points.append((found["L"], found["peak"] / 2**30))
        explicit = BATCH * 4 * found["L"] ** 2 * 4 * 2 * 2 / 2**30  # (B,H,L,L) scores + weights, 2 layers
        rows.append(
            [
                found["L"],
                f"{found['peak'] / 2**30:.2f} GB",
                f"{step:.2f} GB",
                f"{explicit:.1f} GB",
                f"{found['seconds']:.1f} s",
            ]
        )
    (l0, m0), (l1, m1) = points[-2], points[-1]
    slope = (m1 - m0) / (l1 - l0)  # GB per token of L, from the two longest
    largest = int(l1 + (8 - m1) / slope) if slope > 0 else None
    section.text(
        "Two training steps (forward, backward, AdamW) of the default attention model (d_model 64, "
        "2 layers, 4 heads, d_ff 256; `max_len` raised where L > 4096) in a fresh process per L. "
        "*process peak* = peak resident memory of the whole process during the steps (Python, torch, "
        "model, batches and the steps; the peak is reset just before them); *steps* = peak minus resident "
        "memory just before. *explicit (L, L)* = what the attention scores and softmax weights alone would "
        "take if materialised (4 bytes x B x heads x L^2, kept for backward, 2 layers); "
        "`scaled_dot_product_attention` (CPU flash kernel) never materialises them, so memory grows "
        "linearly in L."
    )
    section.table(["L", "process peak", "steps", "explicit (L, L) would need", "time per step"], rows)
    if largest:
        section.text(
            f"Extrapolating linearly from the two longest L ({slope * 1024:.2f} GB per 1024 tokens): the "
            f"largest L that trains at batch 64 within 8 GB is about **{largest:,}** (process peak). "
            "Beyond 4096 set `model.max_len`."
        )
    return section


THREADS_CHILD = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[4])
from benchmarks.common import seconds_per_call
from benchmarks.training import Trainee
from longrange.datasets.coref import CorefRecall
from longrange.experiments.sweep.grid import grid_points, parse_point
name, length, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
trainee = Trainee(name, length - CorefRecall().seq_len(0))
torch.set_num_threads(count)
print(json.dumps({"seconds": seconds_per_call(trainee.step, min_time=0.3, min_calls=2)}))
"""


def thread_policy(quick: bool) -> Section:
    """1 thread against 2 threads with libgomp's default (spinning) and passive waiting, fresh processes,
    once as the machine is and once with one extra busy process of our own on it."""
    section = Section("threads", "2b. Two threads: OpenMP's spin-waiting on a shared machine")
    repeats, name, length = (1 if quick else 2), "lstm", 64
    policies = {
        "1 thread": (1, None),
        "2 threads, OMP_WAIT_POLICY unset (spin, the default)": (2, None),
        "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, "PASSIVE"),
    }

    def child(count: int, policy: str | None) -> float:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        command = [sys.executable, "-c", THREADS_CHILD, name, str(length), str(count), str(REPO)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
        return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]

    results = {}
    for condition in ("machine as found", "plus one busy process"):
        burner = None
        if condition != "machine as found":  # a pure-Python busy loop: one core's worth of other work
            burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            results[condition] = (
                alternate({k: partial(child, *v) for k, v in policies.items()}, repeats),
                load_average(),
            )
        finally:
            if burner is not None:
                burner.kill()
                burner.wait()
    rows = []
    for setting in policies:
        row = [setting]
        for found, _ in results.values():
            row += [
                f"{median(found[setting]) * 1e3:.1f} ms",
                spread(ratios(found[setting], found["1 thread"])) + "x",
            ]
        rows.append(row)
    section.text(
        f"One training step of the default {name} at L={length}, batch 64, in a fresh process per "
        "measurement (the policy is read when libgomp loads), the three settings alternated; first on the "
        "machine as it was, then with one extra busy process (`while True: pass`) started by the benchmark. "
        "With the default policy an idle OpenMP thread spins. When a core is taken by another process, "
        "the spinning thread holds the core its partner needs, and each of the thousands of small parallel "
        "regions of an RNN step waits for a scheduler time slice. `OMP_WAIT_POLICY=PASSIVE` makes idle "
        "threads sleep: robust on a shared machine, but each region then pays a wake-up, which costs more "
        "than the second thread gains for these small models."
    )
    loads = " / ".join(f"{c}: {load}" for c, (_, load) in results.items())
    section.table(
        ["setting", "step (as found)", "vs 1 thread", "step (+1 busy process)", "vs 1 thread"], rows, loads
    )
    section.text(
        "Consequence: one thread per job (the project's `threads: 1`) with parallel jobs is the robust "
        "choice on 2 cores. Where 2 threads per job are wanted on a shared machine, export "
        "`OMP_WAIT_POLICY=PASSIVE` before starting Python (it cannot be changed once torch is loaded)."
    )
    return section

"""Memory: how much a job will need, and the check that refuses a job that cannot fit, before it trains.

Nothing here is written per model: a model's own memory is *measured* (``footprint.measure``: one
training step, one inference forward and its attention maps at three short lengths, fitted in L and
scaled by the batch), once per model config and vocabulary size.

:func:`estimate` adds what a job holds besides the model's tensors, from the config alone: the process
itself (Python, torch, Lightning: :data:`PROCESS_BYTES`), parameters with gradients and AdamW's moments,
the validation and test sets (kept in memory for the whole run), the generation of their batches, and
the diagnostics at the end of training (gradient flow, the memory probe, attention maps: each bounded
by the token budget, see ``callbacks.Diagnostics``). The peak is the largest of the phases: a training
step at the longest training distance, evaluation at each evaluated distance (batches cut to at most
``resources.eval_tokens`` tokens, one sample at the least), and the diagnostics. :data:`CALIBRATION`
scales tensor bytes to resident memory (allocator overhead and fragmentation); it and
:data:`PROCESS_BYTES` are fitted against the peak resident memory of real jobs of every model
(``python -m benchmarks.memory_estimate``: measured / estimated was 0.6-0.95).

:func:`check` compares the estimate with the limit: ``resources.max_memory_gb`` when set, else what this
machine has available (MemAvailable, or the cgroup's limit when lower) shared equally by the jobs that
run at once (a sweep's parallel joblib jobs, or every job of a local submitit sweep); for SLURM jobs the
launcher's ``mem_gb``. Refusal is one line: the phase, the keys that drive it, the estimate, the limit
and what to lower.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longrange.datasets.datamodule import EVAL_BLOCK_TOKENS, samples_within
from longrange.experiments.run.config import ConfigError, ResourcesConfig
from longrange.experiments.run.footprint import Footprint, measure

GB = 2**30
PROCESS_BYTES = 500 * 2**20  # resident memory of a job before its tensors: Python, torch, Lightning, logger
CALIBRATION = 1.3  # resident bytes per tensor byte: measured 0.8-1.3 (allocator), see the module docstring
GENERATION_BYTES = {"train": 100, "eval": 2048}  # transient bytes per generated token (rejection sampling)
BATCH_TENSOR_BYTES = 24  # tokens, targets, distances: three int64 per position
# Bounds the diagnostics apply (callbacks.Diagnostics reads them here, so the estimate and the code agree):
PROBE_FIT_TOKENS = 2**21  # the memory probe's training samples are generated in pieces of this many tokens
MAP_ELEMENTS = 2**22  # attention maps: samples per chunk such that samples x L^2 <= this
MAP_MAX_LEN = 2048  # attention maps (heatmaps, attention mass) are skipped for longer sequences
DIAGNOSTIC_SAMPLES, PROBE_SAMPLES, PROBE_EVAL_SAMPLES, PROBE_CHUNK = 32, 512, 256, 128  # their defaults


# --- estimating -----------------------------------------------------------------------------------
@dataclass
class Part:
    """One phase of a job: its estimated peak (bytes, resident) and what drives it."""

    name: str
    bytes: float
    keys: str  # the config keys that set it, e.g. "data.distance=100000, train.batch_size=64"
    lower: str  # what to lower to shrink it


@dataclass
class Estimate:
    total: float  # bytes, resident, at the job's peak
    peak: Part  # the phase at the peak
    parts: list[Part] = field(default_factory=list)  # every phase (each including the fixed memory)
    fixed: float = 0.0  # process, parameters and optimiser, evaluation sets: held in every phase

    def describe(self) -> str:
        return f"{_gb(self.total)} at its peak, {self.peak.name} ({self.peak.keys})"


def _gb(size: float) -> str:
    return f"{size / GB:.{2 if size < 10 * GB else 1}f} GB"


def estimate(cfg: Any, task: Any) -> Estimate:
    """The peak resident memory of the job ``cfg`` (a composed config) on ``task`` (its constructed task)."""
    footprint = measure(_node(cfg, "model"), len(task.vocab.words))
    budget = ResourcesConfig(**_node(cfg, "resources")).eval_tokens
    batch_size, eval_samples = cfg.train.batch_size, cfg.train.eval_samples
    evaluated = _node(cfg, "data").get("eval_distance") is not None
    eval_key = "data.eval_distance" if evaluated else "data.distance"
    held = 2 * eval_samples * sum(task.seq_len(d) for d in task.eval_distances) * BATCH_TENSOR_BYTES
    fixed = PROCESS_BYTES + CALIBRATION * (held + 5 * footprint.parameters * 4)  # weights, grads, AdamW
    longest = max(task.train_distances, key=task.seq_len)
    length = task.seq_len(longest)
    step = footprint.bytes("train", batch_size, length) + batch_size * length * GENERATION_BYTES["train"]
    parts = [
        Part(
            "training step", step, f"data.distance={longest}, train.batch_size={batch_size}",
            "data.distance or train.batch_size",
        )
    ]  # fmt: skip
    for distance in task.eval_distances:
        length = task.seq_len(distance)
        samples = samples_within(budget, length, batch_size)
        generation = samples_within(EVAL_BLOCK_TOKENS, length, batch_size) * length * GENERATION_BYTES["eval"]
        parts.append(
            Part(
                "evaluation", footprint.bytes("eval", samples, length) + generation,
                f"{eval_key}={distance} ({samples} sample{'s' if samples > 1 else ''} per evaluation batch)",
                f"{eval_key} or resources.eval_tokens",
            )
        )  # fmt: skip
        parts.append(
            Part(
                "diagnostics", diagnostics_bytes(footprint, length, budget, eval_samples),
                f"{eval_key}={distance}", eval_key,
            )
        )  # fmt: skip
    for part in parts:
        part.bytes = fixed + CALIBRATION * part.bytes
    peak = max(parts, key=lambda part: part.bytes)
    return Estimate(peak.bytes, peak, parts, fixed)


def diagnostics_bytes(footprint: Footprint, length: int, budget: int, eval_samples: int) -> float:
    """Tensor bytes of ``callbacks.Diagnostics`` at the end of training, at one validation length: the
    validation answers it holds, plus the largest of the gradient flow (a backward pass on pieces of the
    token budget), the memory probe (fit samples generated in pieces, features on pieces of the budget)
    and the attention maps (``MAP_ELEMENTS / L^2`` samples at once, none past ``MAP_MAX_LEN``)."""
    answers = min(eval_samples, PROBE_EVAL_SAMPLES) * length * 8
    gradient_samples = samples_within(budget, length, min(DIAGNOSTIC_SAMPLES, eval_samples))
    gradient = footprint.bytes("train", gradient_samples, length)
    fit = samples_within(PROBE_FIT_TOKENS, length, PROBE_SAMPLES) * length * (GENERATION_BYTES["train"] + 8)
    probe = fit + footprint.bytes("eval", samples_within(budget, length, PROBE_CHUNK), length)
    maps = 0.0
    if footprint.maps is not None and length <= MAP_MAX_LEN:
        few = samples_within(MAP_ELEMENTS // max(length, 1), length, 8)  # samples x L^2 <= MAP_ELEMENTS
        maps = few * footprint.maps(length) + footprint.bytes("eval", few, length)
    return answers + max(gradient, probe, maps)


def _node(cfg: Any, key: str) -> dict:
    """A config node as a plain dict ({} when absent)."""
    from omegaconf import OmegaConf

    node = cfg.get(key) if hasattr(cfg, "get") else None
    found = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    return dict(found) if isinstance(found, dict) else {}


# --- the limit ------------------------------------------------------------------------------------
def available_memory() -> tuple[float | None, str]:
    """Bytes this machine can still give, and where the figure comes from: MemAvailable, lowered to the
    cgroup's remaining allowance where one is set (containers, SLURM's cgroups). (None, why) elsewhere."""
    found: list[tuple[float, str]] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    except OSError:
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit, usage = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and int(limit) < 2**60:
            found.append((int(limit) - int(usage), "the cgroup's memory limit"))
    if not found:
        return None, "unknown on this system"
    return min(found)


def parallel_jobs(hydra_launcher: Any, points: int) -> tuple[int, float | None]:
    """How many jobs of a sweep of ``points`` jobs run at once on this machine with this launcher, and
    the per-job memory the launcher itself reserves elsewhere (SLURM's ``mem_gb``, in bytes) if any."""
    target = str((hydra_launcher or {}).get("_target_", ""))
    if "Slurm" in target:
        mem_gb = hydra_launcher.get("mem_gb")
        return 1, (float(mem_gb) * GB if mem_gb else None)
    if "Joblib" in target:
        n_jobs = int(hydra_launcher.get("n_jobs") or 1)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        n_jobs = cores + 1 + n_jobs if n_jobs < 0 else n_jobs
        return max(1, min(n_jobs, points)), None
    if "Local" in target:  # submitit on this machine starts every job at once
        return max(1, points), None
    return 1, None


def limit(cfg: Any, parallel: int = 1, reserved: float | None = None) -> tuple[float | None, str]:
    """The memory one job may use (bytes) and a phrase saying why, for the check's message."""
    configured = ResourcesConfig(**_node(cfg, "resources")).max_memory_gb
    if configured is not None:
        return configured * GB, f"resources.max_memory_gb={configured:g}"
    if reserved is not None:
        return reserved, f"hydra.launcher.mem_gb={reserved / GB:g} per job"
    free, source = available_memory()
    if free is None:
        return None, source
    if parallel > 1:
        return free / parallel, f"{source} {_gb(free)} shared by {parallel} parallel jobs"
    return free, f"{source} on this machine"


def check(cfg: Any, task: Any, parallel: int = 1, reserved: float | None = None) -> Estimate:
    """Raise ConfigError (one line) when the job's estimate exceeds its limit; return the estimate."""
    found = estimate(cfg, task)
    allowed, why = limit(cfg, parallel, reserved)
    if allowed is not None and found.total > allowed:
        raise ConfigError(
            f"{found.peak.keys}: the job needs an estimated {_gb(found.total)} at its peak "
            f"({found.peak.name}), more than the {_gb(allowed)} allowed ({why}); lower "
            f"{found.peak.lower}, or raise resources.max_memory_gb if the estimate is wrong"
        )
    return found

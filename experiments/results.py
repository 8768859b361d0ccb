"""result.json: one file per job, written atomically; the sweep's resume and the report read only these.

A job's ``status`` is one of :data:`STATUSES`. The report adds its own for jobs without a usable file:
``missing`` (a grid point that never wrote one), ``unreadable`` and ``interrupted (stale)`` (a file that
says ``running`` while no process holds the job's lock: the process died without a word; see ``jobs``).
A job that another live process holds is skipped without writing anything: ``train()`` returns status
``skipped`` (``jobs.SKIPPED``), which never appears in a result.json.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"
DIAGNOSTICS_FILE = "diagnostics.json"  # written by callbacks.Diagnostics, drawn by the report
STATUSES = ("running", "ok", "failed", "diverged", "interrupted")  # written by train.py
REPORT_STATUSES = ("missing", "unreadable", "interrupted (stale)")  # added by the report

# Keys that say where a run lives or how it prints, not what it computes: left out of the config hash,
# so a sweep copied elsewhere (or rerun without a progress bar) is still recognised as done.
# The ``resources`` limits decide whether and in which batches a job runs, not what it computes.
NOT_HASHED = (
    "trainer.default_root_dir",
    "logger.save_dir",
    "trainer.enable_progress_bar",
    "resources.max_memory_gb",
    "resources.eval_tokens",
)


RUN_DIR = "<run>"  # stands for the run's own folder in what a config computes


def what_it_computes(config: dict) -> dict:
    """A resolved config without what says where the run lives or how it prints: the keys of
    :data:`NOT_HASHED` left out, and every path inside the run's own folder (``trainer.default_root_dir``,
    e.g. the checkpoint callback's ``dirpath``) written relative to it, ``<run>/checkpoints``."""
    root = str((config.get("trainer") or {}).get("default_root_dir") or "").rstrip("/")

    def relative(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: relative(value) for key, value in node.items()}
        if isinstance(node, list):
            return [relative(value) for value in node]
        if root and isinstance(node, str) and (node == root or node.startswith(root + "/")):
            return RUN_DIR + node[len(root) :]
        return node

    kept = relative(config)
    for key in NOT_HASHED:
        section, name = key.split(".")
        if isinstance(kept.get(section), dict):
            kept[section].pop(name, None)
            if not kept[section]:  # nothing hashed left (``resources``): as if absent, like older configs
                del kept[section]
    return kept


def config_hash(config: dict) -> str:
    """A stable hash of what a resolved config computes (:func:`what_it_computes`): equal configs give equal
    hashes, in any key order, wherever the run folder is."""
    kept = what_it_computes(config)
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_name(record: dict[str, Any]) -> str:
    """A job's model as people call it: the config-group choice (``gru``), else the backbone's class name
    in lower case (a model given as a whole node on the command line). The one place this is decided."""
    choice = (record.get("choices") or {}).get("model")
    if choice:
        return str(choice)
    target = ((record.get("config") or {}).get("model") or {}).get("_target_", "?")
    return str(target).rsplit(".", 1)[-1].lower()


def as_list(value: Any) -> list[int]:
    """A distance config value (int, list or None) as a sorted list of ints."""
    if value is None:
        return []
    return sorted(int(v) for v in value) if isinstance(value, list | tuple) else [int(value)]


def regime(config: dict[str, Any]) -> str:
    """fixed / mixed / extrapolation, from a flattened config's training and evaluation distances."""
    trained = as_list(config.get("data.distance"))
    evaluated = as_list(config.get("data.eval_distance")) or trained
    if len(trained) <= 1:
        return "fixed"
    outside = [d for d in evaluated if d < min(trained) or d > max(trained)]
    return "extrapolation" if outside else "mixed"


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"data": {"distance": 8}} -> {"data.distance": 8}"""
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file, fsync, then rename: a reader sees the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(run_dir) / RESULT_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_done(run_dir: Path, expected_hash: str) -> bool:
    """True when the run finished with status ok for exactly this config (a sweep may skip it)."""
    result = read_result(run_dir)
    if not result:
        return False
    return result.get("status") == "ok" and result.get("config_hash") == expected_hash


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux; NaN elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> None:
    """Restart this process's peak resident memory count from its current size (Linux >= 4.0), so a job
    in a reused worker measures its own peak; does nothing where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) since it started or since :func:`reset_peak_rss`, in
    MB (Linux; NaN elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    return float("nan")


def read_diagnostics(run_dir: Path, config_hash: str | None) -> dict[str, Any] | None:
    """A run's diagnostics.json with integer keys (distance D -> x -> y), or None when it is missing,
    unreadable or left over from an earlier config in the same folder (another ``config_hash``)."""
    try:
        found = json.loads((Path(run_dir) / DIAGNOSTICS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if found.get("config_hash") != config_hash:
        return None
    for key in ("gradient_norm", "probe_accuracy", "attention_mass"):
        found[key] = {int(d): _int_keys(curve) for d, curve in found.get(key, {}).items()}
    for key in ("probe_chance", "attention_uniform"):
        found[key] = {int(d): value for d, value in found.get(key, {}).items()}
    return found


def _int_keys(curve: dict[str, Any]) -> dict[Any, Any]:
    return {int(k) if k.isdigit() else k: v for k, v in curve.items()}

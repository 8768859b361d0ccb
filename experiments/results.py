"""result.json: one file per run, written atomically; the sweep's resume and the report read only these."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"
STATUSES = ("ok", "failed", "diverged", "interrupted", "running")


# Keys that say where a run lives or how it prints, not what it computes: left out of the config hash,
# so a sweep copied elsewhere (or rerun without a progress bar) is still recognised as done.
NOT_HASHED = ("trainer.default_root_dir", "logger.save_dir", "trainer.enable_progress_bar")


def config_hash(config: dict) -> str:
    """A stable hash of what a resolved config computes: equal configs give equal hashes, in any key order."""
    kept = {
        section: dict(values) if isinstance(values, dict) else values for section, values in config.items()
    }
    for key in NOT_HASHED:
        section, name = key.split(".")
        if isinstance(kept.get(section), dict):
            kept[section].pop(name, None)
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    return bool(result) and result.get("status") == "ok" and result.get("config_hash") == expected_hash


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux; NaN elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

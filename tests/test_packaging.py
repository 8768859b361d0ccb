"""The wheel works on its own: built, installed into a throwaway venv, trained from outside the checkout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def sh(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_and_trains_outside_the_checkout(tmp_path: Path) -> None:
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", ROOT)
    wheel = next((tmp_path / "dist").glob("longrange-*.whl"))
    sh(sys.executable, "-m", "venv", tmp_path / "venv")
    python = tmp_path / "venv" / "bin" / "python"
    import torch  # the CPU build this test runs with; a fresh venv would otherwise pull a CUDA build

    sh(python, "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}")
    sh(python, "-m", "pip", "install", "-q", wheel)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = "import longrange.datasets as d, longrange.conf as c; print(d.__file__, c.__file__)"
    where = sh(python, "-c", probe, cwd=elsewhere)
    assert "site-packages" in where and str(ROOT) not in where
    # no top-level `datasets` package is installed that would shadow Hugging Face's
    probe = "import importlib.util as u; print(u.find_spec('datasets'), u.find_spec('models'))"
    assert sh(python, "-c", probe, cwd=elsewhere).split() == ["None", "None"]

    run_dir = elsewhere / "run"
    sh(tmp_path / "venv" / "bin" / "longrange-train", "model=gru", "trainer=debug", "trainer.max_steps=2",
       "train.eval_samples=8", f"hydra.run.dir={run_dir}", cwd=elsewhere)  # fmt: skip
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "ok" and result["steps"] == 2


def test_static_tools_resolve_the_package_from_another_folder(tmp_path: Path) -> None:
    """``make install`` installs in editable mode as a plain path entry (no import hook): mypy, run with the
    venv's interpreter from a folder outside the checkout, finds ``longrange.models.lstm`` (an import hook
    would leave it ``import-not-found``)."""
    probe = tmp_path / "probe.py"
    probe.write_text("import longrange.models.lstm\n\nprint(longrange.models.lstm.LSTM)\n")
    command = [sys.executable, "-m", "mypy", "--python-executable", sys.executable, "--follow-imports=skip",
               "--no-incremental", str(probe)]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "import-not-found" not in done.stdout, done.stdout + done.stderr

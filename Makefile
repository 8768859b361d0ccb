# Two commands on a fresh machine: `make demo` (sweep + report) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch; on a GPU machine pip picks the matching CUDA build of the same version.
TORCH  ?= torch==2.13.0
SWEEP  ?= distance_sweep
ARGS   ?=

.PHONY: install demo test test-all test-slow lint format tensorboard bench clean

install: $(VENV)/.installed

# Editable in setuptools' "compat" mode: a plain path entry (the repository's root) in a .pth file, no import
# hook, so mypy, editors and any Python started from any folder resolve longrange.models.lstm from the files;
# a model file added later is found without reinstalling. Packages installed in the venv come first on the
# path, so the root's other folders (datasets/, models/) never shadow one of them. A second path entry holds
# the project's Hydra plugin (the longest-first sweeper), which Hydra finds only in its namespace package.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]" --config-settings editable_mode=compat
	$(BIN)/python -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], \
	  '__editable__.longrange_hydra_plugins.pth').write_text(str(pathlib.Path('experiments/sweep/plugin').resolve()) + '\n')"
	touch $@

# The demo: the headline sweep at seed 0, its mixed run and its fixed-distance run at 128 (8 of its 24 jobs,
# within 4 minutes on 2 cores); `make demo GRID= ARGS="seed=0,1,2"` runs the whole preset, as in the README.
GRID   ?= data.distance='[8,16,32,64,128]',128
OUT     = outputs/sweeps/$(SWEEP)# the demo's folder: `make demo OUT=...` (not from the environment)

demo: install
	$(BIN)/python -m longrange.experiments.train -m experiment=$(SWEEP) $(GRID) hydra.sweep.dir=$(OUT) $(ARGS)
	$(BIN)/python -m longrange.experiments.report $(OUT)

test: install
	$(BIN)/pytest -q -m "not slow"

test-slow: install
	$(BIN)/pytest -q -m slow

test-all: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

tensorboard: install
	@latest=$$(ls -td outputs/sweeps/*/ 2>/dev/null | head -n 1); \
	test -n "$$latest" || { echo "no sweep yet: run make demo first"; exit 1; }; \
	echo "TensorBoard on $$latest at http://127.0.0.1:6006"; \
	$(BIN)/tensorboard --logdir "$$latest" --host 127.0.0.1 --port 6006

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf outputs .pytest_cache

# mednas: `make demo` runs a real search on embedded demo data; `make test` runs the test suite.
# Both create .venv and install what they need. Where there is no CUDA, the CPU build of torch is installed
# first (TORCH_SPEC; on machines with a local wheel cache, torch==2.13.0 resolves to the CPU wheel), so that
# no dependency pulls a multi-gigabyte CUDA build. Set TORCH_PIP_ARGS, e.g.
# "--index-url https://download.pytorch.org/whl/cpu", to choose where the CPU wheel comes from.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
DEMO_TASK ?= tasks/demo-xray-nodule.yaml
DEMO_PRESET ?= quick-cpu
DEMO_RUN_DIR ?= runs/demo-xray-nodule
PYTEST_ARGS ?=
# Faster, steadier large CPU steps (measured in benchmarks/allocator.py); harmless elsewhere.
export MALLOC_MMAP_THRESHOLD_ ?= 17179869184
export MALLOC_TRIM_THRESHOLD_ ?= 17179869184
export MALLOC_TOP_PAD_ ?= 1073741824

.PHONY: demo test test-slow install lint sizes typecheck clean docs

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(PIP) install torch $(TORCH_PIP_ARGS); \
	else \
		$(PIP) install "$(TORCH_SPEC)" $(TORCH_PIP_ARGS); \
	fi
	@touch $@

$(VENV)/.installed-demo: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[demo]"
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[test]"
	@touch $@ $(VENV)/.installed-demo

install: $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(VENV)/bin/mednas search $(DEMO_TASK) --preset $(DEMO_PRESET) --run-dir $(DEMO_RUN_DIR)

# `make test` must stay within 6 minutes on a 2-core CPU machine (PostgreSQL tests included, as .ci/run runs them):
# tests that start processes (`mednas`, `python -m monai.bundle`, Chromium), kill processes or run several workers are
# marked `slow` (some are the only test of an issue's Done-when item, as their comments say: CI runs both sets) and
# real searches come from shared session fixtures. The slowest durations are printed so that the budget stays visible; pyproject.toml sets a per-test
# timeout. .ci/run runs `make test`, then `make test-slow` as a second step.
# In a fresh-clone .ci/run on the 2-core machine (2026-12-02, commit a4fc087): `make test` 999 passed in 4 min 37 s,
# `make test-slow` 54 passed in 12 min 23 s (PostgreSQL ones included; the two `monai.bundle run` tests, which need
# pytorch-ignite, skipped).
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "not slow and not gpu" --durations=15 $(PYTEST_ARGS)

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "slow and not gpu" --durations=15 $(PYTEST_ARGS)

# Style and size (issue 16): ruff's rules (per function in mednas/: cyclomatic complexity <= 20, at most 50
# statements; see pyproject.toml), ruff's formatter, and no function in mednas/ over 80 lines
# (tools/check_function_size.py; its docstring says what counts). .ci/run runs it. `make sizes` runs only the
# length check.
lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check mednas tests benchmarks tools
	$(VENV)/bin/ruff format --check mednas tests benchmarks tools
	$(PY) tools/check_function_size.py --max-lines 80 mednas

sizes: $(VENV)/.installed-test
	$(PY) tools/check_function_size.py --max-lines 80 mednas

typecheck: $(VENV)/.installed-test
	$(PIP) install -q mypy && $(VENV)/bin/mypy mednas

docs: $(VENV)/.installed-test
	$(PY) -m mednas.config.reference > docs/task-reference.md

clean:
	rm -rf $(VENV) runs .pytest_cache

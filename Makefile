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

.PHONY: demo test test-slow install lint typecheck clean docs

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

# `make test` must stay within 8 minutes on a 2-core CPU machine (PostgreSQL tests included, as .ci/run runs them):
# tests that repeat what a fast test covers (subprocess kills, repeated end-to-end searches) are marked `slow` and
# run by `make test-slow`. The slowest durations are printed so that the budget stays visible; pyproject.toml
# sets a per-test timeout.
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "not slow and not gpu" --durations=15 $(PYTEST_ARGS)

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -q -m "slow and not gpu" --durations=15 $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check mednas tests benchmarks

typecheck: $(VENV)/.installed-test
	$(PIP) install -q mypy && $(VENV)/bin/mypy mednas

docs: $(VENV)/.installed-test
	$(PY) -m mednas.config.reference > docs/task-reference.md

clean:
	rm -rf $(VENV) runs .pytest_cache

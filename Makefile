# Two targets do all set-up on a fresh machine: `make demo` and `make test`.
# A .venv is created when missing. When that environment has no importable torch, the CPU build
# torch==$(TORCH_VERSION) is installed first (TORCH_INDEX may name a CPU-only wheel index), so pip never
# pulls a multi-GB CUDA build; a torch already in the environment is kept. VENV=path uses your own venv.

VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint bench install clean-venv

$(PY):
	python3 -m venv $(VENV)

define ensure_torch
	@$(PY) -c "import torch" 2>/dev/null || { echo "installing the CPU build of torch $(TORCH_VERSION)"; \
	  $(PIP) install "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)); }
endef

$(VENV)/.flatpriv-installed: $(PY) pyproject.toml
	$(ensure_torch)
	$(PIP) install -e ".[test,ray]"
	@touch $@

install: $(VENV)/.flatpriv-installed

demo: install
	$(VENV)/bin/flatpriv train --preset default --out runs/demo
	$(VENV)/bin/flatpriv train --preset sam --out runs/demo
	@echo "results: runs/demo/ (one directory per run: summary.json, metrics.jsonl, arrays/)"

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/step_time.py

clean-venv:
	rm -rf $(VENV)

# Two targets do all set-up on a fresh machine: `make demo` and `make test`.
# A .venv is created when missing. When that environment has no importable torch, the CPU build
# torch==$(TORCH_VERSION) is installed first (TORCH_INDEX may name a CPU-only wheel index), so pip never
# pulls a multi-GB CUDA build; a torch already in the environment is kept. VENV=path uses your own venv.

VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test test-browser lint bench install clean-venv

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
	$(VENV)/bin/flatpriv study sam-privacy --quick --out runs/demo

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest

# The report-rendering test needs a real browser: Debian's headless Chromium (root, apt).
test-browser: install
	command -v chromium-headless-shell >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium-headless-shell; }
	$(PY) -m pytest tests/test_study_run.py -k chromium -p no:cacheprovider

bench: install
	$(PY) benchmarks/step_time.py

clean-venv:
	rm -rf $(VENV)

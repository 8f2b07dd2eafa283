# Two targets do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv first (torch 2.13.0 CPU wheel, Triton for the kernel interpreter tests,
# this package in editable mode with its test extra). On a machine that already has a CUDA
# torch, set VENV_FLAGS=--system-site-packages to reuse it.
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -c "import triton" 2>/dev/null || $(PY) -m pip install -q triton==3.6.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV)

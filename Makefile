# The two set-up commands: `make demo` and `make test`. Both install into .venv first.
# torch==2.13.0 is installed on its own first: a CPU wheel of it is on the dev/CI machines, and any looser
# torch request would pull a multi-GB CUDA build. The Dockerfile runs the same steps.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[all,dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/edgecompress build recipes/quickstart.yaml

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not integration and not slow"

bench: demo
	$(PY) benchmarks/official_tools.py
	$(PY) benchmarks/official_tools.py --report runs/quickstart/report.json
	$(PY) benchmarks/int8_parity.py
	$(PY) benchmarks/suite.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

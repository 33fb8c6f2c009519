# The two set-up commands: `make demo` and `make test`. Both install into .venv first.
# torch==2.13.0 is installed on its own first: a CPU wheel of it is on the dev/CI machines, and any looser
# torch request would pull a multi-GB CUDA build. The Dockerfile runs the same steps.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# The SSH runner's tests profile on a loopback "board" whose Python has numpy and ai-edge-litert only (no
# torch, no OpenVINO, no edgecompress), as a Raspberry Pi would; a plain system Python where there is one.
BOARD := .board
BOARD_PYTHON ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo $(PYTHON))
# System packages the tests need (a real sshd for the SSH runner), installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-packages demo test test-fast bench bench-official bench-int8 bench-suite bench-budget bench-budget-long bench-sparsity bench-sparsity-long bench-sparsity-mlp bench-frameworks lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[all,dev]"
	touch $(STAMP)

$(BOARD)/.installed: $(STAMP)
	rm -rf $(BOARD)
	$(BOARD_PYTHON) -m venv --without-pip $(BOARD)
	$(PIP) --python $(BOARD)/bin/python install --quiet numpy "ai-edge-litert>=2.3,<2.4"
	touch $@

# headless chromium renders report.html in its test
system-packages:
	@missing=""; \
	{ command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; } || missing="$$missing openssh-server openssh-client procps"; \
	{ command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } || missing="$$missing chromium"; \
	command -v adb >/dev/null 2>&1 || missing="$$missing adb"; \
	command -v ssh-keygen >/dev/null 2>&1 || missing="$$missing openssh-client"; \
	command -v pkill >/dev/null 2>&1 || missing="$$missing procps"; \
	command -v perf >/dev/null 2>&1 || missing="$$missing linux-perf"; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages the tests need:$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

demo: install
	$(VENV)/bin/edgecompress build recipes/quickstart.yaml

test: install system-packages $(BOARD)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not integration and not slow"

# `make bench` runs every part; each part runs on its own and states its time in benchmarks/RESULTS.md.
bench: bench-official bench-int8 bench-suite bench-budget bench-sparsity bench-frameworks

# edgecompress's latency figures against litert-benchmark / benchmark_app (about 10 minutes)
bench-official: demo
	$(PY) benchmarks/official_tools.py
	$(PY) benchmarks/official_tools.py --report runs/quickstart/report.json

# int8 that is never slower: precision plans, round_to auto, the latency model (about 40 minutes)
bench-int8: install
	$(PY) benchmarks/int8_suite.py

# the issue-3 suite: prune + int8 at 224, hand chain vs edgecompress on digits (about 30 minutes)
bench-suite: install
	$(PY) benchmarks/int8_parity.py
	$(PY) benchmarks/suite.py

# latency-budget pruning vs uniform, MAC-target and the hand chain on digits-deformed, MobileNetV2-style
# (under 60 minutes on 2 cores); bench-budget-long: both MobileNetV2- and MobileNetV3-style, more data and epochs
bench-budget: install
	$(PY) benchmarks/budget_suite.py

bench-budget-long: install
	$(PY) benchmarks/budget_suite.py --long

# pattern sparsity on digits-deformed: accuracy, size (gzip/zstd) and speed against the dense twins per pattern
# (global magnitude, 1x4 / 4x4 blocks, 2:4, kernel patterns; under 45 minutes on 2 cores);
# bench-sparsity-long: the full curves (50-90% in steps of 10, 1:4), more data and epochs (about 3 hours)
bench-sparsity: install
	$(PY) benchmarks/sparsity_suite.py

bench-sparsity-long: install
	$(PY) benchmarks/sparsity_suite.py --long

# OpenVINO's sparse weight decompression (int8 FullyConnected, AMX CPUs) on an FC-heavy model: digits_mlp
# hidden 2048, the Linear-layer methods, openvino-int8 compiled with sparse_weights_decompression_rate 0.5
bench-sparsity-mlp: install
	$(PY) benchmarks/sparsity_suite.py --model mlp

# the PyTorch and Keras quickstarts side by side: accuracy, MACs, size and latency (interleaved rounds; about
# 3 minutes on 2 cores)
bench-frameworks: install
	$(PY) benchmarks/frameworks_suite.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) $(BOARD) runs .pytest_cache .ruff_cache

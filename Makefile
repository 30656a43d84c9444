# Two entry points, both self-contained on a fresh machine: `make demo` and `make test`.
# Each creates (or refreshes, when pyproject.toml changes) the local virtualenv in $(VENV).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean venv system-deps

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "traffic-lanes needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

# Debian packages some tests need (browser, Prometheus, kubectl...): .ci/apt-packages.txt, as root.
system-deps:
	bash .ci/system-deps

demo: $(STAMP)
	$(BIN)/lanes demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q

# Speed is measured here, never in the tests. bench_proxy pins processes to cores and installs wrk
# (a Debian package) when it is missing; see bench/README.md.
bench: $(STAMP)
	$(BIN)/python bench/bench_propagation.py
	$(BIN)/python bench/bench_render.py
	$(BIN)/python bench/bench_controller.py
	$(BIN)/python bench/bench_proxy.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

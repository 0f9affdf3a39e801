# The two commands a newcomer types: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SPEC   ?= models/breast_cancer_mlp.toml

export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test test-all bench docs install js clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[toolchain,dev,serve,distributed,images,strings,peers]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/seqdeploy pipeline $(SPEC)

test: $(STAMP) js
	$(BIN)/python -m pytest -q

test-all: $(STAMP) js
	$(BIN)/python -m pytest -q -m ''

# The Node and browser clients (examples/node_client, examples/web; tests/test_node_client.py, tests/test_web.py):
# their npm packages from the lock files (no install scripts) and, as root, Debian's chromium. What cannot be
# installed is reported here and the tests that need it skip, saying why.
JS_DIRS := examples/node_client examples/web
js:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; command -v npm >/dev/null || missing=" nodejs npm"; command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then echo "make js: apt-get install$$missing"; \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing) >/dev/null \
	    || echo "make js: WARNING apt-get install$$missing failed: the Node/browser tests will skip" >&2; fi; fi
	@command -v chromium >/dev/null || echo "make js: WARNING no chromium (apt-get install chromium as root): tests/test_web.py will skip" >&2
	@if ! command -v npm >/dev/null; then echo "make js: WARNING no npm: tests/test_node_client.py and tests/test_web.py will skip" >&2; \
	else for d in $(JS_DIRS); do \
	  [ $$d/node_modules/.package-lock.json -nt $$d/package-lock.json ] \
	  || (cd $$d && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) \
	  || echo "make js: WARNING npm ci failed in $$d: its tests will skip" >&2; done; fi

# Regenerate the tables that tests produce (export coverage, reliability) and copy them into the README.
docs: $(STAMP)
	SEQDEPLOY_WRITE_DOCS=1 $(BIN)/python -m pytest -q -m '' tests/test_export_coverage.py tests/test_reliability.py
	$(BIN)/python tools/sync_readme.py

bench: $(STAMP)
	$(BIN)/python benchmarks/run_zoo.py

clean:
	rm -rf runs benchmarks/work

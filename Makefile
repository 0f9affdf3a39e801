# The two commands a newcomer types: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SPEC   ?= models/breast_cancer_mlp.toml

export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: demo test test-all bench docs install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[toolchain,dev,serve,distributed]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/seqdeploy pipeline $(SPEC)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

# Regenerate the tables that tests produce (export coverage, reliability) and copy them into the README.
docs: $(STAMP)
	SEQDEPLOY_WRITE_DOCS=1 $(BIN)/python -m pytest -q -m '' tests/test_export_coverage.py tests/test_reliability.py
	$(BIN)/python tools/sync_readme.py

bench: $(STAMP)
	$(BIN)/python benchmarks/run_zoo.py

clean:
	rm -rf runs benchmarks/work

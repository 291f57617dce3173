# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs canao with pinned dependencies, runs a short search
#   make test   the same set-up if needed, then the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.canao-installed
DEMO_TRIALS ?= 6

.PHONY: demo test test-fast lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/canao search --space search_spaces/vit_digits.yaml --target tvm_targets/host-cpu.json \
	    --study demo-$$(date +%Y%m%d-%H%M%S) --trials $(DEMO_TRIALS)

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check canao tests benchmarks

clean:
	rm -rf $(VENV) canao_artifacts canao.db .pytest_cache

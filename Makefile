# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs canao with pinned dependencies, runs a short search
#   make test   the same set-up if needed, then the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.canao-installed
DEMO_TRIALS ?= 6

.PHONY: demo test test-fast lint clean cross-tools browser-tools compose-tools
CROSS_CXX := aarch64-linux-gnu-g++

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/canao search --space search_spaces/vit_digits.yaml --target tvm_targets/host-cpu.json \
	    --study demo-$$(date +%Y%m%d-%H%M%S) --trials $(DEMO_TRIALS)

# Debian's cross compiler for the aarch64 target profile (needs root; skipped with a warning).
cross-tools:
	@command -v $(CROSS_CXX) >/dev/null 2>&1 || { \
	  echo "installing Debian's g++-aarch64-linux-gnu for tvm_targets/aarch64-linux.json"; \
	  { apt-get install -y -q g++-aarch64-linux-gnu || \
	    { apt-get update -q && apt-get install -y -q g++-aarch64-linux-gnu; }; } >/dev/null 2>&1 || \
	  echo "warning: could not install g++-aarch64-linux-gnu; the cross-compiling test will skip"; }

# Debian's chromium and its driver for the Pareto page's browser test (selenium drives them;
# needs root; skipped with a warning, and that test then skips, except under CI=true).
browser-tools:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium and chromium-driver for tests/test_service_e2e.py"; \
	  { apt-get install -y -q chromium chromium-driver || \
	    { apt-get update -q && apt-get install -y -q chromium chromium-driver; }; } >/dev/null 2>&1 || \
	  echo "warning: could not install chromium; the browser test will skip"; }

# A Compose client to validate docker/compose.yaml (this machine has the docker client without
# its compose plugin; Debian's docker-compose reads the same file). Needs root; the check skips
# without it.
compose-tools:
	@{ docker compose version || command -v docker-compose; } >/dev/null 2>&1 || { \
	  echo "installing Debian's docker-compose to validate docker/compose.yaml"; \
	  { apt-get install -y -q docker-compose || \
	    { apt-get update -q && apt-get install -y -q docker-compose; }; } >/dev/null 2>&1 || \
	  echo "warning: could not install docker-compose; the compose validation will skip"; }

test: $(STAMP) cross-tools browser-tools compose-tools
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check canao tests benchmarks
	$(BIN)/mypy canao

clean:
	rm -rf $(VENV) canao_artifacts canao_service canao.db canao.db.canao-worker.lock .pytest_cache

# A newcomer's two commands: `make demo` and `make test`. Both create .venv themselves.
# The first Python 3.11 or 3.12 that really runs (pyenv shims exist for versions not selected).
# 3.11 first: the CPU build of torch that the batch extra pins lies on disk for 3.11.
PYTHON ?= $(shell for p in python3.11 python3.12 python3; do \
	$$p -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12)' 2>/dev/null \
	&& command -v $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP_PC := $(VENV)/.installed-pc
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: demo test lint typecheck pytest bench bench-quick check-fresh browser-deps broker-deps clean antgen-households

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11 or 3.12 is needed (python3.11 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP_PC): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[pc,agent]'
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(STAMP_PC)

demo: $(STAMP_PC)
	$(BIN)/nilm demo

# The browser test drives Debian's chromium; install it once if apt is there and it is missing.
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "could not install chromium; the browser test will say so"; \
	  fi; \
	fi

lint: $(STAMP_DEV)
	$(BIN)/ruff check .

typecheck: $(STAMP_DEV)
	$(BIN)/mypy

# The Home Assistant tests run a real MQTT broker: Debian's mosquitto, installed the same way.
broker-deps:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null) \
	    || echo "could not install mosquitto; the Home Assistant tests will say so"; \
	  fi; \
	fi

# Two pytest processes (pytest-xdist; the tests share no port, file or folder): on an idle 2-core
# machine the suite takes 3 min 50 s instead of 5 min 36 s. `make test PYTEST_ARGS=` runs it in one.
PYTEST_ARGS ?= -n 2
pytest: $(STAMP_DEV) browser-deps broker-deps
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# Every benchmark runs, even after one misses its goal; the target fails if any did.
bench: $(STAMP_DEV)
	$(BIN)/pip install -q -e '.[bench]'
	@failed=""; for b in benchmarks/bench_*.py; do \
	  echo "== $$b"; $(BIN)/python $$b || failed="$$failed $$b"; done; \
	test -z "$$failed" || { echo "goals missed or failed:$$failed"; exit 1; }

# Each benchmark in its quick mode (about a minute each), new ones included as they appear.
bench-quick: $(STAMP_DEV)
	$(BIN)/pip install -q -e '.[bench]'
	@failed=""; for b in benchmarks/bench_*.py; do \
	  echo "== $$b --quick"; start=$$(date +%s); \
	  $(BIN)/python $$b --quick || failed="$$failed $$b"; \
	  echo "== $$b took $$(( $$(date +%s) - start )) s"; done; \
	test -z "$$failed" || { echo "goals missed or failed:$$failed"; exit 1; }

# `make test` on N fresh clones (default 5), each under its own PYTHONHASHSEED, a core kept busy.
check-fresh:
	.ci/check-fresh $(N)

# Independent households (benchmarks/antgen/README.md): ANTgen runs in its own .venv-antgen.
antgen-households: $(STAMP_PC)
	$(BIN)/python benchmarks/antgen/generate.py --all

clean:
	rm -rf $(VENV) .venv-antgen benchmarks/antgen/cache .pytest_cache .mypy_cache .ruff_cache

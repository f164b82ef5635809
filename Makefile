# make test: venv + install + Debian packages the tests need + pytest.  make demo: see README.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: install test lint demo system-deps clean bench bench-deps bench-viewer bench-instructions

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,test]"
	touch $@

install: $(VENV)/.installed

# redis-server for the Redis dedup-store tests (real server on a loopback port); chromium for the
# report viewer's browser test (driven by Playwright, never Playwright's own browser download).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq || true; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null \
	      || echo "warning: could not install$$missing; the tests that need them will be skipped"; \
	  else echo "warning: apt-get unavailable; missing:$$missing (their tests will be skipped)"; fi; \
	fi

test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff (pyflakes, pycodestyle, isort, bugbear, pyupgrade) and mypy (strict on the core): pyproject.toml [tool.*].
lint: install
	$(PY) -m ruff check src tests bench examples
	$(PY) -m mypy

demo: install
	$(PY) examples/demo.py

# Report viewer listing 10,000 reports (issue 5): prints timings beside budgets, exit 1 if over.
bench-viewer: install
	$(PY) bench/viewer_list.py $(BENCH_VIEWER_ARGS)

# wrk (Debian) drives the real-server part of the bench; bench/run.py falls back to a Python client.
bench-deps:
	@command -v wrk >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "warning: wrk missing and apt-get unavailable; the bench uses its Python load client"; fi; }

# Overhead benchmark (issue 6): prints the tables and goals, writes bench/results.md. BENCH_ARGS=--quick for a smoke run.
bench: install bench-deps
	$(PY) bench/run.py $(BENCH_ARGS)

# CPU instructions per request under valgrind (deterministic, unlike wall time on a shared VM).
bench-instructions: install
	@command -v valgrind >/dev/null 2>&1 || { (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	$(PY) bench/instructions.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) perfmon-reports .pytest_cache

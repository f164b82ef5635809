# make test: venv + install + Debian packages the tests need + lint (ruff, mypy) + pytest.  make demo: see README.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: install test soak lint demo system-deps clean bench bench-deps bench-viewer bench-instructions speedscope-assets

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all,test]"
	touch $@

install: $(VENV)/.installed speedscope-assets

# speedscope's built flame-graph viewer (npm package, pinned and checked), which the report viewer
# serves itself; git-ignored. Without npm or the registry the viewer offers the .speedscope.json only.
SPEEDSCOPE_VERSION := 1.25.0
SPEEDSCOPE_SHA256 := 2831f1e0d26df914b477e522d78b8485511495a6af81a0b88158f8b48f9e0d03
SPEEDSCOPE_DIR := src/otel_perfmon/viewer/static/speedscope
speedscope-assets:
	@if [ "$$(head -n 1 $(SPEEDSCOPE_DIR)/release.txt 2>/dev/null)" = "speedscope@$(SPEEDSCOPE_VERSION)" ]; then exit 0; fi; \
	if ! command -v npm >/dev/null 2>&1; then \
	  echo "warning: npm unavailable; the viewer's flame graph offers the .speedscope.json download only"; exit 0; fi; \
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	npm pack --silent --pack-destination "$$tmp" speedscope@$(SPEEDSCOPE_VERSION) >/dev/null && \
	echo "$(SPEEDSCOPE_SHA256)  $$tmp/speedscope-$(SPEEDSCOPE_VERSION).tgz" | sha256sum -c --quiet - && \
	tar -xzf "$$tmp/speedscope-$(SPEEDSCOPE_VERSION).tgz" -C "$$tmp" package/dist/release package/LICENSE && \
	cp "$$tmp/package/LICENSE" "$$tmp/package/dist/release/LICENSE" && \
	rm -rf $(SPEEDSCOPE_DIR) && cp -R "$$tmp/package/dist/release" $(SPEEDSCOPE_DIR) \
	  || { rm -rf $(SPEEDSCOPE_DIR); \
	       echo "warning: could not fetch speedscope $(SPEEDSCOPE_VERSION); the flame graph offers the .speedscope.json download only"; }

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

test: install system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Load soak (issue 15): gunicorn -w 4, uvicorn --workers 4 (SQLite) and both on one Redis, 64 clients
# for SOAK_SECONDS (default 120) per case; prints a SOAK line per case. Not part of `make test`.
soak: install system-deps
	$(PY) -m pytest tests/soak -m soak -s $(PYTEST_ARGS)

# ruff (pyflakes, pycodestyle, isort, bugbear, pyupgrade) and mypy (strict on the core): pyproject.toml [tool.*].
lint: install
	$(PY) -m ruff check src tests bench examples
	$(PY) -m mypy

demo: install
	$(PY) examples/demo.py

# Report viewer listing 10,000 reports (issue 5): prints timings beside budgets, exit 1 if over.
bench-viewer: install
	$(PY) -m bench.viewer_list $(BENCH_VIEWER_ARGS)

# wrk (Debian) drives the real-server part of the bench; bench/load.py falls back to a Python client.
bench-deps:
	@command -v wrk >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "warning: wrk missing and apt-get unavailable; the bench uses its Python load client"; fi; }

# Overhead benchmark (issue 6) and call-tree quality / sampler cost: prints the tables and goals, writes
# bench/results.md. BENCH_ARGS=--quick for a smoke run; BENCH_ARGS="--only quality,sampler" for some sections.
bench: install bench-deps
	$(PY) bench/run.py $(BENCH_ARGS)

# CPU instructions per request under valgrind (deterministic, unlike wall time on a shared VM).
bench-instructions: install
	@command -v valgrind >/dev/null 2>&1 || { (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	$(PY) -m bench.instructions $(BENCH_ARGS)

clean:
	rm -rf $(VENV) perfmon-reports .pytest_cache

# Each target installs what it needs into .venv on first use (uv, pinned by uv.lock).
PYTHON ?= python3
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-runtime
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

.PHONY: install install-runtime browser run test test-fast test-real check lint format bench clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==0.13.8

# Everything: the runtime, the dev group (tests, linters) and the `otel` extra (its tests run in the suite).
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra otel --python $(PYTHON)
	touch $@ $(RUN_STAMP)

# What running needs and nothing more (no test or lint tools); --inexact keeps anything a test run installed.
$(RUN_STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --no-default-groups --inexact --python $(PYTHON)
	touch $@

install: $(STAMP)

install-runtime: $(RUN_STAMP)

run: install-runtime  ## start the server (embedded PostgreSQL when CHINWAG_DATABASE_URL is unset)
	$(VENV)/bin/chinwag serve $(ARGS)

test: install browser  ## the whole suite (the real tier builds llama-server into ~/.cache/chinwag once: ~9 min on 2 cores)
	$(VENV)/bin/pytest $(ARGS)

test-fast: install browser  ## the suite without the real model server tier
	$(VENV)/bin/pytest -m "not real" $(ARGS)

test-real: install  ## only the real tier: a real llama.cpp server and a real small model
	$(VENV)/bin/pytest -m real $(ARGS)

# The browser tests drive Debian's Chromium at /usr/bin/chromium (never a browser download of Playwright's own).
# Installed here when missing, if apt-get is there and we are root; otherwise those tests skip, or fail under
# CHINWAG_REQUIRE_SERVICES=1, saying why.
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium for the browser tests (apt-get)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
			|| echo "chromium could not be installed: the browser tests will say so"; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

check: lint test

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install  ## every benchmark; each prints a table
	$(VENV)/bin/python -m bench.history
	$(VENV)/bin/python -m bench.stream
	$(VENV)/bin/python -m bench.tools

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache

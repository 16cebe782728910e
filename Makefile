# authsvc — the two commands:
#   make run    set everything up (system packages, virtualenv, database, demo) and start the provider
#   make test   run the whole test suite, on SQLite and again on PostgreSQL when it answers
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP := $(VENV)/.installed-test
HOST ?= 127.0.0.1
PORT ?= 5000
export AUTHSVC_INSTANCE_DIR ?= $(CURDIR)/instance

# Debian packages: what running needs, and what the tests need on top.
APT_RUN := python3-venv softhsm2 opensc
APT_TEST := $(APT_RUN) chromium nodejs npm
# the openid-client driver of tests/interop: npm ci when node_modules is missing or the lock changed
INTEROP_JS := tests/interop/js
INTEROP_STAMP := $(INTEROP_JS)/node_modules/.authsvc-npm-ci

.PHONY: help run test setup system-packages-run system-packages-test test-sqlite test-postgresql lint bench clean

help:
	@echo "make run    set up and start authsvc with its demo on http://$(HOST):$(PORT)"
	@echo "make test   run every test (SQLite, then PostgreSQL when it answers)"

# A package counts as installed when dpkg has it or an installed package provides it (NodeSource's
# nodejs provides npm, and conflicts with Debian's).
define apt_install
	@missing=""; for p in $(1); do \
	  dpkg -s $$p >/dev/null 2>&1 && continue; \
	  dpkg-query -W -f='$${db:Status-Abbrev} $${Provides}\n' 2>/dev/null | grep '^ii ' \
	    | grep -Eq "[ ,]$$p( |,|$$)" && continue; \
	  missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

system-packages-run:
	$(call apt_install,$(APT_RUN))

system-packages-test:
	$(call apt_install,$(APT_TEST))

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "error: authsvc needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP_RUN): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	touch $@ $(STAMP_RUN)

setup: system-packages-run $(STAMP_RUN)

run: setup
	$(BIN)/authsvc db upgrade
	PORT=$(PORT) $(BIN)/python demo/run.py

# The PostgreSQL run is skipped, loudly, when the server does not answer; with
# AUTHSVC_TEST_REQUIRE_PG=1 (as CI sets) that is a failure instead.
test: system-packages-test $(STAMP) $(INTEROP_STAMP)
	$(BIN)/python -m pytest --db=sqlite
	@if $(BIN)/python tests/pg_probe.py; then \
	  $(BIN)/python -m pytest --db=postgresql; \
	elif [ -n "$$AUTHSVC_TEST_REQUIRE_PG" ]; then \
	  echo "*** PostgreSQL is required (AUTHSVC_TEST_REQUIRE_PG) and does not answer ***"; exit 1; \
	else \
	  echo; echo "*** PostgreSQL does not answer: the PostgreSQL run is SKIPPED ***"; echo; \
	fi

$(INTEROP_STAMP): $(INTEROP_JS)/package.json $(INTEROP_JS)/package-lock.json | system-packages-test
	@if command -v node >/dev/null 2>&1; then \
	  node -e 'process.exit(parseInt(process.versions.node, 10) < 20 ? 1 : 0)' || \
	    { echo "*** node $$(node --version) is too old for tests/interop: Node.js 20+ is needed ***"; exit 1; }; \
	  npm ci --prefix $(INTEROP_JS) --no-audit --no-fund && touch $@; \
	else \
	  echo; echo "*** node is missing: the openid-client tests (tests/interop) are SKIPPED ***"; echo; \
	fi

test-sqlite: $(STAMP)
	$(BIN)/python -m pytest --db=sqlite $(ARGS)

test-postgresql: $(STAMP)
	$(BIN)/python -m pytest --db=postgresql $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check authsvc migrations tests bench softhsm demo
	$(BIN)/ruff format --check authsvc migrations tests bench softhsm demo

# the OIDC benchmark drives authsvc and the peer (node oidc-provider) with Debian's wrk
.PHONY: system-packages-bench
system-packages-bench:
	$(call apt_install,wrk nodejs npm)

# every figure of docs/performance.md, one benchmark after the other, then the table of targets
# (bench/targets.py); about 30 minutes in all; run it on a machine doing nothing else
bench: system-packages-bench $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/directory_import.py --results bench/results
	$(BIN)/python bench/in_process.py --results bench/results
	$(BIN)/python bench/in_process.py --db postgresql --results bench/results
	$(BIN)/python bench/smartcard_verify.py --results bench/results
	$(BIN)/python bench/signin.py --results bench/results
	$(BIN)/python bench/scale.py --results bench/results
	$(BIN)/python bench/start.py --results bench/results
	$(BIN)/python bench/start.py --db postgresql --results bench/results
	$(BIN)/python bench/oidc_vs_peer.py --db both --results bench/results
	$(BIN)/python bench/token_floor.py --results bench/results
	$(BIN)/python bench/token_floor.py --threads 16 --results bench/results
	$(BIN)/python bench/plot.py
	$(BIN)/python bench/targets.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# Two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CMP_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(CMP_DATA_DIR)/dagster_home
DEMO_ACCOUNTS ?= 1000

.PHONY: run test test-fast test-slow test-pg demo bench lint install install-dev prepare clean-data

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

prepare: install
	$(BIN)/cmp-pipelines init
	$(BIN)/cmp-pipelines keys init
	$(BIN)/cmp-pipelines demo seed --accounts $(DEMO_ACCOUNTS) --seed 42
	@if [ -z "$$(find $(CMP_DATA_DIR)/inbound/nrp -type f 2>/dev/null | head -1)" ] \
		&& [ ! -d $(CMP_DATA_DIR)/archive/nrp ]; then $(BIN)/cmp-pipelines demo files; fi
	$(BIN)/cmp-pipelines demo cards
	$(BIN)/cmp-pipelines run-card-payments
	@if [ -z "$$(find $(CMP_DATA_DIR)/inbound/card_rejections -type f 2>/dev/null | head -1)" ] \
		&& [ ! -d $(CMP_DATA_DIR)/archive/card_rejections ]; then $(BIN)/cmp-pipelines demo card-rejections; fi
	$(BIN)/cmp-pipelines demo direct-debit
	$(BIN)/cmp-pipelines run-auddis
	$(BIN)/cmp-pipelines run-dd-collections
	@if [ -z "$$(find $(CMP_DATA_DIR)/inbound/arudd -type f 2>/dev/null | head -1)" ] \
		&& [ ! -d $(CMP_DATA_DIR)/archive/arudd ]; then $(BIN)/cmp-pipelines demo bacs-reports; fi
	$(BIN)/cmp-pipelines demo orders
	@if [ -z "$$(find $(CMP_DATA_DIR)/inbound/warehouse_dispatch -type f 2>/dev/null | head -1)" ] \
		&& [ ! -d $(CMP_DATA_DIR)/archive/warehouse_dispatch ]; then $(BIN)/cmp-pipelines demo warehouse-dispatch; fi
	@if [ -z "$$(find $(CMP_DATA_DIR)/inbound/billing -type f 2>/dev/null | head -1)" ] \
		&& [ ! -d $(CMP_DATA_DIR)/archive/billing ]; then $(BIN)/cmp-pipelines demo billing-run; fi

## make run: install, prepare demo data, start the Dagster UI and daemon (`dg dev`) on 127.0.0.1:$(UI_PORT)
## and the HTTP API on 127.0.0.1:$(API_PORT) in the background (stopped with the UI), and a local SMTP catcher on
## 127.0.0.1:$(SMTP_PORT) that keeps every alert and customer e-mail in data/mailbox (`cmp-pipelines messages list`)
API_PORT ?= 8000
UI_PORT ?= 3000
SMTP_PORT ?= 2525
# the code server's threads and its proxy's under `dg dev`: one per sensor (a waiting inbound tick holds one) and some to spare
# (lib/inbound_sensor.CODE_SERVER_THREADS; without it the inbound sensors poll every 5 s instead of waiting)
CODE_SERVER_THREADS ?= 24
run: prepare
	$(BIN)/cmp-pipelines api keys init
	$(BIN)/cmp-pipelines smtp-catcher --host 127.0.0.1 --port $(SMTP_PORT) & smtp_pid=$$!; \
	$(BIN)/cmp-pipelines api serve --host 127.0.0.1 --port $(API_PORT) & api_pid=$$!; \
	trap 'kill $$api_pid $$smtp_pid 2>/dev/null' EXIT; \
	CMP_SMTP_HOST=127.0.0.1 CMP_SMTP_PORT=$(SMTP_PORT) \
	DAGSTER_GRPC_MAX_WORKERS=$(CODE_SERVER_THREADS) DAGSTER_CODE_SERVER_MAX_WORKERS=$(CODE_SERVER_THREADS) \
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg dev --host 127.0.0.1 --port $(UI_PORT)

## make demo: the same without the UI: process the sample files headless and print a summary
demo: prepare
	$(BIN)/cmp-pipelines run-pending
	$(BIN)/cmp-pipelines summary

## make test: install dev dependencies and run the WHOLE suite (what CI runs), slow end-to-end tests included,
## spread over $(TEST_WORKERS) processes by pytest-xdist (each crash-point sweep is split into shards)
## make test-fast: the core and flow unit tests only (no slow, no e2e, no postgres: no real processes or servers),
## for the edit-test loop
## make test-slow: only the slow end-to-end tests (kill -9 at every crash point, the whole demo grepped for
## secrets)
# 3 processes for the whole suite on 2 cores: its daemon, server and subprocess tests spend much of their time waiting
# (12.5 min of CPU in 8.7 min of wall at 2), and a third worker fills those waits (idle: 8 min 41 s -> 7 min 45 s);
# the unit tests of test-fast are CPU-bound, and a third worker there is slower (81 s -> 84 s)
TEST_WORKERS ?= 3
FAST_WORKERS ?= 2
PG_WORKERS ?= 2
PYTEST_ARGS ?=
test: install-dev
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal -m "not postgres" $(PYTEST_ARGS)

test-fast: install-dev
	$(BIN)/pytest -n $(FAST_WORKERS) --dist worksteal tests/core tests/flows -m "not slow and not e2e and not postgres" $(PYTEST_ARGS)

test-slow: install-dev
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal -m slow $(PYTEST_ARGS)

## make test-pg: the tests on a real PostgreSQL server the session starts itself (initdb + pg_ctl on a free loopback
## port, tests/support/postgres.py); here a missing server binary fails the run instead of skipping the tests
test-pg: install-dev
	CMP_REQUIRE_POSTGRES=1 $(BIN)/pytest -n $(PG_WORKERS) --dist load -m postgres $(PYTEST_ARGS)

## make bench: the performance harness (figures and ratios, never assertions); BENCH_STORE=postgres adds the NRP flow
## on PostgreSQL, BENCH_DISTRIBUTED=1 the NRP files through a daemon and one vs two Celery run workers
bench: install-dev
	$(BIN)/python benchmarks/run.py $(if $(BENCH_STORE),--store $(BENCH_STORE)) \
		$(if $(filter-out 0,$(BENCH_DISTRIBUTED)),--distributed) $(BENCH_ARGS)

## make lint: ruff, the layer contracts of DESIGN.md §2 (import-linter) and `dg check defs`
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(BIN)/dg check defs

clean-data:
	rm -rf $(CMP_DATA_DIR)

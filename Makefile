# The few commands a person types. Everything installs into ./.venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test system-deps browser timescaledb lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

## run: the hub on the embedded default (SQLite + in-memory layer) with simulated demo devices
run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo --host $(HOST) --port $(PORT)

## test: the type check, then the whole suite on two workers (set HUB_REQUIRE_SERVICES=1 to fail instead of skip
## without PostgreSQL/Redis/Mosquitto)
test: $(VENV)/.installed
	$(VENV)/bin/mypy
	$(PY) -m pytest -n 2 --dist loadgroup

## system-deps: what some tests drive besides the services: Debian's chromium (tests/test_browser.py, through
## Playwright; no browser download) and docker-compose (validates docker-compose.yml without a Docker engine)
system-deps:
	@test -x /usr/bin/chromium -a -x /usr/bin/docker-compose || { apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium docker-compose; }

browser: system-deps

## timescaledb: TimescaleDB 2.28.3 built for this machine's PostgreSQL, a private cluster on 127.0.0.1:5433
## (the storage tests run on it and on plain PostgreSQL; ../shared/timescaledb/install.sh)
TIMESCALEDB_INSTALL ?= $(firstword $(wildcard ../shared/timescaledb/install.sh /work/shared/timescaledb/install.sh))
timescaledb:
	@test -n "$(TIMESCALEDB_INSTALL)" || { echo "no timescaledb/install.sh (set TIMESCALEDB_INSTALL)"; exit 1; }
	bash $(TIMESCALEDB_INSTALL)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) var

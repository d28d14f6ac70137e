# The few commands a person types. Everything installs into ./.venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test browser lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

## run: the hub on the embedded default (SQLite + in-memory layer) with simulated demo devices
run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo --host $(HOST) --port $(PORT)

## test: the whole suite (set HUB_REQUIRE_SERVICES=1 to fail instead of skip without PostgreSQL/Redis/Mosquitto)
test: $(VENV)/.installed
	$(PY) -m pytest

## browser: Debian's chromium for tests/test_browser.py, if missing (Playwright drives it; no browser download)
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) var

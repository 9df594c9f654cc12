# Roost: `make run` installs and starts Roost with the demo fleet; `make test` runs every test.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck check system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install Roost with its development tools

# MQTT on 1884 for the demo: 1883 is often held by a Mosquitto already running (make run MQTT_PORT=1883).
MQTT_PORT ?= 1884

run: install  ## start Roost on SQLite (./roost-data) with the demo retail fleet
	$(BIN)/roost serve --demo --mqtt-port $(MQTT_PORT)

system-deps:  ## Debian packages the tests use (MQTT command-line clients)
	@command -v mosquitto_pub >/dev/null 2>&1 || { \
	  echo "installing mosquitto-clients"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients) \
	  || sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto-clients'; }

test: install system-deps  ## run the whole test suite (PostgreSQL/NATS tests skip if absent)
	$(BIN)/pytest -q

lint: install  ## ruff (lint + format check)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install  ## mypy --strict on src/
	$(BIN)/mypy

check: lint typecheck test  ## everything CI runs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

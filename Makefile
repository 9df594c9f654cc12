# Roost: `make run` installs and starts Roost with the demo fleet; `make test` runs every test.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install vendor run test lint typecheck check system-deps clean

# The console's front-end libraries (htmx, uPlot) come from the npm registry at the versions
# frontend/package-lock.json pins, and are copied into the package so the wheel ships them.
VENDOR := src/roost/console/static/vendor
VENDOR_STAMP := $(VENDOR)/.installed

$(VENDOR_STAMP): frontend/package.json frontend/package-lock.json
	npm ci --prefix frontend --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR)
	cp frontend/node_modules/htmx.org/dist/htmx.min.js $(VENDOR)/htmx.min.js
	cp frontend/node_modules/htmx.org/LICENSE $(VENDOR)/htmx.LICENSE
	cp frontend/node_modules/uplot/dist/uPlot.iife.min.js $(VENDOR)/uPlot.iife.min.js
	cp frontend/node_modules/uplot/dist/uPlot.min.css $(VENDOR)/uPlot.min.css
	cp frontend/node_modules/uplot/LICENSE $(VENDOR)/uPlot.LICENSE
	touch $(VENDOR_STAMP)

vendor: $(VENDOR_STAMP)  ## the console's front-end libraries from the npm registry

# The Node device example's MQTT.js, at the version examples/node/package-lock.json pins.
EXAMPLES_NODE_STAMP := examples/node/node_modules/.installed

$(EXAMPLES_NODE_STAMP): examples/node/package.json examples/node/package-lock.json
	npm ci --prefix examples/node --no-audit --no-fund --loglevel=error
	touch $(EXAMPLES_NODE_STAMP)

$(STAMP): pyproject.toml agent/pyproject.toml $(VENDOR_STAMP) $(EXAMPLES_NODE_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./agent
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install Roost with its development tools

# MQTT on 1884 for the demo: 1883 is often held by a Mosquitto already running (make run MQTT_PORT=1883).
MQTT_PORT ?= 1884

run: install  ## start Roost on SQLite (./roost-data) with the demo retail fleet
	$(BIN)/roost serve --demo --mqtt-port $(MQTT_PORT)

# Debian packages the tests use: MQTT command-line clients, Chromium for the console's browser
# tests (Playwright drives this binary; a browser download would fail on a closed network), and
# for software delivery: swupdate (its suricatta mode is a real hawkBit DDI client), gnupg (signs
# the APT repository), apt (a real apt-get reads it) and nginx (the download benchmark's peer).
SYSTEM_PACKAGES := mosquitto-clients chromium swupdate gnupg nginx

system-deps:  ## Debian packages the tests use (MQTT clients, Chromium, swupdate, gnupg, nginx)
	@missing=""; \
	command -v mosquitto_pub >/dev/null 2>&1 || missing="$$missing mosquitto-clients"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v swupdate >/dev/null 2>&1 || missing="$$missing swupdate"; \
	command -v gpg >/dev/null 2>&1 || missing="$$missing gnupg"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) \
	  || sudo sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing"; \
	fi

test: install system-deps  ## run the whole test suite (PostgreSQL/NATS tests skip if absent)
	$(BIN)/pytest -q

lint: install  ## ruff (lint + format check)
	$(BIN)/ruff check src tests bench agent examples
	$(BIN)/ruff format --check src tests bench agent examples

typecheck: install  ## mypy --strict on src/, and on the agent as Python 3.9 (a Raspberry Pi's)
	$(BIN)/mypy
	$(BIN)/mypy --strict --python-version 3.10 --ignore-missing-imports agent/src/roost_agent

check: lint typecheck test  ## everything CI runs

clean:
	rm -rf $(VENV) $(VENDOR) frontend/node_modules examples/node/node_modules .pytest_cache .mypy_cache .ruff_cache

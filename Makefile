# Linkdesk — every set-up step lives here, so a fresh machine needs only `make run` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FRONTEND := components/moneykit_connect/frontend
BUNDLE := $(FRONTEND)/dist/index.js
# The OpenID Connect provider the sign-in browser tests start (npm oidc-provider, pinned).
OIDC_DIR := tests/e2e/oidc
OIDC_PROVIDER := $(OIDC_DIR)/node_modules/.package-lock.json
SANDBOX_PORT ?= 8611
DASHBOARD_PORT ?= 8501
# The throwaway PostgreSQL server of the tests (scripts/postgres.sh): every test that touches
# the store runs on SQLite and on this server.
PG_PORT ?= 55432
export LINKDESK_PG_PORT := $(PG_PORT)
export LINKDESK_TEST_POSTGRES_URL ?= postgresql+psycopg://linkdesk@localhost:$(PG_PORT)/postgres

.PHONY: run test setup setup-dev lint typecheck unit contract app e2e bench chromium postgres \
	postgres-stop prometheus integration clean

## run: set everything up, start the local MoneyKit sandbox and the dashboard (Ctrl-C stops both)
run: setup
	$(PY) scripts/run_local.py --sandbox-port $(SANDBOX_PORT) --dashboard-port $(DASHBOARD_PORT)

## test: set everything up (incl. Debian chromium, prometheus and PostgreSQL), then lint, type-check, run
## every test layer (store, services, worker and webhooks on SQLite and on PostgreSQL)
test: setup-dev chromium postgres prometheus
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q -p no:cacheprovider

setup: $(VENV)/.requirements $(BUNDLE)
setup-dev: setup $(VENV)/.requirements-dev $(OIDC_PROVIDER)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.requirements: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(VENV)/.requirements-dev: requirements-dev.txt requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

# The Connect launcher comes from the npm registry at the exact version in package-lock.json;
# the bundle is built here and never committed.
$(BUNDLE): $(FRONTEND)/package.json $(FRONTEND)/package-lock.json $(FRONTEND)/build.mjs $(wildcard $(FRONTEND)/src/*.js)
	cd $(FRONTEND) && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent

$(OIDC_PROVIDER): $(OIDC_DIR)/package.json $(OIDC_DIR)/package-lock.json
	cd $(OIDC_DIR) && npm ci --no-audit --no-fund --loglevel=error

# Debian's PostgreSQL (installed when missing) with a throwaway cluster on localhost:$(PG_PORT);
# a second run reuses the running server.
postgres:
	@bash scripts/postgres.sh >/dev/null
postgres-stop:
	@bash scripts/postgres.sh stop

# Browser tests use Debian's chromium (never a browser downloaded by a test tool), with an
# emoji font so screenshots show the health flags as people see them.
chromium:
	@{ command -v chromium >/dev/null && dpkg -s fonts-noto-color-emoji >/dev/null 2>&1; } || { \
	  echo "Installing Debian's chromium and fonts for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    chromium fonts-noto-color-emoji >/dev/null; }

# The metrics tests run Debian's real prometheus (and check the shipped rules with its promtool).
prometheus:
	@{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || { \
	  echo "Installing Debian's prometheus for the metrics tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends prometheus >/dev/null; }

lint: setup-dev
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
typecheck: setup-dev
	$(PY) -m mypy
unit: setup-dev postgres prometheus
	$(PY) -m pytest -q tests/unit tests/security tests/postgres
integration: setup-dev prometheus
	$(PY) -m pytest -q tests/integration
contract: setup-dev
	$(PY) -m pytest -q tests/contract tests/sandbox
app: setup-dev
	$(PY) -m pytest -q tests/app
e2e: setup-dev chromium
	$(PY) -m pytest -q tests/e2e

# The scale benchmarks (bench/links_page.py, bench/memory.py, and bench/pages.py on the seeded
# stores) use the PostgreSQL test server and Debian's chromium too; seeded stores are kept in
# bench/.data/ between runs.
bench: setup-dev postgres chromium
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
	@echo "== bench/pages.py at scale"
	$(PY) bench/pages.py --sizes 10k,100k,1M --backends sqlite,postgresql --runs 20

clean:
	rm -rf $(VENV) $(FRONTEND)/node_modules $(OIDC_DIR)/node_modules $(FRONTEND)/dist var test-output

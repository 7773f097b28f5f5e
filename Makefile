# Accord's commands. `make demo` and `make test` are the contract (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ACCORD := $(BIN)/accord
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-tools check lint typecheck policy-check dockerfile-check policy-test rules-test pytest faults bench down clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## setup: venv with pinned dependencies, Kafka jars fetched and OPA built into the user cache
setup: $(STAMP)
	$(ACCORD) local fetch

## demo: start the local stack on loopback, run the main job, then a short drill of T1 with its signed report; the
## services keep running
demo: setup
	$(ACCORD) local up
	$(ACCORD) demo
	@echo
	@echo "A short drill of T1 (the positive-test line list to a DPH) on the same stack; its signed report:"
	$(ACCORD) drill run --flows T1 --report drill-reports --time-scale 172800
	@echo
	$(ACCORD) local status
	@echo "Services left running. Stop them with: $(ACCORD) local down"

## test: every check, the policy tests and all Python tests against the real Kafka and OPA
test: check policy-test rules-test test-tools pytest

# kcat (a Kafka client no one here wrote) for the interop tests, and Debian's Chromium and its driver for the console's
# browser tests (tests/browser); installed when missing and apt-get can (as root).
test-tools:
	@command -v kcat >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get install -y -qq kcat >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq kcat)) \
	  >/dev/null 2>&1; } || echo "kcat not installed: its interop test will be skipped"
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || { [ "$$(id -u)" = 0 ] && \
	  command -v apt-get >/dev/null && apt-get update -qq >/dev/null 2>&1 && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; } || \
	  echo "chromium and chromium-driver not installed: the console's browser tests will be skipped"

check: lint typecheck policy-check dockerfile-check

lint: setup
	$(BIN)/ruff check broker connectors tests benchmarks

typecheck: setup
	$(BIN)/mypy

# No image builder runs here: the Dockerfile is linted by its own checks (stages, pinned bases, non-root user)
dockerfile-check: setup
	$(BIN)/pytest -q -p no:cacheprovider tests/unit/test_dockerfile.py

policy-check: setup
	opa=$$($(ACCORD) local which opa); \
	$$opa fmt --list --fail policies; \
	$$opa check --strict policies

policy-test: setup
	opa=$$($(ACCORD) local which opa); \
	$$opa test --coverage --threshold 90 policies > /dev/null || { $$opa test -v policies; exit 1; }; \
	$$opa test policies

## rules-test: check and unit-test the Prometheus alert rules with promtool (Debian's `prometheus`, installed as root
## when missing, as PostgreSQL is)
rules-test: setup
	promtool=$$($(ACCORD) local which promtool); \
	$$promtool check rules deploy/prometheus/alerts.yml; \
	$$promtool test rules deploy/prometheus/alerts_test.yml

pytest: setup
	$(BIN)/pytest

## faults: the fault suite (tests/faults, not part of `make test`: about a quarter of an hour): a whole supervised
## local stack of its own, its services killed with SIGKILL; each test prints its figures as JSON lines
faults: setup
	$(BIN)/pytest -s tests/faults

## bench: benchmarks, JSON results with ratios against a baseline measured in the same run
bench: setup
	$(BIN)/python -m benchmarks $(BENCH)

down:
	$(ACCORD) local down

clean: down
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Release Coordinator. `make test` and `make demo` set themselves up on a fresh machine
# (Python 3.11+, make, and the package registries).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
STAGE ?= dev
PACKAGE_DIR := build/package/$(STAGE)
# Table, queues, rules, roles and alarms for the stage (infra/render.py), merged into chalice's output.
MERGE_TEMPLATE := build/infra/merge-$(STAGE).json
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: setup browser test lint typecheck unit integration integration-moto integration-sweeps integration-sandbox package demo clean

$(INSTALLED): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (PYTHON=$(PYTHON) is " + sys.version.split()[0] + ")")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	# The relco CLI as .venv/bin/relco (its dependencies came with the requirements above).
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(INSTALLED)

setup: $(INSTALLED) browser

## The dashboard's browser test (tests/e2e/test_dashboard.py) drives Debian's chromium through
## chromedriver: installed with apt-get when absent and running as root (CI), else named here for
## the user to install (the test then fails saying the same).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "setup: the dashboard's browser test needs Debian's chromium and chromium-driver:"; \
		echo "  sudo apt-get install chromium chromium-driver"; \
	fi

## Every check: lint, types, unit, integration (moto), end to end (sandbox), template validation.
## Three at a time on the two cores of this machine and of CI: the three long suites first, side by
## side (the end-to-end runs mostly wait on the sandbox's clocks, so a third job fills the time the
## two CPU-bound ones leave), the short checks in whichever slot frees first. Each check's output
## is printed whole when it ends.
CHECKS := integration-moto integration-sweeps integration-sandbox lint typecheck unit package
test: $(INSTALLED)
	$(MAKE) --no-print-directory -j3 --output-sync=target $(CHECKS)

## Style, and the layering contracts of pyproject.toml's [tool.importlinter] (import-linter).
lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(INSTALLED)
	$(BIN)/mypy

unit: $(INSTALLED)
	$(BIN)/pytest -q -p no:cacheprovider tests/unit

## Everything beyond the pure unit tests, in three independent parts that `make test` runs side
## by side. The permission check must see every call the handlers make in the moto suites, so
## those stay in one process: moto integration and the reliability machine. The sweeps: the
## crash-point sweep, two suites with worlds of their own (the deploy guide's AWS CLI runs, the
## error model) and the packaging checks (chalice package and cfn-lint for 1 to 100 pipelines: too
## slow for the unit suite). The sandbox: its parts, the bundles, the end-to-end runs.
SELF_CONTAINED := tests/integration/test_deploy_guide.py tests/integration/test_error_model.py
integration: $(INSTALLED)
	$(MAKE) --no-print-directory -j3 --output-sync=target integration-moto integration-sweeps integration-sandbox

integration-moto: $(INSTALLED)
	$(BIN)/pytest -q -p no:cacheprovider tests/integration tests/reliability $(SELF_CONTAINED:%=--ignore=%)

integration-sweeps: $(INSTALLED)
	$(BIN)/pytest -q -p no:cacheprovider tests/crash tests/packaging $(SELF_CONTAINED)

integration-sandbox: $(INSTALLED) browser
	$(BIN)/pytest -q -p no:cacheprovider tests/sandbox tests/bundles tests/e2e

## `chalice package` for a stage; the SAM template and its translation to CloudFormation
## (aws-sam-translator, offline) both linted with cfn-lint. Fails when either fails.
package: $(INSTALLED)
	rm -rf $(PACKAGE_DIR)
	$(BIN)/python -m infra.package --stage $(STAGE) --merge-template $(MERGE_TEMPLATE) --output $(PACKAGE_DIR)
	@echo "package: $(PACKAGE_DIR)/deployment.zip $$(du -k $(PACKAGE_DIR)/deployment.zip | cut -f1) KiB"

## The release flow on the embedded sandbox: each upload approved from its Slack card; v1, v2 under
## traffic, each promoted from staging to production; a broken v3 and its rollback; a v4 whose
## alarm fires, and its rollback.
demo: $(INSTALLED)
	$(BIN)/relco demo

## The crash-point sweep with a larger randomized pass: SOAK_RUNS random runs (crashes plus
## duplicated, delayed and lost events) from seed SOAK_SEED; a failing run prints its seed.
SOAK_RUNS ?= 1000
SOAK_SEED ?= 0
.PHONY: soak
soak: $(INSTALLED)
	CRASH_RANDOM_RUNS=$(SOAK_RUNS) CRASH_RANDOM_SEED=$(SOAK_SEED) $(BIN)/pytest -q -p no:cacheprovider tests/crash -k random

## docs/dashboard.png, the README's picture of `relco ui`: taken by the dashboard's browser test.
.PHONY: screenshot
screenshot: $(INSTALLED) browser
	RELCO_DASHBOARD_SCREENSHOT=docs/dashboard.png $(BIN)/pytest -q -p no:cacheprovider tests/e2e/test_dashboard.py

## Every benchmark against the budgets of DESIGN.md section 8: writes bench/results.md and prints it.
.PHONY: bench
bench: $(INSTALLED)
	$(BIN)/python -m bench.run

clean:
	rm -rf build $(VENV) .mypy_cache .ruff_cache .hypothesis

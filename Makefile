# Per-package targets (test-core, lint-worker, …) and aggregates that run them in dependency order,
# in the spirit of turborepo: core before the apps that import it. Safe under `make -j2`: the one
# shared step (syncing the environment) is a file target that every other target depends on.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

UV ?= uv
PYTEST ?= $(UV) run --frozen pytest
PACKAGES := core worker api studio machine
core_DIR := packages/core
worker_DIR := apps/worker
api_DIR := apps/api
machine_DIR := apps/machine
studio_DIR := apps/studio
SRC_DIRS := $(foreach p,$(PACKAGES),$($(p)_DIR))

VENV_STAMP := .venv/.synced

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_%-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV_STAMP): uv.lock pyproject.toml $(foreach d,$(SRC_DIRS),$(d)/pyproject.toml)
	@scripts/ensure-tools.sh
	$(UV) sync --all-packages --locked
	@touch $@

.PHONY: setup
setup: $(VENV_STAMP) ## Install tools (uv, redis-server) when missing and sync the workspace

# --- per package -----------------------------------------------------------------------------------
# Each package has lint-, typecheck- and test- targets; a package's tests run after those of the
# packages it imports (worker imports core), like turborepo's "dependsOn": ["^test"].
define lint_recipe
	$(UV) run --frozen ruff check $(1)
	$(UV) run --frozen ruff format --check $(1)
endef

.PHONY: lint-core lint-worker lint-api typecheck-core typecheck-worker typecheck-api
.PHONY: lint-machine typecheck-machine test-machine
.PHONY: lint-studio typecheck-studio test-studio chromium e2e
.PHONY: test-core test-worker test-api postgres
lint-core: $(VENV_STAMP) ## Ruff lint and format check of packages/core
	$(call lint_recipe,$(core_DIR))

lint-worker: $(VENV_STAMP) ## Ruff lint and format check of apps/worker
	$(call lint_recipe,$(worker_DIR))

lint-api: $(VENV_STAMP) ## Ruff lint and format check of apps/api and migrations/
	$(call lint_recipe,$(api_DIR) migrations)

lint-machine: $(VENV_STAMP) ## Ruff lint and format check of apps/machine
	$(call lint_recipe,$(machine_DIR))

lint-studio: $(VENV_STAMP) ## Ruff lint and format check of apps/studio and e2e/
	$(call lint_recipe,$(studio_DIR) e2e)

typecheck-core: $(VENV_STAMP) ## Mypy (strict) of packages/core
	$(UV) run --frozen mypy $(core_DIR)/src

typecheck-worker: $(VENV_STAMP) ## Mypy (strict) of apps/worker
	$(UV) run --frozen mypy $(worker_DIR)/src

typecheck-api: $(VENV_STAMP) ## Mypy (strict) of apps/api
	$(UV) run --frozen mypy $(api_DIR)/src

typecheck-machine: $(VENV_STAMP) ## Mypy (strict) of apps/machine
	$(UV) run --frozen mypy $(machine_DIR)/src

typecheck-studio: $(VENV_STAMP) ## Mypy (strict) of apps/studio
	$(UV) run --frozen mypy $(studio_DIR)/src

postgres: ## Install and start PostgreSQL when missing (the API's tests need it)
	@scripts/ensure-postgres.sh

test-core: lint-core typecheck-core ## Tests of packages/core (Lua library, matching, models)
	$(PYTEST) $(core_DIR)/tests

test-worker: lint-worker typecheck-worker test-core ## Tests of apps/worker (after core's)
	$(PYTEST) $(worker_DIR)/tests

test-machine: lint-machine typecheck-machine test-worker ## Tests of apps/machine (after the worker's: they run real workers)
	$(PYTEST) $(machine_DIR)/tests

test-studio: lint-studio typecheck-studio test-core ## Tests of apps/studio (real Redis, SQLite)
	$(PYTEST) $(studio_DIR)/tests

chromium: ## Install Debian's Chromium when missing (the E2E suite drives it)
	@scripts/ensure-chromium.sh

# Its own pytest run: pytest-playwright empties its --output folder at start, so it is kept apart
# from e2e/artifacts/ where the per-flow screenshots go.
e2e: $(VENV_STAMP) chromium ## Browser tests against the real apps; screenshots in e2e/artifacts/
	$(PYTEST) e2e --screenshot only-on-failure --output e2e/artifacts/failures

test-api: lint-api typecheck-api test-core postgres ## Tests of apps/api (real Redis and PostgreSQL)
	$(PYTEST) $(api_DIR)/tests

# --- aggregates ------------------------------------------------------------------------------------
.PHONY: lint typecheck test bench bench-patterns dev clean
lint: $(foreach p,$(PACKAGES),lint-$(p)) ## Lint every package, the benchmarks and scripts
	$(call lint_recipe,conftest.py bench scripts)

typecheck: $(foreach p,$(PACKAGES),typecheck-$(p)) ## Type-check every package

test: lint typecheck test-worker test-api test-studio test-machine e2e ## Lint, type-check and test everything, in dependency order

bench: $(VENV_STAMP) ## Run the benchmarks; prints a table, writes bench/results/latest.json
	$(UV) run --frozen python -m bench

bench-patterns: $(VENV_STAMP) ## Error-pattern classification latency and save-to-worker time
	$(UV) run --frozen python -m bench.patterns

dev: $(VENV_STAMP) ## Run the whole stack locally (private Redis under .data/); Ctrl-C stops it
	$(UV) run --frozen python scripts/dev.py

clean: ## Remove caches and local data (.data/ holds the dev Redis)
	rm -rf .data .mypy_cache .ruff_cache .pytest_cache bench/results/latest.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

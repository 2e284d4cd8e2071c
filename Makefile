# Per-package targets (test-core, lint-worker, …) and aggregates that run them in dependency order,
# in the spirit of turborepo: core before the apps that import it. Safe under `make -j2`: the one
# shared step (syncing the environment) is a file target that every other target depends on.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

UV ?= uv
PYTEST ?= $(UV) run --frozen pytest
PACKAGES := core worker
core_DIR := packages/core
worker_DIR := apps/worker
SRC_DIRS := $(foreach p,$(PACKAGES),$($(p)_DIR))

VENV_STAMP := .venv/.synced

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_%-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

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

.PHONY: lint-core lint-worker typecheck-core typecheck-worker test-core test-worker
lint-core: $(VENV_STAMP) ## Ruff lint and format check of packages/core
	$(call lint_recipe,$(core_DIR))

lint-worker: $(VENV_STAMP) ## Ruff lint and format check of apps/worker
	$(call lint_recipe,$(worker_DIR))

typecheck-core: $(VENV_STAMP) ## Mypy (strict) of packages/core
	$(UV) run --frozen mypy $(core_DIR)/src

typecheck-worker: $(VENV_STAMP) ## Mypy (strict) of apps/worker
	$(UV) run --frozen mypy $(worker_DIR)/src

test-core: lint-core typecheck-core ## Tests of packages/core (Lua library, matching, models)
	$(PYTEST) $(core_DIR)/tests

test-worker: lint-worker typecheck-worker test-core ## Tests of apps/worker (after core's)
	$(PYTEST) $(worker_DIR)/tests

# --- aggregates ------------------------------------------------------------------------------------
.PHONY: lint typecheck test bench dev clean
lint: $(foreach p,$(PACKAGES),lint-$(p)) ## Lint every package, the benchmarks and scripts
	$(call lint_recipe,conftest.py bench scripts)

typecheck: $(foreach p,$(PACKAGES),typecheck-$(p)) ## Type-check every package

test: lint typecheck test-worker ## Lint, type-check and test everything, in dependency order

bench: $(VENV_STAMP) ## Run the benchmarks; prints a table, writes bench/results/latest.json
	$(UV) run --frozen python -m bench

dev: $(VENV_STAMP) ## Run the whole stack locally (private Redis under .data/); Ctrl-C stops it
	$(UV) run --frozen python scripts/dev.py

clean: ## Remove caches and local data (.data/ holds the dev Redis)
	rm -rf .data .mypy_cache .ruff_cache .pytest_cache bench/results/latest.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Per-package targets (test-core, lint-worker, …) and aggregates that run them in dependency order,
# in the spirit of turborepo: core before the apps that import it. Safe under `make -j2`: the one
# shared step (syncing the environment) is a file target that every other target depends on.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# uv: the one on PATH, else ~/.local/bin's, else the private one that scripts/ensure-tools.sh installs
# under .tools/venv/ (scripts/find-uv.sh says which), so nobody has to edit PATH. `make UV=…` overrides.
ifeq ($(origin UV),undefined)
UV := $(shell scripts/find-uv.sh)
endif
PYTEST ?= $(UV) run --frozen pytest
PACKAGES := core rpc sql web cli worker machine api studio
core_DIR := packages/core
rpc_DIR := packages/rpc
sql_DIR := packages/sql
web_DIR := packages/web
cli_DIR := apps/cli
worker_DIR := apps/worker
machine_DIR := apps/machine
api_DIR := apps/api
studio_DIR := apps/studio
SRC_DIRS := $(foreach p,$(PACKAGES),$($(p)_DIR))

VENV_STAMP := .venv/.synced
# torch and the diffusers stack, installed beside the lock by scripts/gpu-stack.sh (see there why).
GPU_STAMP := .venv/.gpu-stack

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_%-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (these machines set it) a process
# would compile every module it imports at every start, 1.7 s of CPU for a worker; compiled once
# here, a worker starts three times sooner, and so does every process the tests spawn.
$(VENV_STAMP): uv.lock pyproject.toml $(foreach d,$(SRC_DIRS),$(d)/pyproject.toml)
	@scripts/ensure-tools.sh
	$(UV) sync --all-packages --locked --compile-bytecode
	@touch $@

.PHONY: setup gpu-stack
setup: $(VENV_STAMP) ## Install tools (uv, redis-server) when missing and sync the workspace

# Again after every sync: `uv sync` removes what the lock does not hold.
$(GPU_STAMP): $(VENV_STAMP) apps/worker/requirements-diffusers.txt scripts/gpu-stack.sh
	UV=$(UV) scripts/gpu-stack.sh
	@touch $@

gpu-stack: $(GPU_STAMP) ## Install torch (CPU wheel here; TORCH_SPEC for CUDA) and the pinned diffusers stack

# --- per package -----------------------------------------------------------------------------------
# Each package has lint-, typecheck- and test- targets; a package's tests run after those of the
# packages it imports (worker imports core), like turborepo's "dependsOn": ["^test"].
define lint_recipe
	$(UV) run --frozen ruff check $(1)
	$(UV) run --frozen ruff format --check $(1)
endef

# Generated per package: lint-P (ruff), typecheck-P (mypy strict) and, where P has tests, test-P.
define package_rules
.PHONY: lint-$(1) typecheck-$(1) test-$(1)
lint-$(1): $(VENV_STAMP)
	$$(call lint_recipe,$$($(1)_DIR))

typecheck-$(1): $(VENV_STAMP)
	$$(UV) run --frozen mypy $$($(1)_DIR)/src
endef
$(foreach p,$(PACKAGES),$(eval $(call package_rules,$(p))))

# `make help` reads these lines; the rules above are generated, so their help lives here.
lint-%: ## Ruff lint and format check of one package (core, sql, web, cli, worker, machine, api, studio)
typecheck-%: ## Mypy (strict) of one package's src/

.PHONY: lint-imports deps postgres azurite chromium e2e proto proto-check
# gRPC: Python modules, type stubs (.pyi) and service stubs generated from proto/emp/v1 into the
# rpc package. Committed (so installs need no protoc and a GPU host no grpcio-tools);
# proto-check regenerates into a scratch folder and fails when the committed code differs.
PROTO_FILES := $(wildcard proto/emp/v1/*.proto)
PROTOC = $(UV) run --frozen python -m grpc_tools.protoc -I proto

proto: $(VENV_STAMP) ## Generate the gRPC Python code (and .pyi stubs) from proto/ into packages/rpc/src/emp/v1
	$(PROTOC) --python_out=$(rpc_DIR)/src --pyi_out=$(rpc_DIR)/src --grpc_python_out=$(rpc_DIR)/src $(PROTO_FILES)

proto-check: $(VENV_STAMP) ## Fail when the committed generated gRPC code is not what proto/ generates
	@scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; \
	$(PROTOC) --python_out=$$scratch --pyi_out=$$scratch --grpc_python_out=$$scratch $(PROTO_FILES); \
	for f in $$(cd $$scratch && find . -type f | sort); do \
	  cmp -s "$$scratch/$$f" "$(rpc_DIR)/src/$$f" || { echo "stale generated gRPC code: $$f (run make proto)"; exit 1; }; \
	done; echo "generated gRPC code is up to date"
lint-imports: $(VENV_STAMP) ## Import rules: apps never import apps; web -> sql -> core; core has no web/SQL/CLI
	$(UV) run --frozen lint-imports --no-cache

deps: $(VENV_STAMP) ## Each package declares exactly what it imports; the worker's install has no web/SQL/CLI
	UV=$(UV) $(UV) run --frozen python scripts/check_deps.py

# The API's tests take the server's URL from EMP_TEST_POSTGRES_URL when given (then nothing is set up),
# else from the file ensure-postgres.sh writes: the port of the cluster it runs, which need not be 5432.
PG_URL_FILE := .data/test-postgres-url
postgres: ## Install and start a PostgreSQL cluster when missing; its URL goes to .data/test-postgres-url
	@scripts/ensure-postgres.sh >/dev/null

azurite: ## Install Azurite (npm, into .tools/azurite) when missing: the blob-store tests run it
	@scripts/ensure-azurite.sh

test-core: lint-core typecheck-core azurite ## Tests of packages/core (Lua library, matching, models, blob stores)
	$(PYTEST) $(core_DIR)/tests

test-cli: lint-cli typecheck-cli test-core ## Tests of apps/cli (the emp command, on SQLite)
	$(PYTEST) $(cli_DIR)/tests

test-worker: lint-worker typecheck-worker test-core $(GPU_STAMP) ## Tests of apps/worker (after core's; the diffusers connector's on the CPU)
	$(PYTEST) $(worker_DIR)/tests

test-machine: lint-machine typecheck-machine test-worker ## Tests of apps/machine (after the worker's: they run real workers)
	$(PYTEST) $(machine_DIR)/tests

test-studio: lint-studio lint-web typecheck-studio typecheck-web test-core ## Tests of apps/studio (real Redis, SQLite)
	$(PYTEST) $(studio_DIR)/tests

test-api: lint-api lint-sql lint-web typecheck-api typecheck-sql typecheck-web test-core postgres ## Tests of apps/api (real Redis and PostgreSQL)
	EMP_TEST_POSTGRES_URL="$${EMP_TEST_POSTGRES_URL:-$$(cat $(PG_URL_FILE))}" $(PYTEST) $(api_DIR)/tests

chromium: $(VENV_STAMP) ## Install Chromium when missing (the E2E suite drives it)
	@scripts/ensure-chromium.sh

# Its own pytest run: pytest-playwright empties its --output folder at start, so it is kept apart
# from e2e/artifacts/ where the per-flow screenshots go.
e2e: $(VENV_STAMP) $(GPU_STAMP) chromium ## Browser tests against the real apps; screenshots in e2e/artifacts/
	$(PYTEST) e2e --screenshot only-on-failure --output e2e/artifacts/failures

# --- aggregates ------------------------------------------------------------------------------------
.PHONY: lint typecheck test bench bench-peers bench-affinity bench-fair bench-position bench-cluster bench-grpc bench-sockets bench-patterns bench-loras bench-diffusers dev clean ci-fresh
lint: $(foreach p,$(PACKAGES),lint-$(p)) lint-imports deps proto-check ## Lint every package, the import rules, the declared dependencies, bench and scripts
	$(call lint_recipe,conftest.py bench scripts migrations e2e)

typecheck: $(foreach p,$(PACKAGES),typecheck-$(p)) ## Type-check every package

test: lint typecheck test-cli test-worker test-api test-studio test-machine e2e ## Lint, type-check and test everything, in dependency order

bench: $(VENV_STAMP) ## Run the benchmarks; prints a table, writes bench/results/latest.json
	$(UV) run --frozen python -m bench

# The peers live in environments of their own (never in the workspace's lock), from pinned lists;
# arq's redis-py cap (< 6) conflicts with Celery's (>= 6.4), so arq has a second one.
PEERS_VENV := .data/bench-peers-venv
PEERS_ARQ_VENV := .data/bench-peers-arq-venv
$(PEERS_VENV)/.installed: bench/peers/requirements.txt $(VENV_STAMP)
	rm -rf $(PEERS_VENV) && $(UV) venv -q --python .venv/bin/python $(PEERS_VENV)
	$(UV) pip install -q --python $(PEERS_VENV)/bin/python --compile-bytecode -r $<
	@touch $@
$(PEERS_ARQ_VENV)/.installed: bench/peers/requirements-arq.txt $(VENV_STAMP)
	rm -rf $(PEERS_ARQ_VENV) && $(UV) venv -q --python .venv/bin/python $(PEERS_ARQ_VENV)
	$(UV) pip install -q --python $(PEERS_ARQ_VENV)/bin/python --compile-bytecode -r $<
	@touch $@

bench-peers: $(VENV_STAMP) $(PEERS_VENV)/.installed $(PEERS_ARQ_VENV)/.installed ## EMP vs SAQ, arq, RQ, Celery, Dramatiq: enqueue, drain 5,000 (1 and 2 processes), pickup
	$(UV) run --frozen python -m bench.peers

bench-affinity: $(VENV_STAMP) ## LoRA affinity on a simulated fleet: bytes downloaded, hit rate, waits (off/on/window)
	$(UV) run --frozen python -m bench.affinity

bench-fair: $(VENV_STAMP) ## Fair shares: a 10,000-job burst against one job a second, wait p50/p95 per customer, off/on/weighted
	$(UV) run --frozen python -m bench.fairness

bench-cluster: $(VENV_STAMP) ## Claim+complete with 1-3 queues on one node vs a local 3-primary Redis Cluster
	$(UV) run --frozen python -m bench.cluster

bench-diffusers: $(GPU_STAMP) ## Diffusers connector: s/step of the tiny pipeline, connector and worker overhead
	$(UV) run --frozen python -m emp_worker.diffusion.bench

bench-grpc: $(VENV_STAMP) ## gRPC vs REST/WebSocket: payload sizes, submit and progress p50/p99; worker jobs/s, gRPC vs Redis transport
	$(UV) run --frozen python -m bench.rpc
bench-sockets: $(VENV_STAMP) ## 1,000 WebSockets at once on one job, in one API and one studio process
	$(UV) run --frozen python -m bench.sockets

bench-patterns: $(VENV_STAMP) ## Error-pattern classification latency and save-to-worker time
	$(UV) run --frozen python -m bench.patterns

bench-position: $(VENV_STAMP) ## Redis cost of a pending job's place in line and ETA at 1k-100k pending
	$(UV) run --frozen python -m bench.position

bench-loras: $(VENV_STAMP) azurite ## LoRA upload throughput (MB/s) into the local store and Azurite
	$(UV) run --frozen python -m bench.loras

# The install's output goes to .data/setup.log and is shown only when it fails: the first thing
# a newcomer reads is the stack's own output.
dev: ## Run the whole stack locally (private Redis under .data/); Ctrl-C stops it
	@mkdir -p .data
	@echo "checking tools and the environment (log: .data/setup.log)"
	@$(MAKE) --no-print-directory $(VENV_STAMP) $(GPU_STAMP) >.data/setup.log 2>&1 || \
		{ cat .data/setup.log; echo "set-up failed; its log is .data/setup.log" >&2; exit 1; }
	@$(UV) run --frozen --quiet python scripts/dev.py

# Before a release, not part of `make test`: the committed HEAD, cloned into a minimal Debian 12 root
# with a network namespace of its own, as a newcomer's machine. Needs root (or sudo); 6 min idle.
ci-fresh: ## Run .ci/run in a throwaway fresh Debian 12 root (own network; as root or via sudo)
	scripts/ci-fresh.sh

clean: ## Remove caches and local data (.data/ holds the dev Redis, SQLite and blobs)
	rm -rf .data .mypy_cache .ruff_cache .pytest_cache bench/results/latest.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

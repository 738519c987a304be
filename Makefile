# Trellis: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
UV := .local/tools/bin/uv
PY := .venv/bin/python

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
# Bytecode compiled at install: with PYTHONDONTWRITEBYTECODE set (as on our CI machines) every
# process would otherwise compile its imports again (3.4-6.5 s vs 1.2-1.5 s to import a worker).
setup: ## Install the pinned uv (in .local/tools), then the locked Python environment (.venv)
	@[ -x $(UV) ] || { python3 -m venv .local/tools && .local/tools/bin/pip install --quiet "uv==$(UV_VERSION)"; }
	$(UV) sync --all-packages --frozen --quiet --compile-bytecode

.PHONY: proto
proto: setup ## Generate Python code and mypy stubs from proto/
	$(PY) tools/gen_proto.py

.PHONY: lint
lint: setup ## ruff, mypy, import contracts and the proto compatibility check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	.venv/bin/lint-imports
	$(PY) tools/proto_compat.py

.PHONY: helm
helm: ## Install the pinned helm (in .local/tools, with Go) that renders deploy/helm/trellis in the tests
	@tools/helm.sh

.PHONY: test
test: setup lint helm ## Lint, then unit, contract, integration and e2e tests on a Kafka broker of their own
	tools/run-tests.sh

.PHONY: bench
bench: setup ## Every benchmark (bench/benchmarks/) on a Kafka of its own: bench/results/latest.json and a table
	$(PY) bench/run.py

.PHONY: bench-quick
bench-quick: setup ## Every benchmark at its reduced size (under 10 minutes in all)
	$(PY) bench/run.py --quick

.PHONY: up
up: setup ## Start Kafka and the four services in the background (see `make down`)
	deploy/local/stack.sh up

.PHONY: down
down: ## Stop what `make up` started
	deploy/local/stack.sh down

.PHONY: run
run: setup ## Start everything, load the demo district, and run until Ctrl-C
	deploy/local/stack.sh run

.PHONY: clean
clean: down ## Stop the stack and remove local state (.local/)
	rm -rf .local

# Developer shortcuts; every target is a thin wrapper over uv and the scripts in bin/.
# Pass extra arguments with ARGS, e.g. `make test ARGS="tests/unit -x"`.

.DEFAULT_GOAL := help
ARGS ?=

.PHONY: help install run test lint format typecheck clean

help: ## List the targets
	@echo "Usage: make <target> [ARGS=...]"
	@echo
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_-]+:.*## / { printf "  %-10s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

install: ## Create or update the workspace virtualenv from uv.lock (uv sync)
	uv sync --frozen

run: ## Start the local stack on http://localhost:8080 (./bin/run.sh)
	./bin/run.sh $(ARGS)

test: ## Lint, type check and run the tests (./bin/test.sh; ARGS go to pytest)
	./bin/test.sh $(ARGS)

lint: ## Check lint and formatting (ruff check, ruff format --check)
	uv run ruff check .
	uv run ruff format --check .

format: ## Format the code and apply safe lint fixes (ruff format, ruff check --fix)
	uv run ruff format .
	uv run ruff check --fix .

typecheck: ## Type check in strict mode (mypy, configured in pyproject.toml)
	uv run mypy

clean: ## Remove caches and the local stack's data directory (.data)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .data build
	find . -path ./.venv -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
	find . -path ./.venv -prune -o -type d -name '*.egg-info' -prune -exec rm -rf {} +

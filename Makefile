# The targets people look for. Each one refreshes the environment from uv.lock first
# (a no-op when nothing changed), bootstrapping uv into .tools/ when it is missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --frozen
export PREFECT_HOME ?= $(CURDIR)/data/prefect
export OMP_NUM_THREADS ?= 2

.PHONY: help install demo test test-slow lint format bench docs mlflow-ui serve deployments clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet uv==$(UV_VERSION)

install: $(if $(filter $(CURDIR)/.tools/bin/uv,$(UV)),$(CURDIR)/.tools/bin/uv) ## create or refresh .venv from uv.lock
	$(UV) sync --frozen

demo: install ## run the whole loop on the embedded defaults (DuckDB, SQLite, local MLflow)
	$(RUN) loopline demo

test: install ## the test suite CI runs (fast: heavier suites are marked slow)
	$(RUN) pytest

test-slow: install ## the heavier suites (large-scale simulation, full builds)
	$(RUN) pytest -m slow

lint: install ## ruff, mypy on ml/ loopline/ flows/, sqlfluff on models/ and snapshots/
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	mkdir -p data/warehouse
	$(RUN) sqlfluff lint models snapshots

format: install ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

bench: install ## serving and batch-scoring benchmarks -> data/bench/results.md (BENCH_ARGS=--quick)
	$(RUN) python -m bench.run $(BENCH_ARGS)

docs: install ## build the warehouse docs site and serve it on http://127.0.0.1:8080
	$(RUN) dbt docs generate --target-path data/dbt/target
	$(RUN) dbt docs serve --target-path data/dbt/target --port 8080

mlflow-ui: install ## browse runs, metrics, plots and the model registry on http://127.0.0.1:5000
	$(RUN) mlflow ui --backend-store-uri sqlite:///$(CURDIR)/data/mlflow/mlflow.db --port 5000

serve: install ## serve @champion over HTTP on http://127.0.0.1:8000 (docs at /docs)
	$(RUN) loopline serve --port 8000

deployments: install ## register and serve the Prefect deployments (needs PREFECT_API_URL)
	$(RUN) python -m flows.deployments

clean: ## remove generated data (warehouse, landing files, MLflow store, reports)
	rm -rf data target logs

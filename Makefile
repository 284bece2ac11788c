# The targets people look for. Each one refreshes the environment from uv.lock first
# (a no-op when nothing changed), bootstrapping uv into .tools/ when it is missing.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --frozen
DATA := $(abspath $(or $(LOOPLINE_DATA_DIR),data))
export PREFECT_HOME ?= $(DATA)/prefect
export OMP_NUM_THREADS ?= 2
SCALE ?=

.PHONY: help install demo test test-slow reliability lint format bench up down status docs mlflow-ui serve deployments clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet uv==$(UV_VERSION)

# --compile-bytecode: byte-compile once at install, so the first run of anything (a Prefect
# server above all) does not spend its start-up compiling
install: $(if $(filter $(CURDIR)/.tools/bin/uv,$(UV)),$(CURDIR)/.tools/bin/uv) ## create or refresh .venv from uv.lock
	$(UV) sync --frozen --compile-bytecode

demo: install ## run the whole loop on the embedded defaults (SCALE=small|demo|large)
	$(RUN) loopline demo $(if $(SCALE),--scale $(SCALE))

# the fast suite on TEST_WORKERS processes (pytest-xdist), a test file per worker at a time:
# a module's fixtures (a built warehouse, a server) are set up once, on one worker. Much of
# the suite waits on subprocesses, servers and dbt, so 2 workers on 2 cores took 17 min
# where one took 28 (Intel Xeon; putting the slowest files first gained nothing, 17.5 min);
# TEST_WORKERS=0 runs it in one process
TEST_WORKERS ?= 2

test: install ## the test suite CI runs (fast: heavier suites are marked slow)
	$(RUN) pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

test-slow: install ## the heavier suites (large-scale simulation, full builds)
	$(RUN) pytest -m slow

# the tests that record what they tried (kill -9 trials, fuzzing, bad input), slow ones
# included, then docs/reliability.md's generated blocks from what they recorded
RELIABILITY_TESTS := tests/reliability tests/ml/serving/test_fuzz.py tests/ml/serving/test_limits.py \
	tests/ingest/test_bad_input.py tests/ingest/test_poison.py
reliability: install ## kill -9 trials, fuzzing, bad input; then regenerate docs/reliability.md's numbers
	LOOPLINE_RELIABILITY_REPORT=1 $(RUN) pytest -m "slow or not slow" $(RELIABILITY_TESTS)
	$(RUN) python -m loopline.reliability

lint: install ## ruff, mypy on ml/ loopline/ flows/, sqlfluff on models/ and snapshots/
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	mkdir -p data/warehouse
	$(RUN) sqlfluff lint models snapshots

format: install ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

bench: install ## benchmarks (serving, batch, validation, PIT, drift, ingest, dbt, demo) -> data/bench/results.md (BENCH_ARGS=--quick)
	$(RUN) python -m bench.run $(BENCH_ARGS)

up: install ## start Prefect (+ deployments), MLflow UI, dbt docs and the API in the background
	$(RUN) loopline up

down: ## stop what `make up` started
	$(RUN) loopline down

status: ## what runs, on which port, and each deployment's last run
	$(RUN) loopline status

docs: install ## generate the dbt docs site and serve it on http://127.0.0.1:8080 (foreground)
	$(RUN) loopline docs

mlflow-ui: install ## the MLflow UI on http://127.0.0.1:5000 (foreground)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true $(RUN) mlflow server --workers 1 \
	    --backend-store-uri sqlite:///$(DATA)/mlflow/mlflow.db --host 127.0.0.1 --port 5000

serve: install ## serve @champion over HTTP on http://127.0.0.1:8000 (docs at /docs; foreground)
	$(RUN) loopline serve

deployments: install ## serve the Prefect deployments in the foreground (needs PREFECT_API_URL)
	$(RUN) python -m flows.deployments

clean: ## stop what `make up` started, remove generated data (warehouse, landing, MLflow store ...)
	if [ -x .venv/bin/loopline ]; then .venv/bin/loopline down > /dev/null || true; fi
	rm -rf data target logs

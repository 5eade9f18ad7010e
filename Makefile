# Paradigm — `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8001
METRICS_PORT ?= 8002
DATA_DIR ?= ./var
COMPARE_OUT ?= ./compare-report
# The MLflow tracking server that tests/test_mlflow.py and bench-mlflow log to: a venv of
# its own, as checkov's, since its pins are none of the service's (which talks to it over
# plain REST, docs/architecture.md).
MLFLOW_VENV := .venv-mlflow

.DEFAULT_GOAL := help
.PHONY: help install proto proto-check serve demo bench bench-workers bench-jobs bench-mlflow bench-search bench-images bench-tables bench-cascade bench-shadow bench-text bench-peers bench-tracing soak compare test test-fast lint clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv and install everything (idempotent)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[train,postgres,s3,test,dev,bench,pandas]"
	touch $@

proto: install ## Regenerate service/gen from protos/
	rm -rf service/gen
	$(PY) protos/generate.py service/gen

serve: install ## Run the server on HOST:PORT with DATA_DIR
	$(VENV)/bin/paradigm-server --host $(HOST) --port $(PORT) --metrics-port $(METRICS_PORT) --data-dir $(DATA_DIR)

demo: install ## Start a server, train the guide's models, serve them, print the table
	$(PY) -m clients.demo

bench: install ## Serving vs its limits, server CPU per request, --workers, small-job latency (docs/benchmarks/)
	$(PY) -m clients.bench.run
	$(PY) -m clients.bench.request_cpu
	$(PY) -m clients.bench.workers
	$(PY) -m clients.bench.jobs

bench-workers: install ## Throughput and p99 of --workers 1 and 2 at c=16 and c=64
	$(PY) -m clients.bench.workers

bench-jobs: install ## Small jobs, StartTraining to SUCCEEDED: warm (preloaded fork server) vs cold workers
	$(PY) -m clients.bench.jobs

bench-mlflow: install $(MLFLOW_VENV)/.installed ## What MLflow tracking costs a job: off, on, tracking server down or hung
	$(PY) -m clients.bench.mlflow_jobs

bench-search: install ## A 50-trial search (lr, random forest, mlp on digits): wall time vs the sum of its trials' fits
	$(PY) -m clients.bench.search

bench-images: install ## 10 000 PNGs in a zip: upload to ready vs a Pillow loop in-process
	$(PY) -m clients.bench.images

bench-tables: install ## Tables: 1M-row CSV ingestion vs pyarrow/pandas, per-column serving, penguins scores
	$(PY) -m clients.bench.tables

bench-cascade: install ## Cascades: classical first, deep when unsure (digits LR->CNN, penguins GB->MLP): accuracy and cost vs deep alone, curves
	$(PY) -m clients.bench.cascade --out docs/benchmarks

bench-shadow: install ## Shadow overhead: primary p99 at c=16 through an alias with vs without a 100 % shadow (digits LR, MLP shadow)
	$(PY) -m clients.bench.shadow --out docs/benchmarks/shadow-cpu.json

bench-text: install ## Text: raw strings in (tokenised in the graph) vs precomputed features, batch 1 and 64
	$(PY) -m clients.bench.text --out docs/benchmarks

# The last commit before traces existed: its server runs beside ours (empty: skip it).
TRACING_BASELINE ?= 6c1e9d0
bench-tracing: install ## OpenTelemetry traces: server CPU per request off vs on at 1 % vs every request (and vs the code before traces)
	$(PY) -m clients.bench.tracing $(if $(TRACING_BASELINE),--baseline $(TRACING_BASELINE))

bench-peers: install ## The same benchmark with Seldon MLServer and perf_analyzer beside us
	bash clients/bench/peers/run.sh

soak: install ## 60 s of 64 clients, training and imports against one server; no errors, no leaks
	$(PY) -m clients.soak --duration 60 --json docs/benchmarks/soak.json

compare: install ## Measure the guide's deep-vs-classical claims: report.md, verdicts, plots in COMPARE_OUT (~6 min)
	$(PY) -m clients.compare --out $(COMPARE_OUT)

test: install tools ## Run the test suite (no GPU needed; GPU tests skip)
	$(PY) -m pytest -q

.PHONY: tools rules-test
CHECKOV_VENV := .venv-checkov
# Debian's packages: prometheus brings promtool (tests/test_prometheus.py); postgresql the
# server that tests/postgres.py starts on loopback for the shared-registry tests. apt-get
# needs root. checkov (tests/test_deploy.py) gets a venv of its own: its many pins must not
# move the service's. kubectl (its built-in kustomize renders deploy/k8s) is not in Debian:
# install it from your Kubernetes distribution where missing; those tests skip without it.
tools: $(CHECKOV_VENV)/.installed $(MLFLOW_VENV)/.installed ## Install promtool, PostgreSQL (apt), checkov and an MLflow server where missing
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(CHECKOV_VENV)/.installed:
	test -x $(CHECKOV_VENV)/bin/python || python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install -q checkov==3.3.30
	touch $@

$(MLFLOW_VENV)/.installed:
	test -x $(MLFLOW_VENV)/bin/python || python3 -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install -q --upgrade pip
	$(MLFLOW_VENV)/bin/python -m pip install -q mlflow==3.17.2
	touch $@

rules-test: tools ## Check the Prometheus config and rules, and run their unit tests
	promtool check config deploy/prometheus/prometheus.yml
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.yml

lint: install ## ruff + mypy + import-linter (the process and layer contracts)
	$(VENV)/bin/ruff check service clients tests protos
	$(VENV)/bin/ruff format --check service clients tests protos
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: gpu-wheels gpu-check
# The lent GPU machine has no network and its own Python 3.12 (docs/gpu.md).
GPU_PY ?= $(shell test -x /opt/torch/.venv/bin/python3 && echo /opt/torch/.venv/bin/python3 || echo python3)
gpu-wheels: install ## Download and split the wheels the GPU machine lacks into .gpu-wheels/carry-N (needs PyPI)
	$(PY) -m clients.gpu_check.wheels prepare

gpu-check: ## ON the GPU machine, after the carries (docs/gpu.md): CUDA checks, GPU tests, benchmark into OUT/gpu
	GPU_PY=$(GPU_PY) bash clients/gpu_check/run.sh

clean: ## Remove the venv and local data
	rm -rf $(VENV) $(CHECKOV_VENV) $(MLFLOW_VENV) var .pytest_cache .mypy_cache .ruff_cache

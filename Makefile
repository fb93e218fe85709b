# One entry point for the project. `make demo` and `make test` are the two commands in README.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv models serve demo test unit e2e clean

# Debian packages (tools/system_packages.py, run with the base python3): the goals below set which list,
# and the missing ones are installed (root: apt-get; else sudo -n; else it stops with the command to run)
# before any virtualenv or pip install. Nothing is printed when all are there.
SYSTEM_PACKAGES :=
demo serve batch bluegreen: SYSTEM_PACKAGES := demo
test e2e bench bench-quick perf profile loadtest soak tune: SYSTEM_PACKAGES := test
.PHONY: system-packages
system-packages:
	$(if $(SYSTEM_PACKAGES),$(PY) tools/system_packages.py $(SYSTEM_PACKAGES))

venv: $(STAMP)
$(STAMP): requirements.txt requirements-export.txt pyproject.toml | system-packages
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0      # CPU build first, so nothing pulls a CUDA torch
	$(BIN)/pip install -q -r requirements-export.txt -r requirements.txt
	$(BIN)/pip install -q -e .
	touch $(STAMP)

models: venv
	$(BIN)/python -m export

# The server virtualenv: the Python stubs of the embedded tritonserver run its python3, so the backends
# see the kernel package and their pinned libraries (kernel/requirements.txt) and nothing else of the
# project (docs/architecture.md). Made by .venv's python, so from the same base Python, whose libpython
# the stub links. Every target that starts a tritonserver depends on it; the launcher refuses to start
# one without it.
SERVER_VENV := .venv-server
.PHONY: server-venv
server-venv: $(SERVER_VENV)/.installed
$(SERVER_VENV)/.installed: kernel/requirements.txt kernel/pyproject.toml | $(STAMP)
	test -x $(SERVER_VENV)/bin/python3 || $(BIN)/python -m venv $(SERVER_VENV)
	$(SERVER_VENV)/bin/pip install -q -r kernel/requirements.txt
	$(SERVER_VENV)/bin/pip install -q -e ./kernel
	touch $@

# what a target that starts tritonserver needs
SERVING := models server-venv

serve: $(SERVING)
	$(BIN)/triton-patterns serve

demo: $(SERVING)
	$(BIN)/triton-patterns demo

test: $(SERVING) check kserve-venv model-analyzer
	$(BIN)/python -m pytest -q

# the KServe Python SDK in a virtualenv of its own (numpy 2, protobuf 6: the project pins numpy<2 and
# tritonclient 2.51), for tests/e2e/test_kserve_sdk.py
KSERVE_VENV := .venv-kserve
.PHONY: kserve-venv
kserve-venv: $(KSERVE_VENV)/.installed
$(KSERVE_VENV)/.installed: requirements-kserve.txt | system-packages
	test -x $(KSERVE_VENV)/bin/python || $(PY) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install -q -r requirements-kserve.txt
	touch $@

# the model repository, statically: configs parse, model files exist, ensembles and BLS
# parameters name models, tensors and batch sizes that fit (triton-patterns check --help)
.PHONY: check
check: models
	$(BIN)/triton-patterns check

# TensorRT engines (FP16, INT8 where calibration data exists) as GPU variants in build/tensorrt;
# without a GPU or the tensorrt package it prints its plan and exits 0 (docs/export.md)
.PHONY: tensorrt
tensorrt: models
	$(BIN)/python -m export.tensorrt

unit: venv
	$(BIN)/python -m pytest -q tests/unit

# ruff check (its rules: pyproject.toml [tool.ruff]) and the parts' layering (import-linter); both also run
# in the unit suite (tests/unit/test_lint.py, tests/unit/test_layering.py)
.PHONY: lint
lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

e2e: $(SERVING)
	$(BIN)/python -m pytest -q tests/e2e

# Batch pattern: load the held-out iris rows into the store (idempotent), then predict every
# record the current iris version has not predicted; starts tritonserver + Redis unless
# BATCH_ARGS has --url HOST:GRPC_PORT (more: triton-patterns batch run --help).
BATCH_ARGS ?=
.PHONY: batch
batch: $(SERVING)
	$(BIN)/triton-patterns batch seed
	$(BIN)/triton-patterns batch run $(BATCH_ARGS)

# Blue-green release iris v1 -> v2 on a tritonserver it starts in explicit model-control mode, with
# clients calling the router iris_live throughout (BLUEGREEN_ARGS e.g. "--url HOST:8000" for a running one)
BLUEGREEN_ARGS ?=
.PHONY: bluegreen
bluegreen: $(SERVING)
	$(BIN)/triton-patterns bluegreen --to 2 $(BLUEGREEN_ARGS)

# Asynchronous pattern: WORKERS job workers against a running server (`make serve`, gRPC 8001) and
# Redis ($TRITON_PATTERNS_REDIS_URL or redis://127.0.0.1:6379/0) until Ctrl-C / SIGTERM, which
# lets each finish the job in hand; WORKER_ARGS e.g. "--url HOST:8001 --idle-timeout-ms 10000"
WORKERS ?= 2
WORKER_ARGS ?=
.PHONY: worker
worker: venv
	$(BIN)/triton-patterns worker --processes $(WORKERS) $(WORKER_ARGS)

# Container images (tools/images.sh): the server images (model-load, model-in-image) and the client image,
# with Docker where a Docker engine answers, else podman (installed as root); the NGC base where nvcr.io
# answers, else local stand-ins built once from the Debian archive (docs/deploy.md)
.PHONY: image
image: models
	tools/images.sh

# The compose stack (deploy/compose/compose.yaml: triton, redis, worker, gateway on :8443, prometheus;
# otel-collector, jaeger, grafana where their images can be had) on those images (tools/stack.sh);
# stack-down keeps the volumes unless STACK_DOWN_ARGS=--volumes
STACK_DOWN_ARGS ?=
.PHONY: stack-up stack-down
stack-up: image
	tools/stack.sh up

stack-down:
	tools/stack.sh down $(STACK_DOWN_ARGS)

# The triton pod of deploy/k8s (Triton + its gateway sidecar on 127.0.0.1:8443/8444) under `podman kube play`,
# rendered from the manifests by tools/kube_play.py (podman 4.3 as root; what it cannot run: docs/deploy.md);
# kube-up returns once every readiness probe of the pod passes. KUBE_ARGS e.g. "--prefix dev- --https-port 9443"
KUBE_ARGS ?=
.PHONY: kube-up kube-down
kube-up: image
	$(BIN)/python tools/kube_play.py up $(KUBE_ARGS)

kube-down: venv
	$(BIN)/python tools/kube_play.py down $(KUBE_ARGS)

clean:
	rm -rf build reports
	find model_repository model_repository_test \( -name model.onnx -o -name manifest.json -o -name tokenizer.json \) -delete

# -- benchmarks and load tests (loadtest/)
BENCH_ARGS ?=
.PHONY: bench bench-quick perf

bench: $(SERVING)   # every setup and its peers in one run: BENCHMARKS.md + reports/bench/*.png
	$(BIN)/python -m loadtest.bench $(BENCH_ARGS)

bench-quick: $(SERVING)
	$(BIN)/python -m loadtest.bench --quick $(BENCH_ARGS)

perf: $(SERVING)    # perf_analyzer (gRPC, concurrency 1 and 8) over every pattern model: reports/perf/*.csv
	$(BIN)/python -m loadtest.perf

# Triton Model Analyzer on MODEL alone (plus the models it calls) on a server of its own: reports/tune/MODEL/
# (results, reports, best_config/); its own virtualenv build/model-analyzer-venv (docs/tuning.md);
# TUNE_ARGS e.g. "--concurrency 1,2,8 --measurement-ms 3000"
MODEL ?= iris
TUNE_ARGS ?=
.PHONY: tune model-analyzer
tune: $(SERVING) model-analyzer
	$(BIN)/triton-patterns tune $(MODEL) $(TUNE_ARGS)

# triton-model-analyzer (version pinned in pattern_tools/tune.py) in build/model-analyzer-venv, from PyPI; quick once there
model-analyzer: venv
	$(BIN)/python -c "from pattern_tools.tune import model_analyzer; model_analyzer()"

.PHONY: profile
profile: $(SERVING) # py-spy + Triton statistics on the setups that miss a target: docs/bench/profiles/
	$(BIN)/python -m loadtest.profile

# locust, headless, USERS users per pattern (PATTERN: comma list or all): reports/locust/*.csv + locust.html;
# LOADTEST_ARGS e.g. "--protocol grpc" or "--url HOST:8000 --grpc-url HOST:8001" for a running server
PATTERN ?= all
USERS ?= 2
DURATION ?= 30s
LOADTEST_ARGS ?=
.PHONY: loadtest
loadtest: $(SERVING)
	$(BIN)/python -m loadtest.locust_run --pattern $(PATTERN) --users $(USERS) --duration $(DURATION) $(LOADTEST_ARGS)

# soak: locust over every pattern for SOAK_DURATION with SOAK_USERS users each, RSS of tritonserver, every
# Python stub and Redis sampled meanwhile; reports/soak/ (soak.json, soak.png, memory.csv, locust CSVs), exit 1
# on an error rate or a memory growth past the limits (SOAK_ARGS e.g. "--max-growth-mb 100"; docs/reliability.md)
SOAK_DURATION ?= 10m
SOAK_USERS ?= 1
SOAK_ARGS ?=
.PHONY: soak
soak: $(SERVING)
	$(BIN)/python -m loadtest.soak --duration $(SOAK_DURATION) --users $(SOAK_USERS) $(SOAK_ARGS)

# `make demo` and `make test` in a bare Debian 12 container (podman, as root) from a clean clone of the
# current branch, and the demo without libpython: an hour or so, not part of `make test`
# (tools/bare_machine_check.sh; BARE_ARGS=demo: the demo only)
BARE_ARGS ?=
.PHONY: bare-machine-check
bare-machine-check:
	tools/bare_machine_check.sh $(BARE_ARGS)

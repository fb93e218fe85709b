# One entry point for the project. `make demo` and `make test` are the two commands in README.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv models serve demo test unit e2e clean

venv: $(STAMP)
$(STAMP): requirements.txt requirements-export.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0      # CPU build first, so nothing pulls a CUDA torch
	$(BIN)/pip install -q -r requirements-export.txt -r requirements.txt
	$(BIN)/pip install -q -e .
	touch $(STAMP)

models: venv
	$(BIN)/python -m export

serve: models
	$(BIN)/triton-patterns serve

demo: models
	$(BIN)/triton-patterns demo

test: models
	$(BIN)/python -m pytest -q

unit: venv
	$(BIN)/python -m pytest -q tests/unit

e2e: models
	$(BIN)/python -m pytest -q tests/e2e

clean:
	rm -rf build reports
	find model_repository \( -name model.onnx -o -name manifest.json -o -name tokenizer.json \) -delete

# InferWatch: `make run` serves the default model with demo traffic; `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: setup run test pytest lint typecheck proto bench clean
.PHONY: bench-mlserver load
.PHONY: generate up down

setup: $(INSTALLED)

# torch==2.13.0 first: the CPU wheel is on local disk, any looser spec pulls a multi-GB CUDA build.
# Elsewhere: TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu".
TORCH_PIP_ARGS ?=
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP_ARGS) torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

run: setup
	$(PY) -m model_server.demo $(ARGS)

test: lint typecheck pytest

pytest: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

# Regenerates the committed protobuf/gRPC stubs (and their type stubs) from the .proto.
proto: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m grpc_tools.protoc -I . \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
		model_server/proto/grpc_service.proto model_server/proto/monitoring.proto \
		model_server/proto/model_repository.proto

bench: setup
	$(PY) benchmarks/bench_model_server.py

# InferWatch (full telemetry) against MLServer 1.7.1 in .venv-mlserver; see benchmarks/RESULTS.md.
bench-mlserver: setup
	$(PY) -m benchmarks.bench_vs_mlserver $(ARGS)

# Traffic at a running model server or gateway, e.g. make load ARGS="--rate 200 --duration 60".
load: setup
	$(VENV)/bin/inferwatch-load $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# Rewrites the alert rules and dashboards generated from monitoring/alerts and
# monitoring/dashboards (a test fails when the committed files are stale).
generate: setup
	$(PY) -m monitoring.alerts
	$(PY) -m monitoring.dashboards

# The whole stack in Docker (docs/stack.md); GRAFANA_ADMIN_PASSWORD sets Grafana's password.
up:
	docker compose up -d --build

down:
	docker compose down

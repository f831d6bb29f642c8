SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROTO_OUT := libs/protogen
PROTOS := $(shell find protos -name '*.proto')
SITE := $(shell $(PYTHON) -c 'import sys; print(f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages")' 2>/dev/null)

help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed ## Create .venv and install Postwire with its dev tools

$(PROTO_OUT)/.generated: $(BIN)/.installed $(PROTOS)
	rm -rf $(PROTO_OUT) && mkdir -p $(PROTO_OUT)
	# mypy-protobuf writes the .pyi stubs (messages and gRPC stubs/servicers) that mypy --strict
	# checks our code against; protoc's own --pyi_out has no types for the _grpc modules.
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy --mypy_out=$(PROTO_OUT) \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=$(PROTO_OUT) $(PROTOS)
	# Generated code imports itself as `postwire.v1…`; a .pth puts the output dir on sys.path.
	echo "$(CURDIR)/$(PROTO_OUT)" > $(VENV)/$(SITE)/postwire_protogen.pth
	touch $@

gen: $(PROTO_OUT)/.generated ## Generate Python code from protos/

lint: gen ## buf lint + buf format + ruff + mypy --strict + import contracts + hadolint
	$(BIN)/buf lint
	$(BIN)/buf format -d --exit-code
	$(BIN)/ruff check services libs tests bench
	$(BIN)/mypy services libs bench
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

# Test workers (pytest-xdist), each with its own NATS, PostgreSQL, sink and services; a test module
# (or the delivery package) runs whole on one worker, slowest first (tests/conftest.py schedules).
TEST_WORKERS ?= 2

# GRPC_ENABLE_FORK_SUPPORT=0: the test processes start servers (initdb, postgres, nats, services)
# with fork+exec while gRPC's threads run, and grpcio 1.85's fork handlers, on in its core, now and
# then crashed the child before its exec (initdb died of SIGSEGV after "skipping fork() handlers").
# No child of ours uses gRPC after a fork, so the handlers are not needed (grpc/grpc#13873).
test: lint ## Install, generate, lint and run every test (what CI runs)
	GRPC_ENABLE_FORK_SUPPORT=0 $(BIN)/python -m pytest -q --durations=25 -n $(TEST_WORKERS) tests

up: gen ## Run the whole suite locally (embedded NATS + PostgreSQL + capture inbox)
	$(BIN)/postwire up

bench: gen ## Benchmark the send path end to end; prints and writes a table
	$(BIN)/python -m bench
	$(BIN)/python -m bench.render
	$(BIN)/python -m bench.admission
	$(BIN)/python -m bench.lanes
	$(BIN)/python -m bench.recovery
	$(BIN)/python -m bench.dkim
	$(BIN)/python -m bench.webhooks

chaos: gen ## Fault runs under load (kill -9, NATS/PostgreSQL restarts, wipe, …); prints a table
	$(BIN)/python -m bench.chaos

clean: ## Remove the venv, generated code and local data
	rm -rf $(VENV) $(PROTO_OUT) .postwire bench/results

.PHONY: help install gen lint test up bench chaos clean

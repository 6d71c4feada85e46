# metarec — `make help` lists the targets. The virtual environment lives at .venv.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
# The stamp changes whenever the pinned requirements or the package metadata change.
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml 2>/dev/null | sha256sum | cut -c1-12)

.PHONY: help venv install kafka-up kafka-down kafka-status demo test test-fast test-broker chaos chaos-long lint typecheck lock clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
	  || { echo "metarec needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)" >&2; exit 1; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q uv==$(UV_VERSION)
	@# bytecode compiled once here: uv does not by default, and with PYTHONDONTWRITEBYTECODE set every
	@# process compiled torch, faust, ... from source at each start (a compute child: ~8 s -> ~3 s to torch)
	$(VENV)/bin/uv pip install --python $(PY) -q --compile-bytecode -r requirements.lock
	$(VENV)/bin/uv pip install --python $(PY) -q --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create .venv and install the pinned dependencies (idempotent)
install: venv

kafka-up: ## start the local Apache Kafka (KRaft, 127.0.0.1:9092); fetches its jars once
	@bash deploy/kafka/kafka.sh up

kafka-down: ## stop the local Apache Kafka
	@bash deploy/kafka/kafka.sh down

kafka-status: ## is the local Kafka running?
	@bash deploy/kafka/kafka.sh status

demo: venv ## end to end: Kafka, simulate, meta-train, worker, replay, print recommendations
	$(PY) -m services.demo

test: venv ops-tools ## the whole test suite (starts its own Kafka unless METAREC_KAFKA_BOOTSTRAP is set)
	METAREC_KUSTOMIZE=$(KUSTOMIZE) $(PY) -m pytest -q

test-fast: venv ## the tests that need no broker, Prometheus or deploy tools
	$(PY) -m pytest -q -m "not kafka and not security and not prometheus and not deploy and not slow"

chaos: venv ## the chaos suite, short form (also part of make test): worker SIGKILLs, rebalances, a paused worker, a broker kill
	$(PY) -m pytest -q -s -m chaos tests/chaos

chaos-long: venv ## the chaos soak (~5 min; 15 before faster starts): more faults, longer; writes bench/results/chaos.json and chaos.md
	METAREC_CHAOS=long $(PY) -m pytest -q -s -m chaos tests/chaos

lint: venv ## ruff over the code
	$(VENV)/bin/ruff check shared services tests bench

typecheck: venv ## mypy over the library
	$(VENV)/bin/mypy

lock: venv ## re-resolve requirements.lock from pyproject.toml
	$(VENV)/bin/uv pip compile pyproject.toml --extra eval --extra dev --python-version 3.11 -o requirements.lock

clean: kafka-down ## stop Kafka and remove local state (.state), keeping .venv and the jar cache
	rm -rf .state

include deploy/ops.mk
-include bench/bench.mk
bench bench-quick: venv

# Benchmarks (included by the top-level Makefile: `include bench/bench.mk`; standalone:
# `make -f bench/bench.mk bench-quick`). Results: bench/results/*.json|md|png, summary.json
# (bench-quick: bench/results/quick/, which git ignores).

BENCH_PYTHON ?= .venv/bin/python

.PHONY: bench bench-quick

bench: ## full benchmark suite (<= 20 min): adaptation, export, scoring, River, end to end on Kafka
	$(BENCH_PYTHON) bench/run.py

bench-quick: ## quick benchmark suite (<= 3 min), same figures with fewer rounds and a shorter e2e
	$(BENCH_PYTHON) bench/run.py --quick

# spendsentry developer tasks: `make help` lists them.

PY ?= python

.PHONY: help lint types test check bench

help:  ## list the tasks
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

lint:  ## ruff lint and format check
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m ruff format --check src tests benchmarks scripts

types:  ## mypy on src/
	$(PY) -m mypy

test:  ## the test suite (unit, doctests, integration on the embedded broker)
	$(PY) -m pytest -q

check: lint types test  ## everything CI checks

bench:  ## detection quality and throughput benchmarks (minutes)
	$(PY) benchmarks/bench_detection.py --seeds 1-16 --quiet-seeds 101-104
	$(PY) benchmarks/bench_replay.py
	$(PY) benchmarks/bench_worker.py

# One front door for developers and CI. `make check` is what CI runs after installing.
PY ?= .venv/bin/python

.PHONY: venv lint typecheck test check bench bench-scale bench-live perf-guard demo

venv:
	python3 -m venv .venv && .venv/bin/pip install -e '.[test]'

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck:
	$(PY) -m mypy

test:
	$(PY) -m pytest

check: lint typecheck test

bench:
	$(PY) -m bench.run

bench-scale:
	$(PY) -m bench.scale

bench-live:
	$(PY) -m bench.live

perf-guard:
	$(PY) -m bench.guard

demo:
	.venv/bin/liqmon demo

# distrec — one command per task. `make help` lists them.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements/lock.txt pyproject.toml | cksum | cut -d' ' -f1)
CONFIG ?=
OUT    ?= runs
export PYTHONUNBUFFERED := 1

.PHONY: help setup test test-fast demo lint bench train prepare fit tune compress distill report submit ray-up ray-down cluster-up cluster-down fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install the pinned stack (idempotent)

$(STAMP): requirements/lock.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements/lock.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

test: setup ## run the whole test suite
	$(PY) -m pytest -q tests

test-fast: setup ## the tests that start no Ray cluster
	$(PY) -m pytest -q -m "not slow" tests

demo: setup ## prepare a synthetic ML-100K-shaped dataset and print its summary
	$(PY) jobs/prepare.py synthetic --like ml-100k --out $(OUT)/demo/data

prepare: setup ## make prepare ARGS="ml-100k --source DIR --out URI"
	$(PY) jobs/prepare.py $(ARGS)

lint: setup ## static checks
	$(PY) -m compileall -q distrec jobs tests

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .hypothesis

# distrec — one command per task. `make help` lists them.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements/common.txt requirements/cpu.txt pyproject.toml | cksum | cut -d' ' -f1)
CONFIG ?=
ARGS   ?=
OUT    ?= runs
# the local head of `make ray-up`: RAY_HOST=0.0.0.0 exposes it on every interface (default: 127.0.0.1 only)
RAY_HOST ?= 127.0.0.1
RAY_PORT ?= 6379
RAY_DASHBOARD_PORT ?= 8265
RAY_HEAD ?= $(OUT)/ray-head.json
# `make cluster-local`: the head (schedules nothing, as on a real cluster) and NODES-1 worker nodes of NODE_CPUS CPUs
NODES ?= 3
NODE_CPUS ?= 1
RAY := RAY_AUTH_MODE=token PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/ray
HEAD := $(PY) jobs/ray_head.py --record $(RAY_HEAD)
export PYTHONUNBUFFERED := 1

.PHONY: help setup test test-fast fuzz demo lint prepare train tune submit ray-up ray-down cluster-local cluster-local-down cluster-up cluster-down bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv, install the pinned stack and build the CPU kernels (idempotent)
	@PATH=$(abspath $(VENV))/bin:$$PATH $(PY) -m distrec.kernels || echo "warning: distrec's CPU kernels did not build (is g++ installed?): implicit ALS and Distill-CF use their slower torch versions"

$(STAMP): requirements/common.txt requirements/cpu.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements/cpu.txt -r requirements/common.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

# The fast tests of the packages that compute with torch's float kernels run a second time on
# torch's AVX2 kernels (the first run uses this machine's best, e.g. AVX-512): an assertion that
# holds for one kernel's rounding only fails here, not on a user's machine. Skipped on a CPU
# without AVX2, which torch cannot be forced onto.
KERNEL_TESTS := tests/models tests/eval tests/features tests/fit tests/compress tests/distill
HAS_AVX2 := $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo yes)

# The suite's pytest-xdist workers: each takes whole modules (a module's fixtures are made once,
# e.g. the multi-node cluster), the largest first, the next whenever it is free
TEST_WORKERS ?= 2

test: setup lint ## make lint, the whole test suite, then the float-kernel tests again on AVX2 kernels
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope tests
ifeq ($(HAS_AVX2),yes)
	ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(KERNEL_TESTS)
else
	@echo "no AVX2 on this CPU: the fast tests' second run, on AVX2 kernels, is skipped"
endif

test-fast: setup ## the tests that start no Ray cluster
	$(PY) -m pytest -q -m "not slow" tests

fuzz: setup ## the parser fuzz properties with 5,000 examples each (make test runs 60)
	DISTREC_FUZZ_EXAMPLES=5000 $(PY) -m pytest -q tests/data/test_parser_fuzz.py

demo: setup ## the main job: synthetic ML-100K-shaped data, biased MF on 2 workers of a local Ray
	$(PY) jobs/prepare.py synthetic --like ml-100k --out $(OUT)/demo/data
	$(PY) jobs/train.py --config configs/mf/demo.yaml data.path=$(OUT)/demo/data output_dir=$(OUT)/demo/mf ray.storage_path=$(OUT)/ray

prepare: setup ## make prepare ARGS="ml-100k --source DIR --out URI"
	$(PY) jobs/prepare.py $(ARGS)

train: setup ## make train CONFIG=configs/mf/ml-100k.yaml [ARGS="train.epochs=5 ..."] (embedded local Ray)
	$(PY) jobs/train.py --config $(CONFIG) $(ARGS)

.PHONY: fit compare
fit: setup ## make fit CONFIG=configs/infae/ml-1m.yaml [ARGS=...]: a closed form (EASE, ∞-AE), λ on validation, test
	$(PY) jobs/fit.py --config $(CONFIG) $(ARGS)

.PHONY: plan gpu-check
plan: setup ## make plan CONFIG=configs/mf/netflix.yaml ARGS="--nodes 8 --gpus-per-node 8 --users 1000000000 --items 100000000": TorchRec's plan for a GPU cluster, on any machine
	$(PY) jobs/plan.py --config $(CONFIG) $(ARGS)

gpu-check: ## on a machine with NVIDIA GPUs: .venv-gpu from requirements/gpu.txt, versions, pytest -m gpu, the demo on CPU vs 1 and 2 GPUs
	bash cluster/gpu-check.sh

.PHONY: distill
distill: setup ## make distill [CONFIG=configs/distill/ml-1m.yaml] [ARGS=...]: Distill-CF synthetic users, ∞-AE on them
	$(PY) jobs/distill.py --config $(or $(CONFIG),configs/distill/ml-1m.yaml) $(ARGS)

compare: setup ## make compare CONFIG=configs/compare/ml-1m-infae.yaml: every listed model on one dataset, table + plot
	$(PY) jobs/compare.py --config $(CONFIG) $(ARGS)

tune: setup ## make tune CONFIG=configs/tune/mf-ml-1m.yaml [ARGS=...]; resume: make tune ARGS="--resume runs/tune/mf-ml-1m"
	$(PY) jobs/tune.py $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

.PHONY: serve
RUN ?=
serve: setup ## make serve RUN=runs/demo/mf [ARGS="--port 8080 --replicas 2 --index hnsw"]: HTTP API + page on 127.0.0.1
	@test -n "$(RUN)" || { echo "usage: make serve RUN=<a training or fit run's output_dir> [ARGS=...]"; exit 2; }
	$(PY) jobs/serve.py --run $(RUN) $(ARGS)

ray-up: setup ## a local Ray head: token auth, on 127.0.0.1 only (RAY_HOST=0.0.0.0 exposes it); fails if its ports are taken; recorded in RAY_HEAD
	@$(RAY) get-auth-token --generate >/dev/null
	$(HEAD) up --host $(RAY_HOST) --port $(RAY_PORT) --dashboard-port $(RAY_DASHBOARD_PORT)

ray-down: ## stop the head `make ray-up` recorded, and only it (other Ray instances keep running)
	$(HEAD) down

cluster-local: setup ## a local multi-node cluster: token-auth head + NODES-1 worker nodes (NODE_CPUS each) on 127.0.0.1, recorded in RAY_HEAD
	@$(RAY) get-auth-token --generate >/dev/null
	$(HEAD) up --nodes $(NODES) --node-cpus $(NODE_CPUS) --num-cpus 0 --port $(RAY_PORT) --dashboard-port $(RAY_DASHBOARD_PORT)

cluster-local-down: ## stop the cluster `make cluster-local` recorded (its head and worker nodes), and only it
	$(HEAD) down

submit: setup ## make submit CONFIG=configs/mf/ml-100k.yaml [ARGS=...]: the training job through the Jobs API of the `make ray-up` / `make cluster-local` head
	$(HEAD) submit -- python jobs/train.py --config $(CONFIG) $(ARGS)

cluster-up: setup ## bring up the AWS cluster of cluster/aws.yaml
	$(RAY) up -y cluster/aws.yaml

cluster-down: setup ## tear the AWS cluster down
	$(RAY) down -y cluster/aws.yaml

lint: setup ## formatting and lint (ruff, rules in pyproject.toml), then byte-compile; `ruff format` + `ruff check --fix` repair most
	$(PY) -m ruff format --check distrec jobs tests
	$(PY) -m ruff check distrec jobs tests
	$(PY) -m compileall -q distrec jobs tests

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .hypothesis

bench: setup ## benchmarks against same-run baselines (ARGS="--quick" for a smoke run)
	$(PY) jobs/benchmark.py --out bench.json $(ARGS)

PEERS_VENV ?= .venv-peers
.PHONY: bench-peers-setup
bench-peers-setup: ## the peers suite's libraries (implicit, Spark, myfm) in $(PEERS_VENV), pinned in requirements/peers.txt
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements/peers.txt

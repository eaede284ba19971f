# crt: `make help` lists the targets.
# PY=<python> on the command line or in the environment, or an activated virtual environment ($$VIRTUAL_ENV),
# is used as it is: no .venv is created and nothing is installed. Otherwise `make` creates .venv and installs.
PY_GIVEN := $(filter command line environment environment override,$(origin PY))
ifeq ($(PY_GIVEN),)
ifneq ($(VIRTUAL_ENV),)
PY := $(VIRTUAL_ENV)/bin/python
PY_GIVEN := virtualenv
endif
endif
PY ?= .venv/bin/python
PIP ?= .venv/bin/pip
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint clean clean-cache bench bench-overhead startup-check gpu-check

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

.venv/.installed: pyproject.toml requirements.txt
	python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q -e ".[dev]"
	touch $@

ifeq ($(PY_GIVEN),)
install: .venv/.installed ## create .venv and install crt with pinned torch/torchvision (skipped when PY= or a venv is active)
else
install:
	@echo "using $(PY) as it is (PY given or virtual environment active): nothing installed"
endif

run: install ## install, then run the default job (ECRT-MP on the toy Hénon data); ARGS="key=value ..." adds overrides
	$(PY) run.py $(ARGS)

# Tests run in parallel with pytest-xdist, one single-threaded worker per core, at most 4 (TEST_JOBS=0, or a PY= without
# pytest-xdist: all in one process). Expanded when the recipe runs, after install.
TEST_JOBS ?= auto
XDIST = $(if $(filter 0,$(TEST_JOBS)),,$(shell $(PY) -c "import xdist" >/dev/null 2>&1 && echo "-n $(TEST_JOBS) --maxprocesses 4 --dist worksteal"))

test: install ## install, then run the whole test suite (slow tests included; TEST_JOBS=0: one process)
	CRT_DATA_DIR=$${CRT_DATA_DIR:-../shared/data} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -x $(XDIST) $(ARGS)

test-fast: install ## the tests not marked slow
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -m "not slow" $(XDIST) $(ARGS)

lint: install ## ruff
	$(PY) -m ruff check crt scripts tests run.py

bench: install ## steady-state throughput + projected time per stage (ARGS="--experiment cifar100_ecrt_mp", "--size tiny")
	$(PY) scripts/bench.py $(ARGS)

bench-overhead: install ## crt's Lightning stages vs a plain PyTorch loop, same models/steps/validation: per-stage ratios (ARGS="--rounds 3 --whole")
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) scripts/bench_overhead.py $(ARGS)

startup-check: install ## how fast a config error / --cfg job / --help answer against `import torch`; lines a default run prints (ARGS=--lines)
	$(PY) scripts/startup_check.py $(ARGS)

gpu-check: install ## on a GPU: cifar100_ecrt_mp eager vs compiled, trainer=gpu, bf16 vs fp32, NCCL start -> docs/gpu.md (<= 8 min); no GPU: the dry run (tiny, CPU, eager) -> outputs/gpu_check.md
	@if $(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
		$(PY) scripts/bench.py --gpu-check --write docs/gpu.md $(ARGS); \
	else \
		echo "no CUDA device: dry run on the CPU (figures unmeasured), docs/gpu.md left as it is"; \
		$(PY) scripts/bench.py --gpu-check --dry --epochs 1 --write outputs/gpu_check.md $(ARGS); \
	fi

clean: ## remove run folders and the stage cache (outputs/)
	rm -rf outputs

clean-cache: ## remove only the stage cache (outputs/cache): run folders, their model/ and crt.load keep working
	rm -rf outputs/cache

-include make/*.mk

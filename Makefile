# fastact: `make test`, `make bench`, `make check-cuda` work on a fresh machine: each creates
# what it needs (a .venv with pinned dependencies, the built extension) first.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
JOBS ?= 2
# Extra arguments of benchmarks/run.py for make bench / bench-quick, e.g. BENCH_ARGS="--threads 1"
BENCH_ARGS ?=

# make check-cuda: the CUDA build of torch lives in a venv cached outside the checkout.
CUDA_CACHE ?= $(HOME)/.cache/fastact
CUDA_VENV := $(CUDA_CACHE)/venv-torch2.14.1-cu130
CUDA_BUILD ?= $(CUDA_CACHE)/build-cuda
CUDA_HOME ?= /usr/local/cuda

.PHONY: test bench bench-quick bench-check bench-baseline check-cuda build extension clean

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

build: $(VENV)/.installed
	MAX_JOBS=$(JOBS) FASTACT_SKIP_CUDA=1 $(PY) -m pip install -q --no-build-isolation --no-deps -e .

# `build` when the extension is missing or older than a source or the venv: a build with nothing
# to do still takes a minute or two here, which the benchmark targets skip (CI has just built it).
EXTENSION = $(firstword $(wildcard fastact/_C*.so))
extension: $(VENV)/.installed
	@if [ -z "$(EXTENSION)" ] || \
		[ -n "$$(find csrc setup.py $(VENV)/.installed -type f -newer $(EXTENSION) -print -quit)" ]; \
		then $(MAKE) build; fi

test: build
	$(PY) -m pytest

bench: extension
	$(PY) benchmarks/run.py $(BENCH_ARGS)

bench-quick: extension
	$(PY) benchmarks/run.py --quick $(BENCH_ARGS)

# The performance regression check (CI): the quick speed suite against the committed baseline
# of this machine class in benchmarks/baseline.json.
bench-check: extension
	$(PY) benchmarks/run.py --check benchmarks/baseline.json --out bench-results/check

# A new baseline for this machine class: the quick suite 5 times (one thread), the noise study
# in bench-results/baseline/.
bench-baseline: extension
	$(PY) benchmarks/run.py --update-baseline benchmarks/baseline.json --out bench-results/baseline

$(CUDA_VENV)/.installed: requirements-cuda.txt
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q --upgrade pip
	$(CUDA_VENV)/bin/python -m pip install -q -r requirements-cuda.txt
	touch $@

check-cuda: $(CUDA_VENV)/.installed
	rm -rf $(CUDA_BUILD)/lib
	cd $(CURDIR) && CUDA_HOME=$(CUDA_HOME) FASTACT_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" \
		MAX_JOBS=$(JOBS) $(CUDA_VENV)/bin/python setup.py -q build \
		--build-base $(CUDA_BUILD) --build-lib $(CUDA_BUILD)/lib
	CUDA_HOME=$(CUDA_HOME) $(CUDA_VENV)/bin/python tools/check_cuda.py $(CUDA_BUILD)/lib

clean:
	rm -rf build *.egg-info fastact/_C*.so bench-results

# Exploration, not CI: the property tests with fresh random seeds, FUZZ_EXAMPLES examples a run
# of each test on each backend, for FUZZ_MINUTES; prints each run's seed and how to replay a
# failure (tools/fuzz.py). FUZZ_ARGS adds e.g. "-k dct" or "--seed 123".
FUZZ_MINUTES ?= 30
FUZZ_EXAMPLES ?= 1000
FUZZ_ARGS ?=
.PHONY: fuzz
fuzz: extension
	$(PY) tools/fuzz.py --minutes $(FUZZ_MINUTES) --examples $(FUZZ_EXAMPLES) $(FUZZ_ARGS)

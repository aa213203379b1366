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

.PHONY: test test-slow test-fast plant-bugs bench bench-quick bench-check bench-baseline check-cuda check-gpu build extension clean

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# The CUDA kernels are built too where torch has CUDA and nvcc is found (setup.py decides), and
# always fastact._C_emulated: the same CUDA sources on the SIMT emulator ("cuda-emulated").
build: $(VENV)/.installed
	FASTACT_EMULATED_CUDA=1 MAX_JOBS=$(JOBS) $(PY) -m pip install -q --no-build-isolation --no-deps -e .

# Proof that the emulated-CUDA tests bite: five planted kernel bugs, each caught, then reverted
# (tools/plant_bugs.py; a scratch copy, the checkout is not touched).
plant-bugs: build
	MAX_JOBS=$(JOBS) $(PY) tools/plant_bugs.py

# `build` when the extension is missing or older than a source or the venv: a build with nothing
# to do still takes a minute or two here, which the benchmark targets skip (CI has just built it).
EXTENSION = $(firstword $(wildcard fastact/_C*.so))
extension: $(VENV)/.installed
	@if [ -z "$(EXTENSION)" ] || \
		[ -n "$$(find csrc setup.py $(VENV)/.installed -type f -newer $(EXTENSION) -print -quit)" ]; \
		then $(MAKE) build; fi

# The suite on every core (pytest-xdist; worksteal: a worker that runs out takes queued tests
# from the other), all but the `slow` mark: the tests that need ~13 GiB for one tensor of
# 2^31 + 5 elements (several at once would not fit in memory) and an AOTInductor compile.
# `make test-slow` runs those, one at a time; CI runs both.
TEST_WORKERS ?= auto
PARALLEL_PYTEST = $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal
test: build
	$(PARALLEL_PYTEST) -m "not slow"

test-slow: extension
	$(PY) -m pytest -m slow

# The inner loop: no slow tests, no Triton-interpreter ids, the short hypothesis profile; the
# extension is rebuilt only when a source changed.
test-fast: extension
	HYPOTHESIS_PROFILE=fast $(PARALLEL_PYTEST) -q -m "not slow" -k "not interpreter"

bench: extension
	$(PY) benchmarks/run.py $(BENCH_ARGS)

bench-quick: extension
	$(PY) benchmarks/run.py --quick $(BENCH_ARGS)

# The performance gate (CI): this tree against the baseline commit recorded in
# benchmarks/baseline.json, both built here and timed alternately in fresh processes
# (benchmarks/gate.py; the baseline build is cached in $(CUDA_CACHE)/baseline).
bench-check: extension
	MAX_JOBS=$(JOBS) FASTACT_CACHE=$(CUDA_CACHE) $(PY) benchmarks/gate.py --out bench-results/check

# After a deliberate change in speed (commit it first): the gate's baseline commit becomes HEAD,
# and this machine class's stored ratios (the gate's fall-back) are measured again: the quick
# suite 5 times (one thread), the noise study in bench-results/baseline/.
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

# On a machine with a GPU and its own python3 + CUDA torch (no network, nothing installed):
# build with the CUDA kernels for that GPU, every gpu test, the quick speed suite on CUDA into
# bench-results/gpu/ (tools/check_gpu.py).
GPU_PYTHON ?= python3
check-gpu:
	$(GPU_PYTHON) tools/check_gpu.py

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

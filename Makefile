# Set-up and entry points of lma_mmseg. Every target sets up what it needs
# into .venv, idempotently: a second run only checks and returns.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SHARED_WHEELS ?= ../shared/wheels
TORCH_VERSION := 2.13.0
MMCV_VERSION := 2.1.0
MMENGINE_VERSION := 0.10.7
MMSEG_VERSION := 1.2.2
DEPS_STAMP := $(VENV)/.deps-installed
PKG_STAMP := $(VENV)/.pkg-installed
EXT_SOURCES := setup.py setup.cfg pyproject.toml $(shell find lma_mmseg/ops/csrc -type f 2>/dev/null)
FIND_LINKS := $(if $(wildcard $(SHARED_WHEELS)/*.whl),--find-links $(SHARED_WHEELS),)
PYTEST_ARGS ?=
# The suite runs on every core (pytest-xdist), one test file per worker at a
# time, so that a file's shared fixtures are built once; the longest files
# first, in the order tests/conftest.py gives (LONG_FILES).
TEST_JOBS ?= $(shell nproc)
PYTEST_PARALLEL := -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder
# OpenMP threads that spin while waiting slow everything down on small or
# shared machines (tests and tools run several processes at once).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install deps test test-quick demo clean-venv gpu-wheels ext-missing

install: $(PKG_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Third-party stack. torch is only installed when the venv has none.
# mmcv comes from a prebuilt wheel in $(SHARED_WHEELS) when one fits;
# otherwise pip builds the PyPI sdist with its ops (about 15 min on 2 cores).
$(DEPS_STAMP): | $(PY)
	$(PIP) install -q --upgrade pip "setuptools>=77,<81" wheel ninja
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install torch==$(TORCH_VERSION)
	$(PIP) install mmengine==$(MMENGINE_VERSION)
	MMCV_WITH_OPS=1 MAX_JOBS=$$(nproc) $(PIP) install --no-build-isolation $(FIND_LINKS) mmcv==$(MMCV_VERSION)
	$(PIP) install mmsegmentation==$(MMSEG_VERSION) ftfy regex
	$(PY) -c "import torch, mmcv.ops, mmengine, mmseg; print('torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmseg', mmseg.__version__)"
	touch $@

deps: $(DEPS_STAMP)

ext-missing:

# This package, editable, with its compiled extension lma_mmseg._ext
# (built again when its sources change or the built library is gone).
EXT_LIB := $(wildcard lma_mmseg/_ext*.so)
$(PKG_STAMP): $(DEPS_STAMP) $(EXT_SOURCES) $(if $(EXT_LIB),,ext-missing)
	$(PIP) install --no-build-isolation -e ".[tests]"
	$(PY) -c "import lma_mmseg, lma_mmseg._ext; print('lma_mmseg', lma_mmseg.__version__)"
	touch $@

# The whole suite. pytest exits with 5 when it collected no test: that is a
# failure too.
test: install
	@$(PY) -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no test" >&2; fi; \
	exit $$rc

# The inner loop: the suite without the tests marked slow (compile, export,
# end-to-end training and tool runs). `make test` stays the whole suite.
test-quick: install
	@$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow" $(PYTEST_ARGS)

# Synthetic video data (generated once into data/demo), single-frame ERFNet
# and LMA-ERFNet trained, evaluated and timed, leaderboard and images in
# work_dirs/demo. DEMO_ARGS passes options to tools/demo.py.
DEMO_ARGS ?=
demo: install
	$(PY) tools/demo.py $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)

# What tools/gpu_check.py carries to a GPU machine with Python 3.12 and no
# network, downloaded into .whl/ (git-ignored): the wheels of mmengine,
# mmsegmentation and the pure-Python packages that machine lacks, and the
# mmcv sdist (its ops are built there). Files already there are not fetched
# again; offline it succeeds only when all of them are there.
gpu-wheels: | $(PY)
	MMCV_VERSION=$(MMCV_VERSION) MMENGINE_VERSION=$(MMENGINE_VERSION) \
	  MMSEG_VERSION=$(MMSEG_VERSION) $(PY) tools/gpu_check.py --fetch-wheels

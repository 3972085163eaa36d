# e2econd — set-up, demo and tests in one command each (README's first two commands).
#   make demo   install what is missing, then run the whole pipeline on the embedded top-jet data
#   make test   install what is missing, then ruff + the test suite (CPU)
# Variables: PYTHON (python3), VENV (.venv), TORCH_SPEC (torch==2.14.1: a CUDA 13.0 build, so the
# CUDA kernels compile even without a GPU; torch==2.13.0 is a small CPU-only build), PYTEST_ARGS
# (default: the fast suite, `-m "not slow and not cuda"`; CI passes `-m "not cuda"`, slow tests included).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1
PYTEST_ARGS ?= -m "not slow and not cuda"
PY := $(VENV)/bin/python
STAMP := $(VENV)/.e2econd-installed
SOURCES := setup.py pyproject.toml e2econd/ops/_build.py $(wildcard csrc/*.cpp csrc/*.h csrc/cpu/*.cpp csrc/cpu/*.h csrc/cuda/*.cu csrc/cuda/*.cuh)
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif

.PHONY: setup demo test lint bench info clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Installs torch only when the venv has none, then builds e2econd and its extension (editable).
$(STAMP): $(PY) $(SOURCES)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --prefer-binary "$(TORCH_SPEC)"
	$(PY) -m pip install -q --prefer-binary "setuptools>=69" wheel ninja "pybind11>=2.12" numpy
	MAX_JOBS=$${MAX_JOBS:-2} $(PY) -m pip install --prefer-binary --no-build-isolation -e ".[gen,test]"
	@touch $(STAMP)

setup: $(STAMP)

info: setup
	$(VENV)/bin/e2econd info

demo: setup
	$(VENV)/bin/e2econd demo $(DEMO_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	$(VENV)/bin/e2econd info
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(PY) tools/bench_kernels.py --device $${DEVICE:-cpu} --quick

clean:
	rm -rf build dist $(VENV) e2econd/_C*.so e2econd/_C.torch.json *.egg-info

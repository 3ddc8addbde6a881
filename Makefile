# make demo — set up and plan the quickstart; make test — set up and run the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	@export ADO_CLIENT_ID=$${ADO_CLIENT_ID:-3f2a1b7c-demo-app} ADO_CLIENT_SECRET=$${ADO_CLIENT_SECRET:-demo-secret-not-real}; \
	set -e; \
	echo '$$ reconciler -C examples/quickstart validate'; \
	$(BIN)/reconciler -C examples/quickstart validate; \
	echo; echo '$$ reconciler -C examples/quickstart plan'; \
	$(BIN)/reconciler -C examples/quickstart plan

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

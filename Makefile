# make demo — the quickstart, then examples/cyclr, end to end against the sandbox; make sandbox — the quickstart's
# sandbox in the foreground, to follow README's tour in another terminal; make lint — ruff and mypy; make test — set
# up, lint and run the tests; make reliability — the reliability suite at full budgets; make fidelity — the plan
# fidelity test at full budget.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The product alone (what the demo and the sandbox need); STAMP adds the test extras (pytest, playwright, ...).
PRODUCT_STAMP := $(VENV)/.installed-product

CHROMIUM := /usr/bin/chromium

PG_BIN   := /usr/lib/postgresql/15/bin

.PHONY: demo sandbox lint test reliability fidelity bench clean browser postgres

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP) $(PRODUCT_STAMP)

# Errors only (-qq): setuptools' advice on editable installs is no part of the demo.
$(PRODUCT_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --quiet -e .
	touch $(PRODUCT_STAMP)

demo: $(PRODUCT_STAMP)
	bash examples/quickstart/demo.sh
	bash examples/cyclr/demo.sh
	bash examples/service/demo.sh

sandbox: $(PRODUCT_STAMP)
	bash examples/quickstart/sandbox.sh

# The browser tests drive Debian's Chromium through Playwright (no browser download).
browser:
	@test -x $(CHROMIUM) || { echo "installing chromium (Debian package) for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The backend tests start their own PostgreSQL 15 from these binaries (initdb + pg_ctl, 127.0.0.1 only).
postgres:
	@test -x $(PG_BIN)/initdb || { echo "installing PostgreSQL 15 (Debian package) for the backend tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; }

# ruff (rules in pyproject.toml) over the package, tests, benchmark and examples; mypy over the package.
# A few seconds with mypy's cache (.mypy_cache); make test runs it first.
lint: $(STAMP)
	$(BIN)/ruff check reconciler tests bench examples
	$(BIN)/mypy

test: $(STAMP) lint browser postgres
	$(BIN)/python -m pytest -m "not slow"

# The reliability suite at full budgets (bad input, secrets, OAuth attacks, 10,000 fuzz examples, crashes,
# concurrency, faults, the service under bad requests, slow clients and SIGTERM): one line per area with its
# figures at the end.
reliability: $(STAMP) browser postgres
	$(BIN)/python -m pytest tests/reliability -m 'not quick'

# Plan fidelity at full budget: 1,000 generated histories against the sandbox, a third of them on the Cyclr
# platform (make test runs a few).
# Prints "fidelity: N histories, M steps, K divergences"; a failing history is shrunk and kept in .hypothesis/.
fidelity: $(STAMP)
	HYPOTHESIS_PROFILE=fidelity $(BIN)/python -m pytest tests/fidelity -p no:cacheprovider

# Issues 5, 14, 15 and 16's benchmark: every figure in one run, a table of ratios with pass/fail, bench/RESULTS.md.
# Quick check: .venv/bin/python bench/run.py --scale 0.1 --runs 3 (see bench/run.py --help).
# Some rows only (the others are kept in bench/RESULTS.md): make bench ONLY=cyclr-refresh,cyclr-apply (or status,status-refresh)
bench: $(STAMP)
	$(BIN)/python bench/run.py $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info

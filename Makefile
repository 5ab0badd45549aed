# `make run` serves the API; `make test` runs the whole suite. Both work on a fresh machine
# with only Python 3.11, make and apt: they create .venv and install pinned dependencies.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WEB_CONCURRENCY ?= 2
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

.PHONY: install install-test run test bench clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.test: requirements-test.txt $(VENV)/.runtime
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	touch $@

install: $(VENV)/.runtime
install-test: $(VENV)/.test

run: install
	HOST=$(HOST) PORT=$(PORT) WEB_CONCURRENCY=$(WEB_CONCURRENCY) \
	  $(VENV)/bin/gunicorn -c service/gunicorn.conf.py

test: install-test
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache

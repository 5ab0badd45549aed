# `make run` serves the API; `make test` runs the whole suite. Both work on a fresh machine
# with only Python 3.11, make and apt: they create .venv and install pinned dependencies.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WEB_CONCURRENCY ?= 2
# one assignment per export: `export A=1 B=1` would set A to "1 B=1"
export OPENBLAS_NUM_THREADS := 1
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1

.PHONY: install install-test system-deps run test bench bench-gradcheck clean

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

# Debian packages the deployment tests drive (nginx in front of gunicorn, docker-compose config,
# wrk for load, chromium and chromium-driver for /explore's browser test); installed only when
# missing. CI runs as root; elsewhere run `sudo make system-deps`.
SYSTEM_BINARIES := nginx docker-compose wrk chromium chromedriver
system-deps:
	@missing=""; for b in $(SYSTEM_BINARIES); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx docker-compose wrk chromium chromium-driver; \
	fi

test: system-deps install-test
	$(PY) -m pytest -q

# `make bench`: the service against PyTorch and a bare Flask app (bench/run.py writes
# bench/results.md). torch is a bench-only extra in its own venv: never in .venv or make test.
BENCH_VENV := bench/.venv
TORCH_VERSION := 2.13.0
# jax: bench/floor.py's peer (JAX jit, float64, one thread; 0.10.2 is the last for Python 3.11);
# py-spy: the request path's profile (bench/results.md)
JAX_VERSION := 0.10.2
$(BENCH_VENV)/.installed: requirements.txt Makefile
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt torch==$(TORCH_VERSION) \
	  "jax[cpu]==$(JAX_VERSION)" py-spy==0.4.3
	touch $@

bench: $(BENCH_VENV)/.installed
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; }
	$(BENCH_VENV)/bin/python bench/run.py $(BENCH_ARGS)

# `make bench-gradcheck`: only the full /v1/gradcheck against torch.autograd.gradcheck
# (writes bench/gradcheck_results.md); `make bench` includes it
bench-gradcheck: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/gradcheck_vs_torch.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

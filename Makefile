# ML Lab: `make dev` runs the whole system locally, `make test` tests all of it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
PREFLIGHT := python3 infra/local/mllab_dev/preflight.py
PYTEST_ARGS ?=

.PHONY: help dev test test-unit bench preflight lock clean

help:
	@echo "make dev     run emulators, every function, the gateway and the lab on http://127.0.0.1:8080"
	@echo "make test    set up and run every test (unit + emulator-backed)"
	@echo "make bench   print cold-start and token timings"
	@echo "make clean   remove .venv, .dev and build output"

# Fails within seconds, naming what to install, before any slow step.
preflight:
	@$(PREFLIGHT)

# Idempotent: rebuilt only when the pins change, so a second run is instant.
$(STAMP): pyproject.toml constraints.txt
	@$(PREFLIGHT)
	@test -x $(PY) || $$($(PREFLIGHT) --python312) -m venv $(VENV)
	@echo "Installing pinned dependencies into $(VENV) (log: $(VENV)/install.log)"
	@{ $(PY) -m pip install --disable-pip-version-check --upgrade pip==26.3 && \
	   $(PY) -m pip install --disable-pip-version-check -c constraints.txt -e '.[dev]'; } \
	   > $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

dev: preflight $(STAMP)
	@exec $(PY) -m mllab_dev.stack

test: preflight $(STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: preflight $(STAMP)
	@$(PY) tests/bench/bench.py

# Re-resolve the transitive lock from the direct pins in pyproject.toml.
lock:
	@rm -rf /tmp/mllab-lock && $$($(PREFLIGHT) --python312) -m venv /tmp/mllab-lock
	@/tmp/mllab-lock/bin/pip install --quiet '.[dev]' && \
	  { echo '# Full transitive lock (pip constraints): `make` installs exactly this tree. Regenerate with `make lock`.'; \
	    /tmp/mllab-lock/bin/pip freeze --exclude mllab; } > constraints.txt

clean:
	rm -rf $(VENV) .dev build .pytest_cache .hypothesis

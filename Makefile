# ML Lab: `make dev` runs the whole system locally, `make test` tests all of it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
PREFLIGHT := python3 infra/local/mllab_dev/preflight.py
# As root on Debian, installs the missing system packages first (printing them); otherwise prints the apt-get line.
SETUP     := $(PREFLIGHT) --install
PYTEST_ARGS ?=
VENDOR    := frontend/vendor
VENDORED  := $(VENDOR)/.installed
# The built files the lab loads on demand (never tf.min.js: its ES5 shims need 'unsafe-eval'). The WASM
# backend's threaded binary is left out: threads need cross-origin isolation, which the lab does not have.
VENDOR_FILES := @tensorflow/tfjs/dist/tf.es2017.min.js \
                @tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.es2017.min.js \
                @tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.es2017.min.js \
                @tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm \
                @tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm \
                papaparse/papaparse.min.js uplot/dist/uPlot.iife.min.js uplot/dist/uPlot.min.css

.PHONY: help dev test lint preflight-test test-unit test-py311 bench load preflight lock clean deploy-plan deploy deploy-args

help:
	@echo "make dev     run emulators, every function, the gateway and the lab on http://127.0.0.1:8080 (STORAGE=s3: moto's S3 server as the file store)"
	@echo "make test    set up and run every test (lint and types, unit, emulator-backed, browser)"
	@echo "make lint    ruff format --check, ruff check and mypy"
	@echo "make bench   print cold-start and token timings, the lab's training times and its Lighthouse scores"
	@echo "make load    ramp locust users against the local stack (MLLAB_LOAD_SECONDS, default 300), then check Firestore"
	@echo "make deploy-plan PROJECT=p REGION=r DOMAIN=d   print every gcloud command of a deployment (offline;"
	@echo "            STORAGE=s3 S3_ENDPOINT=https://... S3_BUCKET=b: files in an S3-compatible bucket, docs/operations.md)"
	@echo "make deploy PROJECT=p REGION=r DOMAIN=d OAUTH_CLIENT_ID=id   run them (docs/operations.md)"
	@echo "make clean   remove .venv, .dev and build output"

# Fails within seconds, naming what to install, before any slow step (as root: installs it first).
preflight:
	@$(SETUP)

preflight-test:
	@$(SETUP) --test

# Idempotent: rebuilt only when the pins change, so a second run is instant.
$(STAMP): pyproject.toml constraints.txt
	@$(PREFLIGHT)
	@test -x $(PY) || $$($(PREFLIGHT) --python312) -m venv $(VENV)
	@echo "Installing pinned dependencies into $(VENV) (log: $(VENV)/install.log)"
	@{ $(PY) -m pip install --disable-pip-version-check --upgrade pip==26.3 && \
	   $(PY) -m pip install --disable-pip-version-check -c constraints.txt -e '.[dev]'; } \
	   > $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

# The lab's browser libraries, pinned by frontend/package-lock.json, copied into frontend/vendor/.
$(VENDORED): frontend/package.json frontend/package-lock.json
	@$(PREFLIGHT)
	@echo "Installing the lab's browser libraries (log: frontend/npm.log)"
	@npm ci --prefix frontend --no-audit --no-fund --ignore-scripts > frontend/npm.log 2>&1 \
	  || { tail -20 frontend/npm.log; exit 1; }
	@rm -rf $(VENDOR) && mkdir -p $(VENDOR) && \
	  for f in $(VENDOR_FILES); do cp frontend/node_modules/$$f $(VENDOR)/; done && touch $@

# STORAGE=s3: the file store is moto's S3 server instead of fake-gcs-server (docs/operations.md).
dev: preflight $(STAMP) $(VENDORED)
	@exec $(PY) -m mllab_dev.stack --storage='$(or $(STORAGE),gcs)'

test: preflight-test $(STAMP) $(VENDORED)
	@$(MAKE) --no-print-directory lint
	@$(PY) -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-py311

# The code also runs on 3.11: the unit suite again under it, when a 3.11 is installed.
VENV311 := .venv311
test-py311:
	@py311=$$($(PREFLIGHT) --python311); \
	if [ -z "$$py311" ]; then echo "test-py311: no Python 3.11 found; the 3.11 compatibility run was not done"; exit 0; fi; \
	if [ ! -f $(VENV311)/.installed ] || [ pyproject.toml -nt $(VENV311)/.installed ] || [ constraints.txt -nt $(VENV311)/.installed ]; then \
	  echo "Installing the 3.11 compatibility venv ($(VENV311))"; rm -rf $(VENV311); $$py311 -m venv $(VENV311) && \
	  $(VENV311)/bin/pip install --disable-pip-version-check -c constraints.txt -e '.[dev]' > $(VENV311)/install.log 2>&1 \
	  || { tail -40 $(VENV311)/install.log; exit 1; }; touch $(VENV311)/.installed; fi; \
	echo "Unit suite on $$($(VENV311)/bin/python --version)"; \
	$(VENV311)/bin/python -m pytest tests/unit -q -p no:cacheprovider

# ruff (format and lint, complexity <= 10) and mypy, as configured in pyproject.toml: clean, or `make test` stops.
lint: $(STAMP)
	@echo "lint: ruff format --check, ruff check, mypy"
	@$(PY) -m ruff format --check --quiet shared functions infra tests
	@$(PY) -m ruff check --quiet shared functions infra tests
	@$(PY) -m mypy shared/mllab functions infra

test-unit: $(STAMP)
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Lighthouse for `make bench` (tools/lighthouse, pinned by its lock file): installed only here, never a browser.
LIGHTHOUSE := tools/lighthouse/node_modules/.installed
$(LIGHTHOUSE): tools/lighthouse/package.json tools/lighthouse/package-lock.json
	@echo "Installing Lighthouse for make bench (log: tools/lighthouse/npm.log)"
	@PUPPETEER_SKIP_DOWNLOAD=1 npm ci --prefix tools/lighthouse --no-audit --no-fund --ignore-scripts \
	  > tools/lighthouse/npm.log 2>&1 || { tail -20 tools/lighthouse/npm.log; exit 1; }
	@touch $@

bench: preflight $(STAMP) $(VENDORED) $(LIGHTHOUSE)
	@$(PY) tests/bench/bench.py

# tests/load/run.py: the settings (users, steps, limits, think time) are MLLAB_LOAD_* variables.
load: preflight $(STAMP) $(VENDORED)
	@$(PY) tests/load/run.py

# Re-resolve the transitive lock from the direct pins in pyproject.toml.
lock:
	@rm -rf /tmp/mllab-lock && $$($(PREFLIGHT) --python312) -m venv /tmp/mllab-lock
	@/tmp/mllab-lock/bin/pip install --quiet '.[dev]' && \
	  { echo '# Full transitive lock (pip constraints): `make` installs exactly this tree. Regenerate with `make lock`.'; \
	    /tmp/mllab-lock/bin/pip freeze --exclude mllab; } > constraints.txt

# Deploy to one Google Cloud project (docs/operations.md). Required: PROJECT, REGION, DOMAIN.
# Optional: OAUTH_CLIENT_ID (needed by deploy), BILLING_ACCOUNT, PAYPAL=sandbox|live, ALERT_EMAIL, BUDGET (USD),
# SECRETS_FROM (a folder of secret values), DEPLOY_OUT (generated files; default build/deploy).
# STORAGE=s3 keeps the users' files in an S3-compatible bucket instead of GCS: S3_ENDPOINT and S3_BUCKET
# are then required, S3_REGION (default auto) and S3_ADDRESSING (path or virtual; default path) optional.
DEPLOY_ARGS = --project='$(PROJECT)' --region='$(REGION)' --domain='$(DOMAIN)' \
  --oauth-client-id='$(OAUTH_CLIENT_ID)' --billing-account='$(BILLING_ACCOUNT)' --paypal='$(or $(PAYPAL),sandbox)' \
  --alert-email='$(ALERT_EMAIL)' --budget='$(or $(BUDGET),100)' --secrets-from='$(SECRETS_FROM)' \
  --storage='$(or $(STORAGE),gcs)' --s3-endpoint='$(S3_ENDPOINT)' --s3-bucket='$(S3_BUCKET)' \
  --s3-region='$(S3_REGION)' --s3-addressing='$(S3_ADDRESSING)' \
  $(if $(DEPLOY_OUT),--out='$(DEPLOY_OUT)')

# Fails before anything else runs when a required argument is missing.
deploy-args:
	@if [ -z "$(PROJECT)" ] || [ -z "$(REGION)" ] || [ -z "$(DOMAIN)" ]; then \
	  echo "make $(or $(MAKECMDGOALS),deploy): missing$(if $(PROJECT),, PROJECT)$(if $(REGION),, REGION)$(if $(DOMAIN),, DOMAIN)" >&2; \
	  echo "usage: make $(or $(MAKECMDGOALS),deploy) PROJECT=<project id> REGION=<e.g. europe-west1> DOMAIN=<e.g. example.com>" >&2; \
	  exit 2; fi

deploy-plan: deploy-args $(STAMP)
	@$(PY) infra/deploy.py plan $(DEPLOY_ARGS)

deploy: deploy-args $(STAMP) $(VENDORED)
	@$(PY) infra/deploy.py apply $(DEPLOY_ARGS)

clean:
	rm -rf $(VENV) $(VENV311) .dev build .pytest_cache .hypothesis $(VENDOR) frontend/node_modules frontend/npm.log

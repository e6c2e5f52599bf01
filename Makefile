# stagetrack developer entry points. GNU make.
#   make run    DynamoDB Local + tables + chalice local on http://127.0.0.1:8000
#   make lint   ruff (configured in pyproject.toml)
#   make typecheck  mypy (pyproject.toml); not yet clean, so not part of lint/test
#   make test   lint, then the whole test suite (moto + DynamoDB Local tier)
#   make bench  benchmarks
#   make docs   the documentation site (docs/, mkdocs --strict) in build/site
#   make package   the SAM template + code package in build/sam (README "Deploy")
#   make deploy    package, upload and deploy it: BUCKET=<s3 bucket> [STACK=stagetrack]
#   make clean  remove .venv, .local (DynamoDB Local), .data (local database), caches

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.requirements.stamp

.DEFAULT_GOAL := test
.PHONY: venv run lint typecheck test bench docs clean package deploy

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PIP) install --quiet 'pip<26.3'
	$(PIP) install --quiet -r requirements-dev.txt
	$(PIP) check
	touch $@

run: venv
	$(PY) -m tools.run_local

# The checks `make test` runs first (configured in pyproject.toml; tests/ not yet covered).
lint: venv
	$(PY) -m ruff check .

# Joins `lint` once it is clean (issue 11 item 6).
typecheck: venv
	$(PY) -m mypy

test: venv lint
	$(PY) -c 'from tools.dynamodb_local import ensure_installed; ensure_installed()'
	$(PY) -m pytest -q -n 2

# The site from docs/ (mkdocs.yml); --strict: a broken link or anchor fails. The suite builds it
# too (tests/e2e/test_docs_examples.py), so `make test` fails on what this target would.
docs: venv
	$(PY) -m mkdocs build --strict --clean  # not --quiet: it hides the warnings --strict counts
	@echo "site in build/site (open build/site/index.html)"

bench: venv
	$(PY) -c 'from tools.dynamodb_local import ensure_installed; ensure_installed()'
	PYTHONPATH="$(CURDIR)" $(PY) bench/run_all.py

# ---- deploy (README "Deploy"); the stack name also names its table, queues and functions ----
STACK ?= stagetrack
SAM := build/sam

package: venv
	$(PY) -m infra.generate --check
	$(PY) -m tools.package $(SAM)

# Secrets come from the environment (first deploy: all three required; later: omit to keep them).
deploy: package
	@test -n "$(BUCKET)" || { echo "usage: make deploy BUCKET=<s3 bucket for the code> [STACK=$(STACK)]"; exit 2; }
	aws cloudformation package --template-file $(SAM)/sam.json --s3-bucket $(BUCKET) \
	  --output-template-file $(SAM)/packaged.yaml
	set -- $(PARAMS); \
	[ -z "$$STAGETRACK_ADMIN_TOKEN" ] || set -- "$$@" "AdminToken=$$STAGETRACK_ADMIN_TOKEN"; \
	[ -z "$$STAGETRACK_SECRET_PEPPER" ] || set -- "$$@" "SecretPepper=$$STAGETRACK_SECRET_PEPPER"; \
	[ -z "$$STAGETRACK_SECRET_KEY" ] || set -- "$$@" "SecretKey=$$STAGETRACK_SECRET_KEY"; \
	aws cloudformation deploy --template-file $(SAM)/packaged.yaml --stack-name $(STACK) \
	  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND $${1:+--parameter-overrides "$$@"}
	aws cloudformation describe-stacks --stack-name $(STACK) --query 'Stacks[0].Outputs' --output table

clean:
	rm -rf $(VENV) .local .data .pytest_cache .hypothesis build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

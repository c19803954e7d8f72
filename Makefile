# Two commands do everything on a fresh machine:
#   make dev   - install what is missing, run both services on the embedded defaults
#   make test  - install what is missing, run every suite (auth, rag, e2e) with coverage
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
RAG := rag-service
AUTH := auth-service
VENV := $(RAG)/.venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := $(AUTH)/node_modules/.installed

.PHONY: help install dev test test-auth test-rag test-e2e bench migrate services clean

help:
	@echo "make dev      run auth-service (:3001) and rag-service (:8000) on embedded defaults"
	@echo "make test     run every test suite (installs what is missing)"
	@echo "make bench    run the benchmarks (figures go to docs/benchmarks.md by hand)"
	@echo "make migrate  apply database migrations of both services"

# --- installation (only what is missing or out of date) --------------------------------
$(VENV_STAMP): $(RAG)/requirements.txt $(RAG)/requirements-dev.txt $(RAG)/pyproject.toml
	@test -x $(PY) || { echo ">> creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo ">> installing pinned Python packages (torch 2.13.0 CPU build)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(RAG)/requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e $(RAG)
	@touch $@

$(NODE_STAMP): $(AUTH)/package-lock.json
	@echo ">> npm ci (auth-service)"
	cd $(AUTH) && npm ci --no-audit --no-fund
	@touch $@

install: $(VENV_STAMP) $(NODE_STAMP)

# --- running --------------------------------------------------------------------------
dev: install
	@bash scripts/dev.sh

migrate: install
	cd $(AUTH) && npm run --silent migrate
	cd $(RAG) && .venv/bin/rag migrate

# --- tests ----------------------------------------------------------------------------
services:
	@bash scripts/ensure-services.sh

test: install services test-auth test-rag test-e2e

test-auth: $(NODE_STAMP) services
	@echo ">> auth-service tests (PGlite and PostgreSQL)"
	cd $(AUTH) && npm test

test-rag: $(VENV_STAMP) services
	@echo ">> rag-service tests (SQLite and PostgreSQL, Qdrant Edge and Qdrant server API)"
	cd $(RAG) && .venv/bin/pytest -q --cov=rag_service --cov-report=term

test-e2e: install services
	@bash scripts/install-chromium.sh
	@echo ">> end-to-end tests (both services as real processes, the web app in headless Chromium)"
	$(PY) -m pytest -q tests-e2e

bench: install services
	cd $(AUTH) && npm run --silent bench
	cd $(AUTH) && npm run --silent bench:password
	cd $(RAG) && .venv/bin/python bench/embedder_throughput.py
	cd $(RAG) && .venv/bin/python bench/encoder_threads.py
	cd $(RAG) && .venv/bin/python bench/encoder_backends.py
	cd $(RAG) && .venv/bin/python bench/query_batching.py
	cd $(RAG) && .venv/bin/python bench/ingest_throughput.py --docs 300
	cd $(RAG) && .venv/bin/python bench/search_latency.py
	cd $(RAG) && .venv/bin/python bench/retrieval.py
	cd $(RAG) && .venv/bin/python bench/chat_latency.py --docs 200 --queries 100
	cd $(RAG) && .venv/bin/python bench/load_test.py --users 20 --duration 60

clean:
	rm -rf data $(AUTH)/data $(RAG)/data

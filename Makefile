# Two commands do everything on a fresh machine:
#   make dev   - install what is missing, run both services on the embedded defaults
#   make test  - install what is missing, run every suite (repo, auth, rag, e2e) with coverage
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
RAG := rag-service
AUTH := auth-service
VENV := $(RAG)/.venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
# Runs a command with TEST_POSTGRES_URL / TEST_PGVECTOR_URL set (scripts/test_postgres.py):
# the system PostgreSQL on 5432 when it answers, and an embedded PostgreSQL 18 + pgvector
# started for the run (and stopped after it). Nested targets reuse the outer run's servers.
WITH_TEST_PG := $(CURDIR)/$(PY) $(CURDIR)/scripts/test_postgres.py run --
NODE_STAMP := $(AUTH)/node_modules/.installed

.PHONY: help install dev oidc-provider test test-repo test-auth test-rag test-client test-e2e bench migrate services screenshot clean

help:
	@echo "make dev      run auth-service (:3001) and rag-service (:8000) on embedded defaults"
	@echo "make test     run every test suite (installs what is missing)"
	@echo "make test-repo  only the checks that read files (docs, benchmark reports, docker-compose.yml)"
	@echo "make bench    run the benchmarks and write docs/benchmarks.md (BENCH_QUICK=1: smoke-test sizes)"
	@echo "make migrate  apply database migrations of both services"
	@echo "make oidc-provider  a local OpenID Connect provider for trying single sign-on with make dev"
	@echo "make screenshot  refresh docs/screenshot.png from the browser test"

# --- installation (only what is missing or out of date) --------------------------------
$(VENV_STAMP): $(RAG)/requirements.txt $(RAG)/requirements-dev.txt $(RAG)/pyproject.toml clients/python/pyproject.toml
	@test -x $(PY) || { echo ">> creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo ">> installing pinned Python packages (torch 2.13.0 CPU build)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r $(RAG)/requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e $(RAG)
	@# The API client (clients/python): its dependencies are pinned in rag-service/requirements.txt.
	$(PY) -m pip install --quiet --no-deps -e clients/python
	@touch $@

$(NODE_STAMP): $(AUTH)/package-lock.json
	@echo ">> npm ci (auth-service)"
	cd $(AUTH) && npm ci --no-audit --no-fund
	@touch $@

install: $(VENV_STAMP) $(NODE_STAMP)
	@# bubblewrap isolates the file extraction workers (docs/security.md); apt-get when root.
	@bash scripts/install-bubblewrap.sh

# --- running --------------------------------------------------------------------------
dev: install
	@bash scripts/dev.sh

# A local OpenID Connect provider (auth-service/dev/oidc-provider.ts) on :3005; it prints the
# OIDC_PROVIDERS value to start `make dev` with.
oidc-provider: $(NODE_STAMP)
	cd $(AUTH) && npm run --silent oidc-provider

migrate: install
	cd $(AUTH) && npm run --silent migrate
	cd $(RAG) && .venv/bin/rag migrate

# --- tests ----------------------------------------------------------------------------
services:
	@bash scripts/ensure-services.sh

test: install services
	@$(MAKE) --no-print-directory test-repo
	@$(WITH_TEST_PG) $(MAKE) --no-print-directory test-auth test-rag test-client test-e2e

# Tests that only read the repository's files (docs, benchmark writers, docker-compose.yml):
# no service and no database, so they run first and fail fast.
test-repo: $(VENV_STAMP)
	@echo ">> repository checks (docs, benchmarks' report writers, docker-compose.yml)"
	$(PY) -m pytest -q tests-repo

test-auth: $(NODE_STAMP) $(VENV_STAMP) services
	@echo ">> auth-service tests (PGlite and PostgreSQL)"
	cd $(AUTH) && $(WITH_TEST_PG) npm test

test-rag: $(VENV_STAMP) services
	@echo ">> rag-service tests (SQLite and PostgreSQL; Qdrant Edge, pgvector, Qdrant server adapter on qdrant-client's local mode and on respx-answered HTTP)"
	cd $(RAG) && $(WITH_TEST_PG) .venv/bin/pytest -q --cov=rag_service --cov-report=term

test-client: $(VENV_STAMP)
	@echo ">> Python client unit tests (token flow, retry policy on httpx.MockTransport; contract with the rag-service's OpenAPI document)"
	$(PY) -m pytest -q clients/python/tests

test-e2e: install services
	@bash scripts/install-chromium.sh
	@echo ">> end-to-end tests (both services as real processes, the web app in headless Chromium)"
	$(WITH_TEST_PG) $(PY) -m pytest -q tests-e2e

# Refresh docs/screenshot.png (the README picture) from the browser test; test runs
# otherwise write it to tests-e2e/artifacts/ only.
screenshot: install services
	@bash scripts/install-chromium.sh
	REFRESH_SCREENSHOT=1 $(WITH_TEST_PG) $(PY) -m pytest -q tests-e2e/test_browser.py

# --- benchmarks -----------------------------------------------------------------------
# Every line runs one benchmark, which writes its section of docs/benchmarks.md to
# $(BENCH)/NN-name.md (name order is page order); scripts/bench_render.py then joins them.
# $(call SIZE,full,quick): the published sizes, or with BENCH_QUICK=1 a smoke test of every
# line in a few minutes (its figures are not meant to be kept). Data sets are built in data/
# from this machine's man pages (scripts/build_manpages_dataset.py) the first time.
BENCH := $(CURDIR)/data/bench
SIZE = $(if $(BENCH_QUICK),$(2),$(1))
bench: install services
	rm -f $(BENCH)/*.md
	cd $(AUTH) && npm run --silent bench -- $(call SIZE,,--n 5 --seconds 1) --report $(BENCH)/10-auth-service.md
	cd $(AUTH) && npm run --silent bench:password -- $(call SIZE,,--verifies 8 --rounds 1) --report $(BENCH)/12-password-hashing.md
	cd $(AUTH) && npm run --silent bench:signup -- $(call SIZE,,--n 3) --report $(BENCH)/14-signup-timing.md
	cd $(RAG) && .venv/bin/python bench/embedder_throughput.py $(call SIZE,,--chunks 40 --queries 5) --report $(BENCH)/20-embedder-throughput.md
	cd $(RAG) && .venv/bin/python bench/encoder_threads.py $(call SIZE,,--queries 4 --rounds 1 --batch 4) --report $(BENCH)/22-encoder-threads.md
	cd $(RAG) && .venv/bin/python bench/encoder_backends.py $(call SIZE,,--chunks 8 --batch 4 --rounds 1 --queries 5) --report $(BENCH)/24-encoder-backends.md
	cd $(RAG) && .venv/bin/python bench/query_batching.py $(call SIZE,,--clients 4 --queries 8 --chunks 16 --rounds 1) --report $(BENCH)/26-query-batching.md
	cd $(RAG) && .venv/bin/python bench/ingest_throughput.py --docs $(call SIZE,150,4) --slice $(call SIZE,15,2) --report $(BENCH)/30-ingest-throughput.md
	cd $(RAG) && .venv/bin/python bench/ingest_http.py $(call SIZE,--docs 150,--docs 3 --sequential 20 --seconds 2) --report $(BENCH)/32-ingest-http.md
	cd $(RAG) && .venv/bin/python bench/search_latency.py $(call SIZE,,--points 2000 --queries 20 --baseline-points 200 --baseline-queries 5) --report $(BENCH)/40-search-latency.md
	cd $(RAG) && .venv/bin/python bench/search_latency.py $(call SIZE,--points 20000,--points 1000 --queries 20) --pgvector --only-compare --report $(BENCH)/42-pgvector-vs-edge.md
	cd $(RAG) && .venv/bin/python bench/edge_gil.py $(call SIZE,,--points 500 --searches 20) --report $(BENCH)/44-edge-gil.md
	cd $(RAG) && .venv/bin/python bench/health_under_search.py $(call SIZE,--points 100000,--points 5000 --seconds 4) --report $(BENCH)/46-health-under-search.md
	cd $(RAG) && .venv/bin/python bench/retrieval.py --store both --sweep $(call SIZE,--latency-sample 200 --http-sample 100,--limit-docs 12 --no-questions --latency-sample 5 --http-sample 5) --report $(BENCH)/50-retrieval.md
	cd $(RAG) && .venv/bin/python bench/chat_latency.py $(call SIZE,--docs 200 --queries 100,--docs 6 --queries 5 --warmup 1) --report $(BENCH)/60-chat-latency.md
	cd $(RAG) && .venv/bin/python bench/answer_quality.py $(call SIZE,--distractors 300,--distractors 10 --limit 4 --warmup 1) --report $(BENCH)/61-answer-quality.md
	cd $(RAG) && .venv/bin/python bench/answer_quality.py --questions bench/manpages_qa_dev2.jsonl $(call SIZE,--distractors 300,--distractors 10 --limit 4 --warmup 1) --report $(BENCH)/62-answer-quality-dev2.md
	cd $(RAG) && .venv/bin/python bench/answer_quality.py --questions bench/manpages_qa_dev3.jsonl $(call SIZE,--distractors 300,--distractors 10 --limit 4 --warmup 1) --report $(BENCH)/62-answer-quality-dev3.md
	cd $(RAG) && .venv/bin/python bench/answer_quality.py --questions bench/manpages_qa_heldout.jsonl $(call SIZE,--distractors 300,--distractors 10 --limit 4 --warmup 1) --report $(BENCH)/63-answer-quality-heldout.md
	cd $(RAG) && .venv/bin/python bench/answer_quality.py --questions bench/manpages_qa_heldout2.jsonl $(call SIZE,--distractors 300,--distractors 10 --limit 4 --warmup 1) --report $(BENCH)/65-answer-quality-heldout2.md
	cd $(RAG) && .venv/bin/python bench/answer_quality.py --questions bench/manpages_qa_heldout3.jsonl $(call SIZE,--distractors 300,--distractors 10 --limit 4 --warmup 1) --report $(BENCH)/65-answer-quality-heldout3.md
	cd $(RAG) && .venv/bin/python bench/load_test.py $(call SIZE,--users 20 --duration 60,--users 3 --duration 10 --baseline-seconds 5) --report $(BENCH)/70-load-test.md
	cd $(RAG) && .venv/bin/python bench/health_under_load.py $(call SIZE,,--quick --docs 3) --report $(BENCH)/72-health-under-load.md
	cd $(RAG) && .venv/bin/python bench/search_throughput.py $(call SIZE,,--chunks 10000 --sequential 50) --report $(BENCH)/62-search-throughput.md
	cd $(RAG) && .venv/bin/python bench/search_throughput.py --chunks $(call SIZE,10000,2000) --phases quiet,busy --sequential $(call SIZE,200,50) \
		--title 'Search p95 beside a competing CPU-bound process: encoder threads and backends (issue 14)' \
		--variant 'torch, 1 thread per call, query thread:EMBEDDING_BACKEND=torch' \
		--variant 'torch, 2 threads per query, one encoder thread:EMBEDDING_BACKEND=torch,EMBEDDING_QUERY_THREADS=2,EMBEDDING_QUERY_WORKERS=0' \
		--variant 'torch, one thread per core, one encoder thread:EMBEDDING_BACKEND=torch,EMBEDDING_QUERY_THREADS=0,EMBEDDING_QUERY_WORKERS=0' \
		--variant 'onnx fp32, one thread per core, one encoder thread:EMBEDDING_BACKEND=onnx,EMBEDDING_QUERY_THREADS=0,EMBEDDING_QUERY_WORKERS=0' \
		--report $(BENCH)/64-search-threads.md
	cd $(RAG) && .venv/bin/python ../scripts/test_postgres.py run -- .venv/bin/python bench/scale_curve.py \
		--report $(BENCH)/66-scale-curve.md
	cd $(RAG) && .venv/bin/python ../scripts/test_postgres.py run -- .venv/bin/python bench/access_filter.py --pgvector \
		$(call SIZE,,--chunks 5000 --queries 20 --real 50) --report $(BENCH)/68-access-filter.md
	$(PY) clients/python/bench/sync_throughput.py $(call SIZE,,--docs 4) --report $(BENCH)/80-sync-throughput.md
	$(PY) scripts/bench_render.py $(BENCH) docs/benchmarks.md

# The benchmarks' embedders and services share one model cache (the tests use it too): the
# default encoder's ONNX graph is exported once, not into every benchmark's data dir.
bench: export MODEL_CACHE_DIR ?= $(CURDIR)/data/model-cache

clean:
	rm -rf data $(AUTH)/data $(RAG)/data

"""Retrieval quality and latency of keyword, dense and hybrid search on a BEIR-layout dataset.

    .venv/bin/python bench/retrieval.py [--dataset DIR] [--work-dir DIR] [--limit-docs N]
        [--chunk-size 200] [--overlap 30] [--no-title]
        [--prefetch N] [--rrf-k 60] [--weights DENSE,KEYWORD] [--overfetch 3] [--per-doc 2]
        [--latency-sample 200] [--http-sample 100] [--sweep] [--store edge|pgvector|both]
        [--pgvector-url URL] [--questions PATH] [--ranking convex|store] [--report PATH]

The dataset defaults to manpages-dev, built from this machine's man pages by
scripts/build_manpages_dataset.py (any BEIR-layout folder works). The corpus is ingested
as one user through the real pipeline (DocumentService.save: SQLite row, chunking, MiniLM
+ BM25, Qdrant Edge), each document carrying its corpus `_id` in its metadata; every query then goes through SearchService.search (top 10). With --work-dir the
ingested store is reused by later runs with the same dataset and chunking. Prints nDCG@10,
Recall@10, MRR@10 and latency p50/p95 per mode (and over HTTP for a sample).

Hybrid ranking: `--ranking convex` (the service's default: search/ranking.py's
document-level score fusion above the store) or `--ranking store` (the earlier ranking:
the store's own reciprocal rank fusion of chunks). Every run also evaluates both
rankings on every query and prints them per query type, with bootstrap 95% intervals and
the paired difference. Query types: the dataset's description queries, by manual section of
their page, and the user-phrased questions of `--questions` (default for manpages-dev:
bench/datasets/manpages-dev-qa.jsonl, its answerable questions, each judged against its one
page, matched by title); `--limit-docs N` keeps those questions' pages besides the first N.
The held-out questions (bench/manpages_qa_heldout.jsonl, never used to choose anything) are
judged in the per-type tables only, as their own type, outside "all": they check that a
ranking chosen on the dev queries does not hurt questions it was not chosen on.

`--store both` ingests once into Qdrant Edge and a pgvector table together (the same chunks
and vectors), then evaluates both and prints their hybrid nDCG@10 side by side. pgvector runs
on --pgvector-url (default TEST_PGVECTOR_URL, else an embedded PostgreSQL 18 + pgvector
started for the run by scripts/test_postgres.py) in a new database dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from rag_service.config import Settings
from rag_service.documents.chunking import Chunker
from rag_service.documents.service import DocumentService
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.search.ranking import BASELINE_RANKING, DEFAULT_RANKING
from rag_service.search.service import DEFAULT_MAX_CHUNKS_PER_DOCUMENT, DEFAULT_OVERFETCH, SearchService
from rag_service.storage import qdrant_edge as edge
from rag_service.storage.access import Access, access_filter
from rag_service.storage.db import create_engine_and_sessionmaker, run_migrations
from rag_service.storage.factory import collection_name
from rag_service.storage.pgvector import PgVectorStore
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import ChunkFilter

from pgvector_database import pgvector_database

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_report import Report, add_report_argument  # noqa: E402
from build_manpages_dataset import manpages_dataset  # noqa: E402

USER = "bench-user"
K = 10
MODES = ("keyword", "dense", "hybrid")
QUESTIONS = {"manpages-dev": Path(__file__).resolve().parent / "datasets" / "manpages-dev-qa.jsonl"}
HELDOUT_QUESTIONS = {"manpages-dev": Path(__file__).resolve().parent / "manpages_qa_heldout.jsonl"}
HELDOUT = "held-out question"
RANKINGS = {"convex": DEFAULT_RANKING, "store": BASELINE_RANKING}
# The default before its lead-passage term (search/ranking.py), for the comparison table.
WITHOUT_LEAD = replace(DEFAULT_RANKING, lead_weight=0.0)


# --- dataset --------------------------------------------------------------------------


def load_questions(path: Path | None, corpus: list[dict], prefix: str = "question-") -> dict[str, tuple[str, str]]:
    """Answerable questions of a qa.jsonl -> {query id: (question, corpus id)}, the page found by title
    (the ids of a corpus rebuilt on another machine differ; titles do not)."""
    if path is None or not path.is_file():
        return {}
    by_title = {doc.get("title"): doc["_id"] for doc in corpus}
    questions = {}
    for item in map(json.loads, path.open(encoding="utf-8")):
        if item.get("kind") == "answerable" and item.get("title") in by_title:
            questions[f"{prefix}{item['id']}"] = (item["question"], by_title[item["title"]])
    return questions


def load_dataset(path: Path, limit_docs: int | None, questions_path: Path | None = None,
                 ) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    corpus = [json.loads(line) for line in (path / "corpus.jsonl").open(encoding="utf-8") if line.strip()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (path / "queries.jsonl").open(encoding="utf-8")) if q}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with (path / "qrels.tsv").open(encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t")
        next(rows)  # header
        for query_id, corpus_id, score in rows:
            qrels[query_id][corpus_id] = int(score)
    questions = load_questions(questions_path, corpus)
    for query_id, (question, corpus_id) in questions.items():
        queries[query_id] = question
        qrels[query_id] = {corpus_id: 1}
    if limit_docs:
        needed = {corpus_id for _, corpus_id in questions.values()}
        corpus = [doc for i, doc in enumerate(corpus) if i < limit_docs or doc["_id"] in needed]
    kept = {doc["_id"] for doc in corpus}
    # Only queries with at least one relevant document left in the corpus are judged.
    qrels = {q: {d: s for d, s in rel.items() if d in kept} for q, rel in qrels.items()}
    qrels = {q: rel for q, rel in qrels.items() if any(s > 0 for s in rel.values()) and q in queries}
    return corpus, {q: queries[q] for q in qrels}, qrels


def query_types(corpus: list[dict], qrels: dict[str, dict[str, int]]) -> dict[str, str]:
    """Query id -> its type: "question", or "description (section N)" from its page's title."""
    titles = {doc["_id"]: doc.get("title") or "" for doc in corpus}
    types = {}
    for query_id, relevant in qrels.items():
        if query_id.startswith("question-"):
            types[query_id] = "question"
            continue
        if query_id.startswith("heldout-"):
            types[query_id] = HELDOUT
            continue
        title = titles.get(next(d for d, s in relevant.items() if s > 0), "")
        section = title.rpartition("(")[2][:1] if "(" in title else "?"
        types[query_id] = f"description (section {section})"
    return types


# --- metrics --------------------------------------------------------------------------


def ndcg_at_k(ranked: list[str], relevant: dict[str, int], k: int = K) -> float:
    dcg = sum((2 ** relevant.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum((2 ** s - 1) / math.log2(i + 2) for i, s in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: list[str], relevant: dict[str, int], k: int = K) -> float:
    wanted = {d for d, s in relevant.items() if s > 0}
    return len(wanted & set(ranked[:k])) / len(wanted)


def mrr_at_k(ranked: list[str], relevant: dict[str, int], k: int = K) -> float:
    return next((1.0 / (i + 1) for i, d in enumerate(ranked[:k]) if relevant.get(d, 0) > 0), 0.0)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def mean_interval(values: list[float], rounds: int = 2000) -> str:
    """Mean with a bootstrap 95% interval over queries."""
    import random

    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(rounds))
    return f"{statistics.fmean(values):.3f} [{means[int(0.025 * rounds)]:.3f}, {means[int(0.975 * rounds) - 1]:.3f}]"


def paired_delta(new: list[float], base: list[float], rounds: int = 2000) -> tuple[str, int, int]:
    """Mean nDCG difference with a paired bootstrap 95% interval, and queries won / lost."""
    import random

    diffs = [a - b for a, b in zip(new, base)]
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(rounds))
    low, high = means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]
    won, lost = sum(d > 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs)
    return f"{statistics.fmean(diffs):+.4f} [{low:+.4f}, {high:+.4f}]", won, lost


# --- tunable parts (bench only: production keeps the adapters' defaults) ----------------


class TunedEdgeStore(edge.EdgeVectorStore):
    """Edge store whose hybrid query uses the given prefetch depth, RRF k and weights."""

    def __init__(self, *args: Any, prefetch: int | None, rrf_k: int, weights: list[float] | None, **kw: Any):
        super().__init__(*args, **kw)
        self.prefetch, self.rrf_k, self.weights, self.fusion = prefetch, rrf_k, weights, "rrf"

    def build_query(self, query, where, limit, mode, dense_score_threshold):  # type: ignore[override]
        tuned = self.prefetch is not None or self.rrf_k != edge.RRF_K or self.weights or self.fusion != "rrf"
        if mode != "hybrid" or not tuned:
            return super().build_query(query, where, limit, mode, dense_score_threshold)
        scope = edge.edge_filter(where)
        idf = qe.SearchParams(idf=qe.IdfParams(corpus=edge.edge_filter(ChunkFilter(owners=where.owners))))
        depth = self.prefetch or edge.prefetch_limit(limit)
        prefetches = [qe.Prefetch(limit=depth, query=qe.Query.Nearest(list(query.dense), using=edge.DENSE),
                                  filter=scope, score_threshold=dense_score_threshold)]
        weights = self.weights
        if query.sparse.indices:
            prefetches.append(qe.Prefetch(limit=depth, query=qe.Query.Nearest(edge._sparse(query.sparse),
                                                                              using=edge.SPARSE),
                                          filter=scope, params=idf))
        elif weights:
            weights = weights[:1]
        fusion = qe.Fusion.Dbsf() if self.fusion == "dbsf" else qe.Fusion.Rrf(k=self.rrf_k, weights=weights)
        return qe.QueryRequest(limit=limit, prefetches=prefetches, query=fusion, filter=scope, with_payload=True)


class UntitledChunker(Chunker):
    """Embeds (and BM25-encodes) the chunk text alone, without the document title."""

    def embedding_text(self, clipped_title: str, chunk_text: str) -> str:
        return chunk_text


class UntitledDocumentService(DocumentService):
    @property
    def chunker(self) -> Chunker:
        chunker = super().chunker
        untitled = object.__new__(UntitledChunker)
        untitled.__dict__.update(chunker.__dict__)
        return untitled


class MirroredStore:
    """Writes go to every store, reads to the first: one ingestion fills Edge and pgvector alike."""

    def __init__(self, stores: list[Any]) -> None:
        self.stores = stores
        self.collection = stores[0].collection

    async def ensure_collection(self) -> None:
        for store in self.stores:
            await store.ensure_collection()

    async def upsert(self, points: list) -> None:
        for store in self.stores:
            await store.upsert(points)

    async def delete(self, where: ChunkFilter) -> None:
        for store in self.stores:
            await store.delete(where)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stores[0], name)


# --- ingestion ------------------------------------------------------------------------


async def ingest(corpus: list[dict], settings: Settings, store: Any, embedder: LocalEmbedder,
                 sparse: SparseEncoder, titled: bool) -> tuple[dict[str, list[str]], int, float]:
    """Save every corpus document (skipping ones already ingested).

    -> (document id -> corpus ids, chunks created, seconds)."""
    await asyncio.to_thread(run_migrations, settings)
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    service_class = DocumentService if titled else UntitledDocumentService
    by_document: dict[str, list[str]] = defaultdict(list)
    started, chunks = time.perf_counter(), 0
    try:
        for start in range(0, len(corpus), 50):
            async with sessionmaker() as session:
                service = service_class(session, store, sparse, embedder, settings)
                for doc in corpus[start : start + 50]:
                    document, created = await service.save(USER, doc.get("title") or doc["_id"], doc["text"],
                                                           {"corpus_id": doc["_id"]})
                    by_document[document.id].append(doc["_id"])
                    chunks += document.chunk_count if created else 0
            done = min(start + 50, len(corpus))
            elapsed = time.perf_counter() - started
            print(f"\r  ingested {done}/{len(corpus)} documents, {chunks} new chunks, {elapsed:.0f} s",
                  end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        await engine.dispose()
    return by_document, chunks, time.perf_counter() - started


# --- evaluation -----------------------------------------------------------------------


async def evaluate(service: SearchService, queries: dict[str, str], qrels: dict[str, dict[str, int]],
                   to_corpus: dict[str, list[str]], mode: str) -> dict[str, Any]:
    scores: dict[str, list[float]] = defaultdict(list)
    latencies = []
    for query_id, text in queries.items():
        started = time.perf_counter()
        result = await service.search(Access(USER), text, top_k=K, mode=mode, include_embedding=False)
        latencies.append((time.perf_counter() - started) * 1000)
        ranked: list[str] = []
        for hit in result.hits:  # one entry per corpus document, at its best rank
            for corpus_id in to_corpus.get(hit.document_id, [hit.metadata.get("corpus_id")]):
                if corpus_id not in ranked:
                    ranked.append(corpus_id)
        scores["ndcg@10"].append(ndcg_at_k(ranked, qrels[query_id]))
        scores["recall@10"].append(recall_at_k(ranked, qrels[query_id]))
        scores["mrr@10"].append(mrr_at_k(ranked, qrels[query_id]))
    summary: dict[str, Any] = {name: statistics.fmean(values) for name, values in scores.items()}
    summary["per_query_ndcg"] = scores["ndcg@10"]
    summary["per_query_recall"] = scores["recall@10"]
    summary["query_ids"] = list(queries)
    summary["p50_ms"], summary["p95_ms"] = percentile(latencies, 50), percentile(latencies, 95)
    return summary


async def http_latency(settings: Settings, store: Any, embedder: LocalEmbedder, sparse: SparseEncoder,
                       queries: list[str], mode: str) -> tuple[float, float]:
    """p50/p95 of POST /search through the whole app (auth dependency replaced by a fixed user)."""
    import httpx

    from rag_service.auth.tokens import AccessTokenVerifier, CurrentUser
    from rag_service.deps import current_user
    from rag_service.main import create_app
    from rag_service.providers.factory import build_generator
    from rag_service.runtime import Runtime

    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    runtime = Runtime(settings, engine, sessionmaker, store, sparse, embedder, build_generator(settings, embedder),
                      AccessTokenVerifier(settings))
    app = create_app(settings, runtime=runtime)
    app.dependency_overrides[current_user] = lambda: CurrentUser(id=USER, claims={})
    latencies = []
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
            for text in queries:
                started = time.perf_counter()
                response = await client.post("/search", json={"query": text, "top_k": K, "mode": mode})
                latencies.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
    finally:
        await runtime.token_verifier.aclose()
        await engine.dispose()
    return percentile(latencies, 50), percentile(latencies, 95)


class PrecomputedQueryEmbedder:
    """The real embedder, with the evaluation queries embedded up front in batches.

    Identical vectors to embedding each query alone, at a fraction of the cost, so the
    quality runs (every query x every mode x every sweep setting) stay affordable on a
    busy 2-core machine. Latency is measured separately with the plain embedder.
    """

    def __init__(self, inner: LocalEmbedder) -> None:
        self.inner, self.model_name, self.dimension = inner, inner.model_name, inner.dimension
        self.cache: dict[str, list[float]] = {}

    async def prefill(self, texts: list[str]) -> None:
        stripped = [t.strip() for t in texts]
        # In parts: one call of 1,000+ queries would outlast the encoder's per-call timeout.
        for start in range(0, len(stripped), 64):
            part = stripped[start : start + 64]
            self.cache.update(zip(part, await self.inner.embed(part, task="query")))

    async def embed(self, texts: list[str], task: str = "document") -> list[list[float]]:
        if task == "query" and all(t in self.cache for t in texts):
            return [self.cache[t] for t in texts]
        return await self.inner.embed(texts, task)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def sweep_grid() -> list[dict[str, Any]]:
    """One setting changed at a time from the service's defaults (plus one pair that looked promising)."""
    grid: list[dict[str, Any]] = [{"mode": m, "per_doc": 1} for m in ("keyword", "dense")]
    grid += [{"mode": "hybrid", "per_doc": 2, "rrf_k": k} for k in (20, 5)]
    grid += [{"mode": "hybrid", "per_doc": 2, "prefetch": p} for p in (20, 50, 100)]
    grid += [{"mode": "hybrid", "per_doc": 2, "prefetch": 50, "rrf_k": 5}]
    grid += [{"mode": "hybrid", "per_doc": 2, "weights": w} for w in ([2.0, 1.0], [1.0, 2.0])]
    grid += [{"mode": "hybrid", "per_doc": n} for n in (1, 3)]
    grid += [{"mode": "hybrid", "per_doc": 2, "overfetch": n} for n in (2, 5)]
    grid += [{"mode": "hybrid", "per_doc": 2, "prefetch": p, "fusion": "dbsf"} for p in (None, 50)]
    # The service's ranking with one part changed at a time (its ablation). Without the lead
    # term (lead_weight 0) is in the table of the lead-passage term, not evaluated again here.
    grid += [{"mode": "hybrid", "per_doc": 2, "ranking": replace(DEFAULT_RANKING, **change)} for change in (
        {"aggregate_documents": False}, {"dense_weight": 0.5}, {"dense_weight": 0.7},
        {"lead_weight": 0.2}, {"lead_weight": 0.5},
        {"title_weight": 0.1}, {"title_weight": 0.2})]
    return grid


async def main(args: argparse.Namespace) -> None:
    args.dataset = args.dataset or manpages_dataset()
    baseline = "keyword (BM25) and dense (MiniLM) search alone, on the same store and queries in the same run"
    if args.store == "both":
        baseline += "; Qdrant Edge against pgvector on the same chunks and vectors"
    report = Report(f"Retrieval quality on {args.dataset.name}", baseline=baseline)
    if args.store == "edge":
        await run(args, None, report)
    else:
        async with pgvector_database(args.pgvector_url) as url:
            await run(args, url, report)
    report.text("How to read it: every judged query runs through `SearchService.search` (top 10) as the service "
                "runs it; nDCG@10 rewards finding the one relevant page high in the list. A delta is the mean "
                "per-query nDCG@10 difference with a paired-bootstrap 95% interval: an interval that excludes zero "
                "is a real difference on this dataset, one that spans zero is noise. Query vectors for the quality "
                "figures are computed once up front in batches (identical vectors); latency is measured on a sample "
                "with the plain embedder, query embedding included.")
    report.write(args.report)


def quality_rows(label: str, mode: str, s: dict[str, Any], t: dict[str, Any] | None) -> list:
    timing = [t["p50_ms"], t["p95_ms"]] if t else ["-", "-"]
    return [label, mode, f"{s['ndcg@10']:.4f}", f"{s['recall@10']:.3f}", f"{s['mrr@10']:.4f}", *timing]


async def run(args: argparse.Namespace, pgvector_url: str | None, report: Report) -> None:
    if args.questions is None and args.use_questions:
        args.questions = QUESTIONS.get(args.dataset.name)
    if not args.use_questions:
        args.questions = None
    corpus, queries, qrels = load_dataset(args.dataset, args.limit_docs, args.questions)
    heldout = load_questions(HELDOUT_QUESTIONS.get(args.dataset.name) if args.use_questions else None, corpus,
                             prefix="heldout-")
    heldout_queries = {query_id: question for query_id, (question, _) in heldout.items()}
    qrels.update({query_id: {corpus_id: 1} for query_id, (_, corpus_id) in heldout.items()})
    types = query_types(corpus, qrels)
    if pgvector_url and args.work_dir:
        # The pgvector database is new each run: an Edge store reused from --work-dir would
        # skip the ingestion that fills it.
        print("--work-dir is ignored with --store pgvector/both: both stores are ingested afresh")
    work_dir = (None if pgvector_url else args.work_dir) or Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    key = f"{args.dataset.name}-{len(corpus)}d-c{args.chunk_size}-o{args.overlap}-{'t' if args.title else 'nt'}"
    settings = Settings(_env_file=None, data_dir=work_dir / key, database_url=None, qdrant_url=None,
                        embedding_provider="local", llm_provider="extractive", rate_limit_enabled=False,
                        chunk_size_tokens=args.chunk_size, chunk_overlap_tokens=args.overlap, log_level="WARNING",
                        # One user holds the whole corpus (over 1,000 documents): no per-user quota.
                        quota_max_documents=0, quota_max_characters=0,
                        # The query length limit is a service policy; the benchmark judges every query.
                        max_query_chars=max(Settings().max_query_chars,
                                            *(len(q) for q in (*queries.values(), *heldout_queries.values()))))
    embedder, sparse = LocalEmbedder(settings), SparseEncoder()
    name = collection_name(settings.qdrant_collection_prefix, embedder.model_name, embedder.dimension)
    store = TunedEdgeStore(settings.data_dir / "qdrant" / name, collection=name, dimension=embedder.dimension,
                           prefetch=args.prefetch, rrf_k=args.rrf_k, weights=args.weights)
    stores: dict[str, Any] = {}
    if args.store in ("edge", "both"):
        stores["edge"] = store
    if pgvector_url:
        stores["pgvector"] = PgVectorStore(pgvector_url, collection=name, dimension=embedder.dimension)
    writer = MirroredStore(list(stores.values()))
    await writer.ensure_collection()
    print(f"dataset {args.dataset} ({len(corpus)} documents, {len(queries)} judged queries), store {settings.data_dir}"
          f"{', pgvector ' + pgvector_url if pgvector_url else ''}")
    try:
        to_corpus, new_chunks, ingest_seconds = await ingest(corpus, settings, writer, embedder, sparse, args.title)
        counts = {label: await each.count(access_filter(Access(USER))) for label, each in stores.items()}
        if len(set(counts.values())) != 1:
            raise SystemExit(f"the stores hold different chunk counts: {counts}")
        chunks = next(iter(counts.values()))
        if args.optimize:
            await store.optimize()
        ingested = (f"ingested in {ingest_seconds:.0f} s ({new_chunks / ingest_seconds:.1f} chunks/s through "
                    f"`DocumentService.save` into {' and '.join(stores)})" if new_chunks else
                    f"reused from {args.work_dir}")
        report.text(
            f"Dataset: {args.dataset.name}, {len(corpus):,} documents, {len(queries):,} judged queries. "
            f"{chunks:,} chunks of {args.chunk_size} tokens with {args.overlap} overlap, title "
            f"{'prepended' if args.title else 'not prepended'}, {ingested}. Hybrid: prefetch "
            f"{args.prefetch or 'adapter default'}, RRF k {args.rrf_k}, weights {args.weights or 'equal'}; collapse: "
            f"over-fetch {args.overfetch} x top_k, at most {args.per_doc} chunks per document"
            f"{'; Edge with an HNSW index (optimize)' if args.optimize else ''}. Hybrid ranking: {args.ranking} "
            f"({RANKINGS[args.ranking]}). Query types: "
            + ", ".join(f"{name} {count}" for name, count in sorted(Counter(types.values()).items()))
            + f" (the {len(heldout_queries)} held-out questions in the per-type tables only).")
        cached = PrecomputedQueryEmbedder(embedder)
        await cached.prefill([*queries.values(), *heldout_queries.values()])
        sample = dict(list(queries.items())[: args.latency_sample])
        per_store: dict[str, dict[str, list[float]]] = {}
        rows = []
        for label, each in stores.items():
            quality = SearchService(each, sparse, cached, settings, overfetch=args.overfetch,
                                    max_chunks_per_document=args.per_doc, ranking=RANKINGS[args.ranking])
            plain = SearchService(each, sparse, embedder, settings, overfetch=args.overfetch,
                                  max_chunks_per_document=args.per_doc, ranking=RANKINGS[args.ranking])
            await plain.search(Access(USER), "warm up", mode="hybrid")
            per_store[label] = {}
            for mode in args.modes:
                s = await evaluate(quality, queries, qrels, to_corpus, mode)
                per_store[label][mode] = s["per_query_ndcg"]
                t = await evaluate(plain, sample, qrels, to_corpus, mode) if sample else None
                rows.append(quality_rows(label, mode, s, t))
                print(" | ".join(map(str, rows[-1])), flush=True)
        report.table(["store", "mode", "nDCG@10", "Recall@10", "MRR@10",
                      f"p50 ms ({len(sample)} queries)", f"p95 ms ({len(sample)} queries)"], rows,
                     "Quality and latency per mode (`SearchService.search`, top 10)")
        per_query = per_store.get("edge") or per_store["pgvector"]
        store = stores.get("edge") or stores["pgvector"]
        if "hybrid" in per_query:
            deltas = [[f"hybrid vs {mode}", *paired_delta(per_query["hybrid"], per_query[mode])]
                      for mode in args.modes if mode != "hybrid"]
            if deltas:
                report.table(["comparison", "nDCG@10 delta [95% CI]", "queries better", "queries worse"], deltas,
                             "Hybrid against each mode alone (paired, same queries)")
        ranked_store = stores.get("edge") or stores["pgvector"]
        by_ranking = {}
        for name, ranking in (("store", BASELINE_RANKING), ("no lead", WITHOUT_LEAD), ("convex", DEFAULT_RANKING)):
            service = SearchService(ranked_store, sparse, cached, settings, overfetch=args.overfetch,
                                    max_chunks_per_document=args.per_doc, ranking=ranking)
            by_ranking[name] = await evaluate(service, {**queries, **heldout_queries}, qrels, to_corpus, "hybrid")
        columns = ["query type", "queries", "nDCG@10 before [95% CI]", "nDCG@10 after [95% CI]",
                   "after - before [95% CI]", "better", "worse", "Recall@10 before", "Recall@10 after"]
        where = f"{'Edge' if 'edge' in stores else 'pgvector'}, same run, paired over the same queries"
        report.table(columns, per_type_rows(by_ranking["store"], by_ranking["convex"], types),
                     f"Hybrid before (`--ranking store`: the store's reciprocal rank fusion of chunks) and after "
                     f"(`--ranking convex`: document-level score fusion in the service), per query type ({where})")
        report.table(columns, per_type_rows(by_ranking["no lead"], by_ranking["convex"], types),
                     f"The lead-passage term of the service's ranking: without it (lead_weight 0, the default "
                     f"before) and with it (lead_weight {DEFAULT_RANKING.lead_weight:g}), per query type ({where})")
        if len(per_store) == 2:
            report.table(
                ["mode", "Edge nDCG@10", "pgvector nDCG@10", "pgvector - Edge [95% CI]", "queries better", "worse"],
                [[mode, f"{statistics.fmean(per_store['edge'][mode]):.4f}",
                  f"{statistics.fmean(per_store['pgvector'][mode]):.4f}",
                  *paired_delta(per_store["pgvector"][mode], per_store["edge"][mode])] for mode in args.modes],
                "Qdrant Edge vs pgvector on the same chunks (pgvector's dense side goes through its HNSW index)")
        if args.http_sample:
            http_queries = list(queries.values())[: args.http_sample]
            http_rows = []
            for mode in args.modes:
                p50, p95 = await http_latency(settings, store, embedder, sparse, http_queries, mode)
                http_rows.append([mode, p50, p95])
            report.table(["mode", "p50 ms", "p95 ms"], http_rows,
                         f"`POST /search` through the whole app (in-process ASGI, {len(http_queries)} queries, "
                         "default `include_embedding`)")
        if args.sweep and isinstance(store, TunedEdgeStore):
            sweep_rows = []
            for config in sweep_grid():
                store.prefetch, store.rrf_k = config.get("prefetch"), config.get("rrf_k", edge.RRF_K)
                store.weights, store.fusion = config.get("weights"), config.get("fusion", "rrf")
                # Store-level variants rank with the store's fusion; ranking variants in the service.
                service = SearchService(store, sparse, cached, settings,
                                        overfetch=config.get("overfetch", args.overfetch),
                                        max_chunks_per_document=config["per_doc"],
                                        ranking=config.get("ranking", BASELINE_RANKING))
                s = await evaluate(service, queries, qrels, to_corpus, config["mode"])
                delta = paired_delta(s["per_query_ndcg"], per_query["hybrid"]) if "hybrid" in per_query else ("-",)
                sweep_rows.append([sweep_label(config), f"{s['ndcg@10']:.4f}", delta[0]])
                print(" | ".join(sweep_rows[-1]), flush=True)
            report.table(["variant", "nDCG@10", "vs the hybrid above [95% CI]"], sweep_rows,
                         "Tuning sweep (Edge, full query set, paired against this run's hybrid)")
    finally:
        for each in stores.values():
            await each.close()
        await embedder.aclose()


def per_type_rows(before: dict[str, Any], after: dict[str, Any], types: dict[str, str]) -> list[list[Any]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for position, query_id in enumerate(before["query_ids"]):
        groups[types[query_id]].append(position)
        if types[query_id] == HELDOUT:  # judged on its own: "all" is the dev queries
            continue
        groups["all"].append(position)
        if types[query_id] != "question":
            groups["all descriptions"].append(position)
    rows = []
    for name in sorted(groups, key=lambda n: (n == HELDOUT, n == "all", n == "question", n.startswith("all"), n)):
        at = groups[name]
        old = [before["per_query_ndcg"][i] for i in at]
        new = [after["per_query_ndcg"][i] for i in at]
        delta, won, lost = paired_delta(new, old)
        rows.append([name, len(at), mean_interval(old), mean_interval(new), delta, won, lost,
                     f"{statistics.fmean(before['per_query_recall'][i] for i in at):.3f}",
                     f"{statistics.fmean(after['per_query_recall'][i] for i in at):.3f}"])
    return rows


def sweep_label(config: dict[str, Any]) -> str:
    parts = [config["mode"]]
    if "ranking" in config:
        r = config["ranking"]
        return (f"hybrid, convex ranking: dense {r.dense_weight:g}, keyword {1 - r.dense_weight:g}, lead "
                f"{r.lead_weight:g}, title {r.title_weight:g}, "
                f"{'documents (MaxP)' if r.aggregate_documents else 'chunks alone'}")
    if config.get("fusion") == "dbsf":
        parts.append("DBSF fusion")
    elif config["mode"] == "hybrid":
        parts.append(f"RRF k={config.get('rrf_k', edge.RRF_K)}")
    if config["mode"] == "hybrid":
        parts.append(f"prefetch {config.get('prefetch') or 'default'}")
    if config.get("weights"):
        parts.append("weights dense {:g} : keyword {:g}".format(*config["weights"]))
    if "overfetch" in config:
        parts.append(f"over-fetch {config['overfetch']}")
    parts.append(f"{config['per_doc']} per document")
    return ", ".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, help="a BEIR-layout folder (default: manpages-dev, built if missing)")
    parser.add_argument("--work-dir", type=Path, help="keep the ingested store here and reuse it")
    parser.add_argument("--limit-docs", type=int, help="only the first N corpus documents")
    parser.add_argument("--chunk-size", type=int, default=Settings().chunk_size_tokens)
    parser.add_argument("--overlap", type=int, default=Settings().chunk_overlap_tokens)
    parser.add_argument("--no-title", dest="title", action="store_false", help="embed chunks without the title")
    parser.add_argument("--prefetch", type=int, help="candidates per side of the hybrid fusion")
    parser.add_argument("--rrf-k", type=int, default=edge.RRF_K)
    parser.add_argument("--weights", type=lambda s: [float(x) for x in s.split(",")], help="RRF weights dense,keyword")
    parser.add_argument("--overfetch", type=int, default=DEFAULT_OVERFETCH)
    parser.add_argument("--per-doc", type=int, default=DEFAULT_MAX_CHUNKS_PER_DOCUMENT, help="chunks per document in the collapse")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--optimize", action="store_true", help="build the HNSW index before querying")
    parser.add_argument("--latency-sample", type=int, default=200, help="queries timed per mode, uncached")
    parser.add_argument("--http-sample", type=int, default=0, help="also time N queries through HTTP")
    parser.add_argument("--sweep", action="store_true", help="also try hybrid fusion and collapse settings (Edge)")
    parser.add_argument("--ranking", choices=list(RANKINGS), default="convex",
                        help="hybrid ranking of the main table: convex (the service default) or store (before)")
    parser.add_argument("--questions", type=Path, help="a qa.jsonl whose answerable questions join the queries "
                        "(default for manpages-dev: bench/datasets/manpages-dev-qa.jsonl)")
    parser.add_argument("--no-questions", dest="use_questions", action="store_false",
                        help="description queries only (no question pages added to a --limit-docs sample)")
    parser.add_argument("--store", choices=["edge", "pgvector", "both"], default="edge",
                        help="vector store(s) to evaluate; both: one ingestion, results side by side")
    parser.add_argument("--pgvector-url", help="admin URL of a Postgres with pgvector (default TEST_PGVECTOR_URL, "
                        "else an embedded server)")
    add_report_argument(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))

"""Search over HTTP at 100k chunks / 10 users: throughput, latency, and the encoder's ceiling.

    .venv/bin/python bench/search_throughput.py [--chunks 100000] [--users 10] [--clients 16]
        [--seconds 20] [--sequential 300] [--ingest-docs 60] [--quick] [--report PATH]

The rag-service runs as a real process (`python -m rag_service`: uvicorn, the embedded
defaults: SQLite, Qdrant Edge, local MiniLM on ONNX Runtime, extractive answers) on loopback with
tokens from a local JWKS issuer (tests/fixtures_issuer.py). Before it starts, the chunks are
written at store level (bench/store_fill.py: real repository texts and BM25 vectors, real
MiniLM vectors for the repository's own chunks and random unit vectors for the rest) with
matching `ready` rows in the SQL documents table. Requests are what rag-client sends:
`POST /search {"query", "top_k": 5, "mode": "hybrid", "include_embedding": false}` with the
repository's Markdown headings as queries, spread over the users. The per-user rate limit is
raised (RATE_LIMIT_COSTLY) so that it counts but never refuses.

Phases, one server, one run: one client (sequential p50/p95); one client while a competing
CPU-bound process runs; --clients concurrent clients for --seconds (req/s, errors); the raw
encoder's queries/s at the batch sizes the service's micro-batcher produced in that phase
(read from /metrics): the ceiling the throughput is compared with; one client quiet, then
one client while --ingest-docs documents are saved over HTTP by another user.
--quick (or BENCH_QUICK=1): 10k chunks, shorter phases. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import re
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE.parent / "tests"), str(ROOT / "tests-e2e"), str(ROOT / "scripts")]
from bench_report import Report  # noqa: E402
from bench_texts import repo_queries, repo_words  # noqa: E402
from fixtures_issuer import JwksIssuer  # noqa: E402
from http_load import (  # noqa: E402
    LoadResult, closed_loop, cpu_by_thread_group, post_json, process_cpu_seconds, start_profiler, thread_cpu_seconds,
    thread_names)
from stack import free_port, start  # noqa: E402
from store_fill import build_corpus, fill_documents_table, fill_vector_store, shard_size_mb, user_of  # noqa: E402

from rag_service.config import Settings  # noqa: E402
from rag_service.providers.local_embedder import DIMENSION, MODEL_NAME  # noqa: E402
from rag_service.storage.db import run_migrations  # noqa: E402
from rag_service.storage.factory import collection_name  # noqa: E402
from rag_service.storage.qdrant_edge import EdgeVectorStore  # noqa: E402

GOAL_RATE = 150.0
GOAL_P95_MS = 25.0
GOAL_HEALTH_P99_MS = 50.0
CONTENTION_FACTOR = 3.0


def busy_loop(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def server_env(port: int, data_dir: Path, issuer: JwksIssuer, metrics_token: str) -> dict[str, str]:
    return {
        "PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": str(data_dir),
        "AUTH_JWKS_URL": issuer.jwks_url, "AUTH_ISSUER": issuer.issuer, "AUTH_AUDIENCE": issuer.audience,
        "EMBEDDING_PROVIDER": "local", "LLM_PROVIDER": "extractive", "HF_HUB_OFFLINE": "1",
        "METRICS_TOKEN": metrics_token, "RATE_LIMIT_COSTLY": "1000000/minute",
    }


async def encoder_batches(port: int, token: str) -> tuple[float, float]:
    """(calls, texts) of the service's local encoder for queries so far, from /metrics."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})).text
    found = dict(re.findall(r'^rag_local_encoder_batch_texts_(count|sum)\{priority="query"\} (\S+)$', text, re.M))
    return float(found.get("count", 0)), float(found.get("sum", 0))


def encoder_ceiling(queries: list[str], batch: int, seconds: float, threads: int) -> float:
    """Raw MiniLM queries/s at `batch` texts per call, one torch intra-op thread per call (the
    service's query setting), from `threads` threads calling side by side."""
    from rag_service.providers.minilm_backends import TorchMiniLM
    from rag_service.providers.tokenizer import minilm_model_dir

    encoder = TorchMiniLM(minilm_model_dir(), threads=1)
    done = [0] * threads

    def caller(index: int, deadline: float) -> None:
        i = index * 17
        while time.perf_counter() < deadline:
            encoder.encode([queries[(i + k) % len(queries)] for k in range(batch)], "query")
            done[index] += batch
            i += batch

    began = time.perf_counter()
    workers = [threading.Thread(target=caller, args=(n, began + seconds)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / (time.perf_counter() - began)


def ingest_documents(count: int, seed: str) -> list[dict[str, str]]:
    words, rng = repo_words(), random.Random(seed)
    docs = []
    for n in range(count):
        start = rng.randint(0, len(words) - 1200)
        docs.append({"title": f"Bulk document {n}", "content": f"bulk {seed} {n} " + " ".join(words[start : start + 1200])})
    return docs


async def search_during_ingestion(port: int, request_for, issuer: JwksIssuer, docs: list[dict[str, str]],
                                  uploaders: int) -> tuple[LoadResult, float, list[int]]:
    headers = {"Authorization": f"Bearer {issuer.mint('bench-ingest')}"}
    stop, statuses = asyncio.Event(), []
    pending = list(docs)

    async def uploader(client: httpx.AsyncClient) -> None:
        while pending:
            response = await client.post(f"http://127.0.0.1:{port}/save-document", json=pending.pop(), headers=headers)
            statuses.append(response.status_code)

    async def ingest() -> float:
        began = time.perf_counter()
        async with httpx.AsyncClient(timeout=300) as client:
            await asyncio.gather(*(uploader(client) for _ in range(uploaders)))
        stop.set()
        return time.perf_counter() - began

    searching, took = await asyncio.gather(closed_loop(port, request_for, clients=1, stop=stop), ingest())
    return searching, took, statuses


async def probe_health(port: int, seconds: float, every: float = 0.02) -> list[float]:
    """`GET /health` one at a time every `every` s for `seconds`: latencies in ms."""
    latencies = []
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=30) as client:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            response = await client.get(f"http://127.0.0.1:{port}/health")
            latencies.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, response.text
            await asyncio.sleep(every)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def row(label: str, result: LoadResult, server_cpu_s: float) -> list:
    per_request = server_cpu_s / result.requests * 1000 if result.requests else float("nan")
    client = result.client_cpu_s / result.requests * 1000 if result.requests else float("nan")
    return [label, result.clients, result.requests, result.failures, round(result.rate, 1),
            result.percentile(0.5), result.percentile(0.95), result.percentile(0.99), per_request, client]


@dataclass
class Measured:
    label: str
    rows: list[list] = field(default_factory=list)
    results: dict[str, LoadResult] = field(default_factory=dict)
    by_thread: dict[str, float] = field(default_factory=dict)
    mean_batch: float = 1.0
    ingestion: str = ""
    # /health latencies (ms) quiet and while the concurrent clients search (issue 24).
    health_quiet: list[float] = field(default_factory=list)
    health_busy: list[float] = field(default_factory=list)


async def measure(variant: str, env: dict[str, str], args: argparse.Namespace, data_dir: Path, logs: Path,
                  issuer: JwksIssuer, queries: list[str]) -> Measured:
    """Every phase against one server started with `env` on top of the defaults."""
    metrics_token = secrets.token_hex(16)
    port = free_port()
    service = start("rag-search-bench", [sys.executable, "-m", "rag_service"], HERE.parent,
                    {**server_env(port, data_dir, issuer, metrics_token), **env}, f"http://127.0.0.1:{port}",
                    logs, timeout=600)
    pid = service.process.pid
    tokens = [issuer.mint(user_of(u, args.users)) for u in range(args.users)]
    table = [[post_json("/search", {"query": q, "top_k": 5, "mode": "hybrid", "include_embedding": False},
                        {"Authorization": f"Bearer {t}"}) for q in queries] for t in tokens]

    def request_for(client: int, i: int) -> bytes:
        return table[(client + i) % args.users][(client * 7 + i) % len(queries)]

    measured = Measured(variant)

    async def phase(key: str, label: str, **load) -> LoadResult:
        cpu = process_cpu_seconds(pid)
        result = await closed_loop(port, request_for, **load)
        measured.rows.append(row(label, result, process_cpu_seconds(pid) - cpu))
        measured.results[key] = result
        print(variant, measured.rows[-1], flush=True)
        return result

    try:
        await closed_loop(port, request_for, clients=4, requests=100)  # warm-up
        if "quiet" in args.phases:
            await phase("quiet", "1 client, quiet", clients=1, requests=args.sequential)
        if "busy" in args.phases:
            competitor = multiprocessing.Process(target=busy_loop, args=(600.0,))
            competitor.start()
            try:
                await asyncio.sleep(0.5)
                await phase("busy", "1 client, 1 busy-loop process beside", clients=1, requests=args.sequential)
            finally:
                competitor.terminate()
                competitor.join()
        if "concurrent" in args.phases:
            before = await encoder_batches(port, metrics_token)
            profiler = start_profiler(pid, args.seconds, args.profile) if args.profile else None
            threads_before = thread_cpu_seconds(pid)
            measured.health_quiet = await probe_health(port, seconds=2.0)
            probing = asyncio.create_task(probe_health(port, seconds=args.seconds))
            concurrent = await phase("concurrent", f"{args.clients} clients", clients=args.clients, seconds=args.seconds)
            measured.health_busy = await probing
            threads_after = thread_cpu_seconds(pid)
            if profiler is not None:
                profiler.wait()
            by_thread = cpu_by_thread_group(pid, threads_before, threads_after, thread_names(pid))
            measured.by_thread = {k: v / max(1, concurrent.requests) * 1000 for k, v in by_thread.items()}
            after = await encoder_batches(port, metrics_token)
            calls, texts = after[0] - before[0], after[1] - before[1]
            measured.mean_batch = texts / calls if calls else 1.0
        if "ingestion" in args.phases:
            await phase("quiet_2", "1 client, quiet (before ingestion)", clients=1, seconds=args.ingest_quiet_seconds)
            cpu = process_cpu_seconds(pid)
            during, took, statuses = await search_during_ingestion(
                port, request_for, issuer, ingest_documents(args.ingest_docs, seed=f"{os.getpid()}-{variant}"),
                args.uploaders)
            measured.results["during"] = during
            measured.rows.append(row(f"1 client, while {args.ingest_docs} documents are saved ({args.uploaders} "
                                     "uploaders)", during, process_cpu_seconds(pid) - cpu))
            saved = sum(1 for s in statuses if s in (200, 201))
            measured.ingestion = f"ingestion: {saved}/{len(statuses)} documents saved in {took:.0f} s"
    finally:
        service.stop()
    return measured


async def fill(args: argparse.Namespace, data_dir: Path, queries: list[str]) -> str:
    settings = Settings(data_dir=data_dir)
    began = time.perf_counter()
    corpus = build_corpus(pool=args.chunks, real=args.real)
    await asyncio.to_thread(run_migrations, settings)
    sql_s = await fill_documents_table(settings.sqlalchemy_url, corpus, args.chunks, args.users)
    name = collection_name(settings.qdrant_collection_prefix, MODEL_NAME, DIMENSION)
    store = EdgeVectorStore(data_dir / "qdrant" / name, collection=name, dimension=DIMENSION)
    await store.ensure_collection()
    edge_s = await fill_vector_store(store, corpus, args.chunks, args.users)
    await store.close()
    return (
        f"Data: {args.chunks:,} chunks in {args.chunks // 50:,} documents over {args.users} users, written at "
        f"store level (bench/store_fill.py) in {time.perf_counter() - began:.0f} s: BM25 of {len(corpus.texts):,} "
        f"real texts {corpus.seconds_bm25:.0f} s, MiniLM vectors of the repository's {corpus.real} chunks "
        f"{corpus.seconds_embedding:.0f} s (random unit vectors for the other chunks), SQL rows {sql_s:.0f} s, "
        f"Edge upsert {edge_s:.0f} s ({shard_size_mb(data_dir / 'qdrant'):,.0f} MB on disk). "
        f"Queries: {len(queries)} Markdown headings of the repository, top 5, hybrid, no embedding returned."
    )


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """`label:KEY=VALUE[,KEY=VALUE...]` -> (label, env)."""
    label, _, assignments = spec.partition(":")
    env = dict(item.split("=", 1) for item in assignments.split(",") if item)
    return label, env


async def run(args: argparse.Namespace, report: Report) -> None:
    queries = repo_queries(200)
    issuer = JwksIssuer()
    issuer.start()
    variants = [("default settings", {})] + [parse_variant(spec) for spec in args.variant]
    try:
        with tempfile.TemporaryDirectory(prefix="rag-search-bench-") as tmp:
            report.text(await fill(args, Path(tmp) / "data", queries))
            measured = [await measure(label, env, args, Path(tmp) / "data", Path(tmp) / "logs", issuer, queries)
                        for label, env in variants]
    finally:
        issuer.stop()
    concurrent = "concurrent" in args.phases
    batches = sorted({1, *(max(1, round(m.mean_batch)) for m in measured)}) if concurrent else []
    ceiling = {(b, lanes): encoder_ceiling(queries, b, args.ceiling_seconds, lanes) for b in batches for lanes in (1, 2)}

    for m in measured:
        notes = [m.ingestion] if m.ingestion else []
        if concurrent:
            notes.append(f"query batches at {args.clients} clients held {m.mean_batch:.1f} texts on average")
        env = "".join(f" {k}={v}" for k, v in dict(variants)[m.label].items())
        report.table(["phase", "clients", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms",
                      "server CPU ms/req", "client CPU ms/req"], m.rows,
                     caption=f"{m.label}{env}" + (f" ({'; '.join(notes)})" if notes else ""))
        if m.by_thread:
            report.table(["thread", "CPU ms per request", "req/s if it had a core to itself"],
                         [[group, ms, 1000 / ms] for group, ms in sorted(m.by_thread.items(), key=lambda i: -i[1])
                          if ms > 0],
                         caption=f"{m.label}: where the server's CPU went at {args.clients} clients "
                                 "(per-thread CPU time from /proc, names from py-spy dump)")
    if ceiling:
        report.table(["texts per call", "1 thread: queries/s", "2 threads side by side: queries/s"],
                     [[b, ceiling[(b, 1)], ceiling[(b, 2)]] for b in batches],
                     caption="Encoder ceiling: raw MiniLM (torch, 1 intra-op thread per call) in this process, "
                             "server stopped, at the batch sizes the services' micro-batchers produced")
    if len(measured) > 1 and {"quiet", "busy"} <= set(args.phases):
        report.table(["settings", "p95 ms quiet", "p95 ms beside a busy-loop process", "ratio"],
                     [[m.label, m.results["quiet"].percentile(0.95), m.results["busy"].percentile(0.95),
                       f"{m.results['busy'].percentile(0.95) / m.results['quiet'].percentile(0.95):.1f}x"]
                      for m in measured],
                     caption="One client's search p95 with and without a competing CPU-bound process, per setting")

    first = measured[0]
    r = first.results
    goals = []
    if concurrent:
        batch = max(1, round(first.mean_batch))
        loop_ms = first.by_thread.get("event loop (MainThread)", 0.0)
        encoder_limit = ceiling[(batch, 2)]
        cores = os.cpu_count() or 1
        server_ms = next(row[8] for row in first.rows if row[0] == f"{args.clients} clients")
        goals.append(
            [f"req/s at {args.clients} clients, 0 errors", f">= {GOAL_RATE:.0f}",
             f"{r['concurrent'].rate:.1f} ({r['concurrent'].failures} errors)",
             f"{r['concurrent'].rate / encoder_limit * 100:.0f}% of the raw encoder's {encoder_limit:.0f} queries/s "
             f"(both cores, {batch} per call)"
             + (f"; the event loop's CPU alone allows {1000 / loop_ms:.0f} req/s" if loop_ms else "")
             + f"; the server's {server_ms:.1f} ms of CPU per request allow {cores * 1000 / server_ms:.0f} req/s "
               f"on {cores} idle cores"])
    if first.health_busy:
        goals.append([f"/health p99 ms while {args.clients} clients search (issue 24)", f"< {GOAL_HEALTH_P99_MS:.0f}",
                      f"{percentile(first.health_busy, 0.99):.1f} (max {max(first.health_busy):.1f}, "
                      f"{len(first.health_busy)} probes)",
                      f"quiet p99 {percentile(first.health_quiet, 0.99):.1f} ({len(first.health_quiet)} probes)"])
    if "quiet" in r:
        goals.append(["p95 ms, 1 client", f"< {GOAL_P95_MS:.0f}", f"{r['quiet'].percentile(0.95):.1f}", ""])
    if "quiet" in r and "busy" in r:
        goals.append(["p95 ms, 1 client beside a busy-loop process", f"<= {CONTENTION_FACTOR:.0f}x quiet",
                      f"{r['busy'].percentile(0.95):.1f} ({r['busy'].percentile(0.95) / r['quiet'].percentile(0.95):.1f}x)",
                      f"quiet {r['quiet'].percentile(0.95):.1f}"])
    if "during" in r:
        goals.append(["p95 ms, 1 client during bulk ingestion", "queries never wait behind ingestion",
                      f"{r['during'].percentile(0.95):.1f} "
                      f"({r['during'].percentile(0.95) / r['quiet_2'].percentile(0.95):.1f}x)",
                      f"quiet {r['quiet_2'].percentile(0.95):.1f}; {first.ingestion}"])
    report.table(["goal (issue 14)", "target", f"measured ({first.label})", "compared with (same run)"], goals)
    report.text(
        "Server CPU ms/req: the rag-service process's CPU time (all threads: event loop, encoder, "
        "thread pools) over the phase, divided by its requests; client CPU: this benchmark's own process "
        "(the load generator, bench/http_load.py) on the same two cores."
        + (" The ingestion phase's server CPU includes the ingestion." if "ingestion" in args.phases else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    quick_default = os.environ.get("BENCH_QUICK") == "1"
    parser.add_argument("--quick", action="store_true", default=quick_default,
                        help="10k chunks, shorter phases (also BENCH_QUICK=1)")
    parser.add_argument("--chunks", type=int)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--real", type=int, default=600, help="chunks with real MiniLM vectors (at most the repo's)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--sequential", type=int)
    parser.add_argument("--ceiling-seconds", type=float, default=5.0)
    parser.add_argument("--ingest-docs", type=int)
    parser.add_argument("--ingest-quiet-seconds", type=float)
    parser.add_argument("--uploaders", type=int, default=2)
    parser.add_argument("--title", help="the section's title (default: what is measured, at how many chunks)")
    parser.add_argument("--phases", default="quiet,busy,concurrent,ingestion",
                        help="which of quiet,busy,concurrent,ingestion to run (in that order)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:KEY=VALUE[,KEY=VALUE]",
                        help="also measure a server started with these environment variables (e.g. "
                             "'onnx:EMBEDDING_BACKEND=onnx', 'before:PYTHONPATH=<another checkout>/rag-service/src')")
    parser.add_argument("--profile", type=Path, help="py-spy the server during the concurrent phase into PATH")
    parser.add_argument("--report", type=Path, help="write this section to PATH (scripts/bench_render.py joins them)")
    args = parser.parse_args()
    args.phases = set(args.phases.split(","))
    quick = args.quick
    args.chunks = args.chunks or (10_000 if quick else 100_000)
    args.seconds = args.seconds or (5.0 if quick else 20.0)
    args.sequential = args.sequential or (100 if quick else 300)
    args.ingest_docs = args.ingest_docs or (8 if quick else 60)
    args.ingest_quiet_seconds = args.ingest_quiet_seconds or (3.0 if quick else 10.0)
    if quick:
        args.real = min(args.real, 100)
        args.ceiling_seconds = min(args.ceiling_seconds, 2.0)
    for inherited in ("DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY", "GEMINI_API_KEY", "REDIS_URL", "VECTOR_STORE"):
        os.environ.pop(inherited, None)  # the embedded defaults, whatever the shell has
    report = Report(args.title or f"Search over HTTP at {args.chunks:,} chunks / {args.users} users (issue 14)",
                    baseline="the goals beside the raw encoder's queries/s and quiet one-client latency, same run"
                    + ("; each --variant is a server started with those settings on the same data, after the default"
                       if args.variant else ""))
    asyncio.run(run(args, report))
    report.write(args.report)


if __name__ == "__main__":
    main()

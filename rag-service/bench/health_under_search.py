"""`/health` latency while 16 clients search one user's 100k chunks on Qdrant Edge (issue 24):
the shard in the server process vs in its child process (`QDRANT_EDGE_PROCESS`), same run.

    .venv/bin/python bench/health_under_search.py [--points 100000] [--clients 16]
        [--seconds 20] [--quick] [--profile PREFIX] [--report PATH]

qdrant-edge-py holds the GIL for a whole search (bench/edge_gil.py), ~100 ms at 100k chunks
per user (bench/scale_curve.py): in the server process each search stalls the event loop and
so every other request. The chunks are written once at store level (bench/store_fill.py:
repository texts and their BM25 vectors, random unit dense vectors, all owned by one user;
matching `ready` rows in the SQL documents table), not through the encoder. Then, per
variant, the real rag-service (`python -m rag_service`: uvicorn, SQLite, Qdrant Edge, local
MiniLM, extractive answers; tokens from a local JWKS issuer) starts on that data with
`QDRANT_EDGE_PROCESS=false` (in-process), then `true` (child process, the default):
`/health` is probed one request at a time every 20 ms, first quiet (the baseline), then
while --clients clients search (`POST /search`, top 5, hybrid, the repository's Markdown
headings as queries) for --seconds. Prints /health p50/p99/max beside the 50 ms limit and
the searches' rate and latency. --profile PREFIX: py-spy samples the server's thread holding
the GIL during each searching phase into PREFIX-inprocess.txt / PREFIX-child.txt (summarize
with bench/profile_summary.py --thread ''). --quick (or BENCH_QUICK=1): 5,000 chunks, 4 s phases.
Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE.parent / "tests"), str(ROOT / "tests-e2e"), str(ROOT / "scripts")]
from bench_report import Report, add_report_argument  # noqa: E402
from bench_texts import repo_queries  # noqa: E402
from fixtures_issuer import JwksIssuer  # noqa: E402
from http_load import LoadResult, closed_loop, post_json  # noqa: E402
from stack import free_port, start  # noqa: E402
from store_fill import build_corpus, fill_documents_table, fill_vector_store, shard_size_mb, user_of  # noqa: E402

from rag_service.config import Settings  # noqa: E402
from rag_service.providers.local_embedder import DIMENSION, MODEL_NAME  # noqa: E402
from rag_service.storage.db import run_migrations  # noqa: E402
from rag_service.storage.factory import collection_name  # noqa: E402
from rag_service.storage.qdrant_edge import EdgeVectorStore  # noqa: E402

GOAL_HEALTH_P99_MS = 50.0
PROBE_INTERVAL_S = 0.02
QUIET_SECONDS = 2.0
VARIANTS = (("Qdrant Edge in the server process", "false"), ("Qdrant Edge in a child process", "true"))


@dataclass
class Probes:
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def probe_health(port: int, seconds: float) -> Probes:
    """`GET /health` one at a time, PROBE_INTERVAL_S apart, for `seconds`."""
    probes = Probes()
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=30) as client:
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                status = (await client.get(f"http://127.0.0.1:{port}/health")).status_code
            except httpx.HTTPError:
                status = 0
            probes.latencies_ms.append((time.perf_counter() - began) * 1000)
            probes.failures += status != 200
            await asyncio.sleep(PROBE_INTERVAL_S)
    return probes


@dataclass
class Measured:
    label: str
    quiet: Probes
    busy: Probes
    searches: LoadResult


async def measure(label: str, edge_process: str, args: argparse.Namespace, data_dir: Path, logs: Path,
                  issuer: JwksIssuer, queries: list[str]) -> Measured:
    port = free_port()
    env = {
        "PORT": str(port), "HOST": "127.0.0.1", "DATA_DIR": str(data_dir), "QDRANT_EDGE_PROCESS": edge_process,
        "AUTH_JWKS_URL": issuer.jwks_url, "AUTH_ISSUER": issuer.issuer, "AUTH_AUDIENCE": issuer.audience,
        "EMBEDDING_PROVIDER": "local", "LLM_PROVIDER": "extractive", "HF_HUB_OFFLINE": "1",
        "RATE_LIMIT_COSTLY": "1000000/minute",
    }
    service = start(f"rag-health-search-{edge_process}", [sys.executable, "-m", "rag_service"], HERE.parent, env,
                    f"http://127.0.0.1:{port}", logs, timeout=600)
    headers = {"Authorization": f"Bearer {issuer.mint(user_of(0, 1))}"}
    table = [post_json("/search", {"query": q, "top_k": 5, "mode": "hybrid", "include_embedding": False}, headers)
             for q in queries]

    def request_for(client: int, i: int) -> bytes:
        return table[(client * 7 + i) % len(table)]

    try:
        await closed_loop(port, request_for, clients=4, requests=40)  # warm-up: encoder, shard pages
        quiet = await probe_health(port, QUIET_SECONDS)
        profiler = start_gil_profiler(service.process.pid, args, edge_process) if args.profile else None
        probing = asyncio.create_task(probe_health(port, args.seconds))
        searches = await closed_loop(port, request_for, clients=args.clients, seconds=args.seconds)
        busy = await probing
        if profiler is not None:
            profiler.wait()
    finally:
        service.stop()
    measured = Measured(label, quiet, busy, searches)
    print(label, f"health p99 {busy.percentile(0.99):.1f} ms, {searches.rate:.1f} searches/s", flush=True)
    return measured


def start_gil_profiler(pid: int, args: argparse.Namespace, edge_process: str) -> subprocess.Popen:
    """py-spy (requirements-dev.txt) with --gil: only the samples of the thread holding the GIL."""
    output = Path(f"{args.profile}-{'child' if edge_process == 'true' else 'inprocess'}.txt")
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                             "--rate", "200", "--threads", "--gil", "--format", "raw", "--output", str(output)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def fill(args: argparse.Namespace, data_dir: Path) -> str:
    settings = Settings(_env_file=None, data_dir=data_dir)
    began = time.perf_counter()
    # One distinct text per chunk: a document's SQL row must not repeat another's content.
    corpus = build_corpus(pool=args.points, real=0)
    await asyncio.to_thread(run_migrations, settings)
    sql_s = await fill_documents_table(settings.sqlalchemy_url, corpus, args.points, users=1)
    name = collection_name(settings.qdrant_collection_prefix, MODEL_NAME, DIMENSION)
    store = EdgeVectorStore(data_dir / "qdrant" / name, collection=name, dimension=DIMENSION)
    await store.ensure_collection()
    edge_s = await fill_vector_store(store, corpus, args.points, users=1)
    await store.close()
    return (
        f"Data: {args.points:,} chunks of one user ({args.points // 50:,} documents), written at store level "
        f"(bench/store_fill.py) in {time.perf_counter() - began:.0f} s: BM25 of {len(corpus.texts):,} repository "
        f"texts {corpus.seconds_bm25:.0f} s, random unit dense vectors, SQL rows {sql_s:.0f} s, "
        f"Edge upsert {edge_s:.0f} s ({shard_size_mb(data_dir / 'qdrant'):,.0f} MB on disk). "
        f"Searches: {args.clients} clients, `POST /search` top 5 hybrid, Markdown headings of the repository."
    )


async def run(args: argparse.Namespace, report: Report) -> None:
    queries = repo_queries(200)
    issuer = JwksIssuer()
    issuer.start()
    try:
        with tempfile.TemporaryDirectory(prefix="rag-health-search-") as tmp:
            data_dir = Path(tmp) / "data"
            report.text(await fill(args, data_dir))
            measured = [await measure(label, flag, args, data_dir, Path(tmp) / "logs", issuer, queries)
                        for label, flag in VARIANTS]
    finally:
        issuer.stop()
    rows = []
    for m, (_, flag) in zip(measured, VARIANTS, strict=True):
        busy, searches = m.busy, m.searches
        rows.append([
            f"{m.label} (`QDRANT_EDGE_PROCESS={flag}`)", m.quiet.percentile(0.99), busy.percentile(0.5),
            busy.percentile(0.99), max(busy.latencies_ms, default=float("nan")),
            f"< {GOAL_HEALTH_P99_MS:.0f}", "yes" if busy.percentile(0.99) < GOAL_HEALTH_P99_MS else "no",
            f"{len(busy.latencies_ms)} ({busy.failures + m.quiet.failures} not 200)",
            round(searches.rate, 1), searches.percentile(0.5), searches.percentile(0.99), searches.failures,
        ])
    report.table(["Edge store", "/health p99 ms quiet", "/health p50 ms", "/health p99 ms", "/health max ms",
                  "p99 limit ms", "within", "probes", "searches/s", "search p50 ms", "search p99 ms",
                  "search errors"], rows,
                 caption=f"/health every {PROBE_INTERVAL_S * 1000:.0f} ms while {args.clients} clients search "
                         f"{args.points:,} chunks of one user for {args.seconds:.0f} s")
    report.text(
        "Quiet: /health probed for 2 s with no search running (same server, same run). In the server process a "
        "search holds the GIL for its whole Edge call, so /health waits behind it; in the child process the "
        "server only waits on a socket while the shard searches."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1",
                        help="5,000 chunks, 4 s phases (also BENCH_QUICK=1)")
    parser.add_argument("--points", type=int, help="chunks of the one user (default 100000; 5000 with --quick)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, help="searching phase (default 20; 4 with --quick)")
    parser.add_argument("--profile", help="py-spy the server's GIL holder into PROFILE-inprocess.txt / -child.txt")
    add_report_argument(parser)
    args = parser.parse_args()
    args.points = args.points or (5_000 if args.quick else 100_000)
    args.seconds = args.seconds or (4.0 if args.quick else 20.0)
    for inherited in ("DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY", "GEMINI_API_KEY", "REDIS_URL", "VECTOR_STORE",
                      "QDRANT_EDGE_PROCESS"):
        os.environ.pop(inherited, None)  # the embedded defaults, whatever the shell has
    report = Report(f"Health under search: /health while {args.clients} clients search {args.points:,} chunks "
                    "(issue 24)",
                    baseline="Qdrant Edge in the server process, same data, same run; and each server's quiet /health")
    asyncio.run(run(args, report))
    report.write(args.report)


if __name__ == "__main__":
    main()

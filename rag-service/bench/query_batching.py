"""Query embeddings under concurrency, with and without the encoder worker's scheduling.

    .venv/bin/python bench/query_batching.py [--clients 16] [--queries 160] [--chunks 96] [--rounds 2]
        [--report PATH]

1. --clients concurrent clients embed --queries short queries in total: one encoder call
   per query (baseline: max batch 1, no wait) vs micro-batching (max 32, 2 ms wait).
2. One client searching while --chunks ~200-token chunks are ingested: baseline = the
   former scheduling (64-chunk batches, queries queued behind them in arrival order) vs
   16-chunk sub-batches with queries served first.
Both use the real MiniLM (torch, 1 thread) on texts from this repository; settings
alternate round by round. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

from bench_texts import repo_chunks, repo_queries
from rag_service.providers.encoder_worker import EncoderWorker
from rag_service.providers.minilm_backends import TorchMiniLM
from rag_service.providers.tokenizer import minilm_model_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_report import Report, add_report_argument  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def concurrent_queries(worker: EncoderWorker, queries: list[str], clients: int) -> tuple[float, list[float]]:
    pending = list(queries)
    latencies: list[float] = []

    async def client() -> None:
        while pending:
            query = pending.pop()
            started = time.perf_counter()
            await worker.encode([query], "query")
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return len(queries) / (time.perf_counter() - started), latencies


async def queries_during_ingestion(
    worker: EncoderWorker, chunks: list[str], queries: list[str], sub_batch: int, query_priority: str
) -> list[float]:
    latencies: list[float] = []
    ingesting = True

    async def ingest() -> None:
        nonlocal ingesting
        for start in range(0, len(chunks), sub_batch):
            await worker.encode(chunks[start : start + sub_batch], "document")
        ingesting = False

    async def search() -> None:
        index = 0
        while ingesting:
            started = time.perf_counter()
            await worker.encode([queries[index % len(queries)]], query_priority)  # type: ignore[arg-type]
            latencies.append((time.perf_counter() - started) * 1000)
            index += 1

    await asyncio.gather(ingest(), search())
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--queries", type=int, default=160)
    parser.add_argument("--chunks", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    add_report_argument(parser)
    args = parser.parse_args()
    report = Report("Query embeddings: micro-batching and priority over ingestion",
                    baseline="the former scheduling (one encoder call per query; queries queued behind 64-chunk "
                    "ingestion batches in arrival order), alternating round by round in the same run")

    backend = TorchMiniLM(minilm_model_dir(), threads=1)
    queries = (repo_queries(args.queries) * args.queries)[: args.queries]
    chunks = repo_chunks(args.chunks)
    one_by_one = EncoderWorker(backend.encode, max_query_batch=1, query_wait_seconds=0)
    batching = EncoderWorker(backend.encode, max_query_batch=32, query_wait_seconds=0.002)
    await batching.encode(chunks[:4], "document")  # warm-up

    throughput: dict[str, list[float]] = {"one call per query (baseline)": [], "micro-batched (max 32, 2 ms)": []}
    latency: dict[str, list[float]] = {name: [] for name in throughput}
    during: dict[str, list[float]] = {"64-chunk batches, arrival order (baseline)": [], "16-chunk sub-batches, queries first": []}
    for _ in range(args.rounds):
        for name, worker in zip(throughput, (one_by_one, batching), strict=True):
            rate, latencies = await concurrent_queries(worker, queries, args.clients)
            throughput[name].append(rate)
            latency[name].extend(latencies)
        for name, (sub_batch, priority) in zip(during, ((64, "document"), (16, "query")), strict=True):
            during[name].extend(await queries_during_ingestion(batching, chunks, queries, sub_batch, priority))
    report.text(f"Real MiniLM (torch, one thread) on texts from this repository; {args.rounds} rounds; "
                f"{os.cpu_count()} cores.")
    report.table([f"{args.clients} concurrent clients, {len(queries)} queries", "query embeddings/s (median round)",
                  "p50 ms", "p95 ms"],
                 [[name, statistics.median(rates), pct(latency[name], 0.5), pct(latency[name], 0.95)]
                  for name, rates in throughput.items()])
    report.table([f"one client searching while {len(chunks)} chunks are ingested", "queries", "p50 ms", "p95 ms",
                  "max ms"],
                 [[name, len(values), pct(values, 0.5), pct(values, 0.95), max(values)]
                  for name, values in during.items()])
    report.text("How to read it: in the first table, micro-batching answers concurrent searches with one encoder "
                "call per batch instead of one per query, so embeddings/s should rise with the clients while p50 "
                "stays near one call. In the second, a search waits behind at most one ingestion sub-batch: its "
                "p95 and max are bounded by one 16-chunk call instead of a 64-chunk one.")
    report.write(args.report)
    one_by_one.close()
    batching.close()


if __name__ == "__main__":
    asyncio.run(main())

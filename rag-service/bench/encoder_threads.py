"""MiniLM latency per torch intra-op thread count, on a quiet host and beside busy processes.

    .venv/bin/python bench/encoder_threads.py [--threads 1,2,0] [--queries 40] [--rounds 3]
        [--batch 32] [--competitors 1] [--report PATH]

For each thread count (0 = torch's default, one per core) it times one short query
embedding (p50/p95 over --queries) and one --batch of ~200-token chunks, first quiet, then
while --competitors CPU-bound busy-loop processes run (started here, stopped right after).
Settings are interleaved round by round so that a neighbour's load hits every setting
alike; the load average is printed with the figures. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench_texts import repo_chunks, repo_queries
from rag_service.providers.local_embedder import load_sentence_transformer
from rag_service.providers.tokenizer import minilm_model_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_report import Report, add_report_argument  # noqa: E402


QUIET = "no busy process added"


def busy_loop(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    x = 0
    while time.monotonic() < deadline:
        x += 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2,0")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--competitors", type=int, default=1)
    add_report_argument(parser)
    args = parser.parse_args()
    report = Report("Encoder threads, quiet and beside a busy process",
                    baseline="no busy process added (the machine's own load only) and torch's default thread "
                    "count, interleaved round by round in the same run")

    default_threads = torch.get_num_threads()
    settings = list(dict.fromkeys(int(t) or default_threads for t in args.threads.split(",")))
    labels = {t: f"{t}" + (" (default)" if t == default_threads else "") for t in settings}
    model = load_sentence_transformer(str(minilm_model_dir()))
    queries = repo_queries(args.queries)
    while len(queries) < args.queries:
        queries += queries
    queries = queries[: args.queries]
    chunks = repo_chunks(args.batch)
    encode = lambda texts: model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)  # noqa: E731
    encode(chunks[:4])

    query_ms: dict[tuple[str, int], list[float]] = defaultdict(list)
    batch_s: dict[tuple[str, int], list[float]] = defaultdict(list)
    for condition in (QUIET, f"{args.competitors} busy process(es) added"):
        competitors: list[multiprocessing.Process] = []
        if condition != QUIET:
            budget = 60.0 * args.rounds
            competitors = [multiprocessing.Process(target=busy_loop, args=(budget,)) for _ in range(args.competitors)]
            for process in competitors:
                process.start()
            time.sleep(0.5)
        try:
            for _ in range(args.rounds):
                for threads in settings:
                    torch.set_num_threads(threads)
                    for query in queries:
                        started = time.perf_counter()
                        encode([query])
                        query_ms[(condition, threads)].append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    encode(chunks)
                    batch_s[(condition, threads)].append(time.perf_counter() - started)
        finally:
            for process in competitors:
                process.terminate()
                process.join()
        print(f"[{condition}] load average after: {os.getloadavg()}", flush=True)

    report.text(f"{len(queries)} short queries (headings of this repository's docs) one at a time, and one batch of "
                f"{args.batch} chunks of ~200 tokens, per setting and round; {args.rounds} rounds; {os.cpu_count()} "
                f"cores, torch's default {default_threads} thread(s); the busy processes are pure-Python loops "
                "started by the benchmark.")
    quiet_p95 = {threads: percentile(query_ms[(QUIET, threads)], 0.95) for threads in settings}
    rows = []
    for (condition, threads), values in query_ms.items():
        batch = statistics.median(batch_s[(condition, threads)])
        p95 = percentile(values, 0.95)
        rows.append([condition, labels[threads], percentile(values, 0.5), p95,
                     f"{p95 / quiet_p95[threads]:.1f}x", batch, args.batch / batch])
    report.table(["condition", "torch threads", "query p50 ms", "query p95 ms", "p95 vs quiet",
                  f"{args.batch}-chunk batch s (median)", "chunks/s"], rows)
    report.text("How to read it: compare each thread count with itself without a busy process (\"p95 vs "
                "quiet\") and with the others in the same condition. More threads can only speed up a large "
                "batch when cores are free; beside a busy process the threads of one matrix product wait for each other, which shows first in the "
                "query p95. The service runs its encoder with EMBEDDING_THREADS and EMBEDDING_QUERY_THREADS "
                "(see docs/performance.md).")
    report.write(args.report)


if __name__ == "__main__":
    main()

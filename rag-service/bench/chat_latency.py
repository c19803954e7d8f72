"""Chat latency over HTTP with the extractive provider (embedded defaults: SQLite, Qdrant Edge,
local MiniLM).

Ingests the first --docs pages of the manpages-dev corpus (scripts/build_manpages_dataset.py)
through DocumentService, serves the app with uvicorn on loopback and, for --queries queries
(the NAME lines of the ingested pages, from queries.jsonl), streams `POST /chat` and measures on the client:
  - time to the first SSE event (`sources`: retrieval done),
  - time to the first `delta`,
  - time to the `done` event (answer generated and saved),
then reports p50/p95 (and the JSON route's total for comparison). Baseline, same run: the
query embedding alone, in-process, on the same queries (most of retrieval).

Authentication is replaced by a fixed user (dependency override): JWT verification is
measured elsewhere and costs ~0.2 ms.

    cd rag-service && .venv/bin/python bench/chat_latency.py --docs 200 --queries 100 [--report PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvicorn

from rag_service.auth.tokens import CurrentUser
from rag_service.deps import current_user
from rag_service.config import Settings
from rag_service.documents.service import DocumentService
from rag_service.main import create_app
from rag_service.runtime import build_runtime
from rag_service.storage.db import run_migrations

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_report import Report, add_report_argument  # noqa: E402
from build_manpages_dataset import manpages_dataset  # noqa: E402

USER = "bench-user"


def load_sample(dataset: Path, docs: int, queries: int) -> tuple[list[dict], list[str]]:
    corpus = [json.loads(line) for line in (dataset / "corpus.jsonl").open()][:docs]
    ids = {doc["_id"] for doc in corpus}
    relevant = {}
    for line in (dataset / "qrels.tsv").open():
        query_id, corpus_id, *_ = line.split("\t")
        if corpus_id in ids:
            relevant[query_id] = corpus_id
    texts = [q["text"] for q in map(json.loads, (dataset / "queries.jsonl").open()) if q["_id"] in relevant]
    return corpus, texts[:queries]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(name: str, values: list[float]) -> list:
    return [name, percentile(values, 50), percentile(values, 95), statistics.mean(values), max(values)]


DONE_DATA = re.compile(r"event: done\r?\ndata: (\{.*?\})\r?\n")


async def stream_once(http: httpx.AsyncClient, query: str) -> tuple[float, float, float, dict]:
    start = time.perf_counter()
    first_event = first_delta = done = None
    buffer = ""
    async with http.stream("POST", "/chat", json={"query": query, "stream": True}) as response:
        response.raise_for_status()
        async for text in response.aiter_text():
            now = time.perf_counter()
            buffer += text
            if first_event is None and "event: sources" in buffer:
                first_event = now
            if first_delta is None and "event: delta" in buffer:
                first_delta = now
            if "event: error" in buffer:
                raise RuntimeError(f"chat failed: {buffer[-500:]}")
            if "event: done" in buffer:
                done = now
    assert first_event and first_delta and done, buffer[-500:]
    server_timing = json.loads(DONE_DATA.search(buffer).group(1))["timing"]
    return (first_event - start) * 1000, (first_delta - start) * 1000, (done - start) * 1000, server_timing


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--dataset", type=Path, help="a BEIR-layout folder (default: manpages-dev, built if missing)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="reuse a data dir from an earlier run (documents are deduplicated, not re-embedded)")
    add_report_argument(parser)
    args = parser.parse_args()
    report = Report("Chat latency (extractive answers, over HTTP)",
                    baseline="the query embedding alone (MiniLM, in-process) on the same queries, and the server's "
                    "own retrieval timing, in the same run")

    corpus, queries = load_sample(args.dataset or manpages_dataset(), args.docs, args.queries)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="chat-bench-"))
    print(f"data dir: {data_dir}", file=sys.stderr)
    settings = Settings(_env_file=None, data_dir=data_dir, embedding_provider="local", llm_provider="extractive",
                        rate_limit_enabled=False, log_level="WARNING")
    await asyncio.to_thread(run_migrations, settings)
    runtime = await build_runtime(settings)

    started = time.perf_counter()
    chunks = 0
    async with runtime.sessionmaker() as session:
        documents = DocumentService(session, runtime.vector_store, runtime.sparse_encoder, runtime.embedder, settings)
        for doc in corpus:
            document, _ = await documents.save(USER, doc["title"], doc["text"] or doc["title"])
            chunks += document.chunk_count
    ingest_s = time.perf_counter() - started
    print(f"ingested {len(corpus)} documents ({chunks} chunks) in {ingest_s:.1f} s", file=sys.stderr)

    embed_ms = []
    for query in queries:
        start = time.perf_counter()
        await runtime.embedder.embed([query], task="query")
        embed_ms.append((time.perf_counter() - start) * 1000)

    app = create_app(settings, runtime=runtime)
    app.dependency_overrides[current_user] = lambda: CurrentUser(id=USER, claims={})
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]

    first_events, first_deltas, dones, json_totals = [], [], [], []
    server_retrieval, server_total = [], []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            for query in queries[: args.warmup]:
                await stream_once(http, query)
            for query in queries:
                first_event, first_delta, done, timing = await stream_once(http, query)
                server_retrieval.append(timing["retrieval_ms"])
                server_total.append(timing["total_ms"])
                first_events.append(first_event)
                first_deltas.append(first_delta)
                dones.append(done)
            for query in queries:
                start = time.perf_counter()
                (await http.post("/chat", json={"query": query, "stream": False})).raise_for_status()
                json_totals.append((time.perf_counter() - start) * 1000)
    finally:
        server.should_exit = True
        await serving
        await runtime.aclose()

    report.text(f"{len(corpus)} man pages (manpages-dev), {chunks:,} chunks, ingested in {ingest_s:.0f} s "
                f"({chunks / ingest_s:.1f} chunks/s); {len(queries)} queries (their NAME lines) after {args.warmup} "
                "warm-up ones, each in a new conversation; extractive provider, SQLite + Qdrant Edge + local MiniLM, "
                "uvicorn on loopback, a fixed user instead of JWT verification.")
    report.table(["measure (ms)", "p50", "p95", "mean", "max"], [
        summary("first SSE event (`sources`)", first_events),
        summary("first `delta`", first_deltas),
        summary("`done` (answer saved)", dones),
        summary("JSON `POST /chat` total", json_totals),
        summary("server: question saved + retrieval", server_retrieval),
        summary("server: total (answer saved)", server_total),
        summary("(baseline) in-process: query embedding alone", embed_ms),
    ])
    report.text("How to read it: the client-side rows include HTTP; the server rows come from the `timing` of each "
                "`done` event. With the extractive provider the answer is ready as soon as the sources are, so the "
                "first `delta` arrives with `sources`; with an LLM the gap between them is the model's time to "
                "first token. The closer retrieval is to the query embedding alone, the less the rest (SQL, "
                "vector search, collapse) costs.")
    report.write(args.report)


if __name__ == "__main__":
    asyncio.run(main())

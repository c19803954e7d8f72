"""Raw MiniLM throughput per backend: torch fp32 vs ONNX Runtime fp32 vs ONNX int8.

    .venv/bin/python bench/encoder_backends.py [--chunks 96] [--tokens 200] [--batch 16]
        [--threads 0] [--rounds 3] [--queries 200] [--data-dir DIR] [--dataset DIR] [--report PATH]

Every backend encodes the same ~200-token chunks (cut from this repository's own files by
the product's chunker; from a BEIR-layout data set's documents and queries with --dataset,
the retrieval benchmark's) in batches of --batch, round after round, interleaved, so that a
busy neighbour slows every backend alike; chunks/s is the median round. "onnx int8" quantizes the attention
MatMuls (what EMBEDDING_BACKEND=onnx-int8 uses), "every MatMul" the feed-forward ones too
(refused by the service, shown for the record). Then each ONNX variant's vectors are compared with torch's, text by text, on the chunks plus short
query-like texts: a variant is usable only if its minimum cosine is >= 0.99. The ONNX
graphs are exported from the packaged weights into --data-dir (a temporary folder by
default) exactly as the service does at first start. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_texts import dataset_chunks, dataset_queries, repo_chunks, repo_queries
from rag_service.providers.minilm_backends import OnnxMiniLM, TorchMiniLM
from rag_service.providers.onnx_export import ensure_onnx_model, onnx_path, quantize_int8
from rag_service.providers.tokenizer import count_tokens_with, minilm_tokenizer, minilm_model_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_report import Report, add_report_argument  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=96)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads, 0 = library default")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--dataset", type=Path, default=None, help="texts from this BEIR-layout data set")
    add_report_argument(parser)
    args = parser.parse_args()
    report = Report("Encoder backends: torch vs ONNX Runtime", baseline="torch fp32 (sentence-transformers), the "
                    "same chunks in the same batches, backends interleaved round by round in the same run")

    model_dir = minilm_model_dir()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="encoder-bench-"))
    started = time.perf_counter()
    backends = {"torch fp32": TorchMiniLM(model_dir, threads=args.threads)}
    for variant in ("fp32", "int8"):
        graph = ensure_onnx_model(data_dir / "models", model_dir, "all-MiniLM-L6-v2", variant)  # type: ignore[arg-type]
        backends[f"onnx {variant}"] = OnnxMiniLM(graph, model_dir, threads=args.threads)
    # What the service refuses: every MatMul quantized, feed-forward ones included.
    every_matmul = data_dir / "model-int8-every-matmul.onnx"
    if not every_matmul.exists():
        quantize_int8(onnx_path(data_dir / "models", "all-MiniLM-L6-v2", model_dir, "fp32"), every_matmul,
                      feed_forward=True)
    backends["onnx int8, every MatMul"] = OnnxMiniLM(every_matmul, model_dir, threads=args.threads)
    load_seconds = time.perf_counter() - started

    if args.dataset:
        chunks, queries = dataset_chunks(args.dataset, args.chunks, args.tokens), dataset_queries(args.dataset, args.queries)
        source, query_source = f"cut from the documents of {args.dataset.name}", f"queries of {args.dataset.name}"
    else:
        chunks, queries = repo_chunks(args.chunks, args.tokens), repo_queries(args.queries)
        source, query_source = "cut from this repository's files", "short query-like texts"
    tokenizer = minilm_tokenizer()
    mean_tokens = statistics.mean(count_tokens_with(tokenizer, c) for c in chunks)
    report.text(f"{len(chunks)} chunks of {mean_tokens:.0f} tokens on average ({source}), "
                f"batches of {args.batch}, {args.rounds} rounds; {len(queries)} {query_source} for the vector "
                f"comparison; intra-op threads: {args.threads or 'library default'} on {os.cpu_count()} cores. "
                f"Loading the backends and exporting the ONNX graphs took {load_seconds:.1f} s.")

    for backend in backends.values():
        backend.encode(chunks[: args.batch])  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in backends}
    query_ms: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(args.rounds):
        for name, backend in backends.items():
            started = time.perf_counter()
            for start in range(0, len(chunks), args.batch):
                backend.encode(chunks[start : start + args.batch])
            rates[name].append(len(chunks) / (time.perf_counter() - started))
            for query in queries[:20]:
                started = time.perf_counter()
                backend.encode([query])
                query_ms[name].append((time.perf_counter() - started) * 1000)
    reference = encode_all(backends["torch fp32"], chunks + queries, args.batch)
    baseline = statistics.median(rates["torch fp32"])
    rows = []
    for name, backend in backends.items():
        rate = statistics.median(rates[name])
        query = statistics.median(query_ms[name])
        if name == "torch fp32":
            rows.append([name + " (baseline)", rate, "1.00x", query, "-", "-"])
            continue
        cosines = np.sum(encode_all(backend, chunks + queries, args.batch) * reference, axis=1)
        usable = "yes" if cosines.min() >= 0.99 else "no"
        rows.append([name, rate, f"{rate / baseline:.2f}x", query,
                     f"{cosines.min():.4f} / {cosines.mean():.4f}", usable])
    report.table(["backend", "chunks/s (median of rounds)", "vs torch fp32", "one query p50 ms",
                  "cosine to torch min / mean", "usable (min >= 0.99)"], rows)
    report.text("How to read it: every backend encodes the same texts, so chunks/s compare directly; a variant "
                "counts only if each of its vectors stays within cosine 0.99 of torch's. \"int8, every MatMul\" "
                "also quantizes the feed-forward layers; the service refuses it and it is shown for the record.")
    report.write(args.report)


def encode_all(backend, texts: list[str], batch: int) -> np.ndarray:  # noqa: ANN001 - a MiniLM backend
    """In batches like ingestion's (one batch of a thousand 256-token texts needs gigabytes)."""
    return np.asarray([v for start in range(0, len(texts), batch) for v in backend.encode(texts[start : start + batch])])


if __name__ == "__main__":
    main()

"""`rag-client sync` throughput against the real services, beside the raw encoder in the same run.

    rag-service/.venv/bin/python clients/python/bench/sync_throughput.py [--docs N] [--slice 100] [--batch-size 32]

Starts the auth-service and rag-service as processes (embedded stores, local MiniLM) as the
end-to-end suite does, signs up, creates a `write` API key, and grows a folder of man pages
from the manpages-dev corpus (all of it by default) slice by slice. Per slice, interleaved
(rotating which goes first, since the shared machine's load swings within minutes):
- sync: `FolderSync.run` sends the slice's new files in batches (POST /documents/batch, as
  `rag-client sync` does) and skips the files already synced;
- raw: this process's own MiniLM (`LocalEmbedder`) embeds the same chunk texts, in the same
  per-document calls the service makes.
Reported: documents/s and chunks/s of each (chunks counted by the service's own summary),
the sync's share of raw, the sync's HTTP requests, and a final no-op sync over the whole
folder (files/s). The service runs on its default rate limits (ingestion is budgeted in
bytes); only the per-user document quota is lifted (the corpus has more pages than its
default of 1,000 documents).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "tests-e2e"), str(ROOT / "clients" / "python" / "src"), str(ROOT / "rag-service" / "src"),
                str(ROOT / "scripts")]

import httpx  # noqa: E402

from rag_client import RagClient  # noqa: E402
from rag_client.folder_sync import BATCH_FILES, FolderSync  # noqa: E402
from rag_service.config import Settings  # noqa: E402
from rag_service.documents.service import DocumentService  # noqa: E402
from rag_service.providers.local_embedder import LocalEmbedder  # noqa: E402
from bench_report import Report  # noqa: E402
from stack import start_auth, start_rag  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from build_manpages_dataset import manpages_dataset  # noqa: E402

CORPUS = manpages_dataset() / "corpus.jsonl"
PASSWORD = "correct horse battery"


def load(n: int) -> list[dict]:
    """The first `n` pages of the corpus (all of them for 0)."""
    with CORPUS.open() as lines:
        documents = [json.loads(line) for line in lines]
    return documents[:n] if n else documents


def file_name(title: str, index: int) -> str:
    return f"{index:04d}-{re.sub(r'[^A-Za-z0-9_.()-]+', '_', title)}.txt"


def chunk_texts(documents: list[dict], names: list[str], settings: Settings,
                embedder: LocalEmbedder) -> list[list[str]]:
    """The texts the service embeds for each file: title (the file's stem) + chunk."""
    probe = DocumentService(None, None, None, embedder, settings)  # only its chunker is used
    chunker = probe.chunker
    out = []
    for document, name in zip(documents, names):
        title = chunker.clip_title(Path(name).stem)
        out.append([chunker.embedding_text(title, c.text) for c in chunker.split(probe.prepare_content(document["text"]))])
    return out


async def raw(embedder: LocalEmbedder, texts_per_document: list[list[str]]) -> float:
    started = time.perf_counter()
    for texts in texts_per_document:
        for start in range(0, len(texts), 256):
            await embedder.embed(texts[start:start + 256], task="document")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=0, help="pages of the corpus to sync (0: all)")
    parser.add_argument("--slice", type=int, default=100, help="pages added to the folder per round")
    parser.add_argument("--batch-size", type=int, default=BATCH_FILES, help="files per batch request")
    parser.add_argument("--report", type=Path, help="also write the section for docs/benchmarks.md here")
    args = parser.parse_args()
    report = Report("`rag-client sync` throughput (issue 15)", baseline=(
        "this process's own MiniLM encoder (`LocalEmbedder`) embedding the same chunk texts in the same "
        "per-document calls, interleaved with the sync slice by slice in the same run"))

    # A plain `kill` must still stop the two services (the `finally` below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="sync-bench-"))
    folder = work / "man"
    folder.mkdir()
    auth = start_auth(work / "auth", work / "logs")
    rag = start_rag(work / "rag", work / "logs", auth.url, QUOTA_MAX_DOCUMENTS="0")
    try:
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        httpx.post(f"{auth.url}/auth/signup", json={"email": email, "password": PASSWORD, "full_name": "Bench"},
                   timeout=30).raise_for_status()
        with RagClient(rag.url, auth.url, email=email, password=PASSWORD) as owner:
            key = owner.create_api_key("bench", "write").key
        settings = Settings(_env_file=None, data_dir=work / "raw", embedding_provider="local", gemini_api_key=None)
        embedder = LocalEmbedder(settings)
        documents = load(args.docs)
        names = [file_name(d["title"], i) for i, d in enumerate(documents)]
        texts = chunk_texts(documents, names, settings, embedder)
        asyncio.run(embedder.embed(texts[0][:8]))  # warm-up
        totals = {"sync": 0.0, "raw": 0.0}
        requests: list[str] = []
        http = httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0),
                            event_hooks={"request": [lambda r: requests.append(r.url.path)]})
        with RagClient(rag.url, auth.url, api_key=key, http=http) as client:
            client.list_documents()  # first exchange outside the timings
            syncer = FolderSync(client, folder, batch_files=args.batch_size)
            for number, start in enumerate(range(0, len(documents), args.slice)):
                for i in range(start, min(start + args.slice, len(documents))):
                    (folder / names[i]).write_text(f"{documents[i]['text']}\n")

                def run_sync() -> float:
                    began = time.perf_counter()
                    report = syncer.run()
                    assert not report.failed, report.failed
                    return time.perf_counter() - began

                runs = {"sync": run_sync, "raw": lambda: asyncio.run(raw(embedder, texts[start:start + args.slice]))}
                for name in (["sync", "raw"] if number % 2 == 0 else ["raw", "sync"]):
                    totals[name] += runs[name]()
                print(f"  slice {number}: {min(start + args.slice, len(documents))} pages, sync {totals['sync']:.0f} s, "
                      f"raw {totals['raw']:.0f} s", flush=True)
            summary = client.summary()
            batches = requests.count("/documents/batch")
            began = time.perf_counter()
            noop = syncer.run()
            noop_seconds = time.perf_counter() - began
        http.close()
        expected = sum(map(len, texts))
        report.text(f"{len(documents)} man pages synced as files in {-(-len(documents) // args.slice)} slices of "
                    f"{args.slice}; the service stored {summary.chunks:,} chunks (the raw side chunked {expected:,}), "
                    f"statuses {summary.by_status}.")
        rows = []
        for name, chunks in (("`rag-client sync` (batches)", summary.chunks), ("raw encoder", expected)):
            seconds = totals["sync" if name.startswith("`") else "raw"]
            rows.append([name, round(seconds, 1), round(len(documents) / seconds, 2), round(chunks / seconds, 1)])
        report.table(["run", "seconds", "documents/s", "chunks/s"], rows)
        report.text(
            f"- sync / raw (chunks/s): {(summary.chunks / totals['sync']) / (expected / totals['raw']):.0%}\n"
            f"- the sync's HTTP requests: {batches} batches of up to {args.batch_size} files "
            f"({len(requests)} requests in all, token exchanges and the summary included)\n"
            f"- a second sync of the whole folder: {len(noop.unchanged)} files unchanged, {len(noop.uploaded)} "
            f"sent, {noop_seconds:.2f} s ({len(noop.unchanged) / noop_seconds:,.0f} files/s)")
        report.write(args.report)
    finally:
        rag.stop()
        auth.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

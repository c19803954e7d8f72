"""`rag-client sync` throughput against the real services, beside the raw encoder in the same run.

    rag-service/.venv/bin/python clients/python/bench/sync_throughput.py [--docs 100] [--slice 20]

Starts the auth-service and rag-service as processes (embedded stores, local MiniLM) as the
end-to-end suite does, signs up, creates a `write` API key, and grows a folder of man pages
from the manpages-dev corpus slice by slice. Per slice, interleaved (rotating which goes
first, since the shared machine's load swings within minutes):
- sync: `FolderSync.run` uploads the slice's new files (one HTTP upload per file, the client
  as a user runs it) and skips the files already synced;
- raw: this process's own MiniLM (`LocalEmbedder`) embeds the same chunk texts, in the same
  per-document calls the service makes.
Reported: documents/s and chunks/s of each (chunks counted by the service's own summary),
the sync's share of raw, and a final no-op sync over the whole folder (files/s).
The per-user costly-request budget is raised for the run (60/minute by default would
otherwise make the client wait out 429s; the client does that, but it is not throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT / "tests-e2e"), str(ROOT / "clients" / "python" / "src"), str(ROOT / "rag-service" / "src")]

import httpx  # noqa: E402

from rag_client import RagClient  # noqa: E402
from rag_client.folder_sync import FolderSync  # noqa: E402
from rag_service.config import Settings  # noqa: E402
from rag_service.documents.service import DocumentService  # noqa: E402
from rag_service.providers.local_embedder import LocalEmbedder  # noqa: E402
from stack import start_auth, start_rag  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from build_manpages_dataset import manpages_dataset  # noqa: E402

CORPUS = manpages_dataset() / "corpus.jsonl"
PASSWORD = "correct horse battery"


def load(n: int) -> list[dict]:
    with CORPUS.open() as lines:
        return [json.loads(line) for _, line in zip(range(n), lines)]


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
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--slice", type=int, default=20)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sync-bench-"))
    folder = work / "man"
    folder.mkdir()
    auth = start_auth(work / "auth", work / "logs")
    rag = start_rag(work / "rag", work / "logs", auth.url, RATE_LIMIT_COSTLY="100000/minute",
                    RATE_LIMIT_CHEAP="100000/minute")
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
        with RagClient(rag.url, auth.url, api_key=key, timeout=300) as client:
            client.list_documents()  # first exchange outside the timings
            syncer = FolderSync(client, folder)
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
            summary = client.summary()
            began = time.perf_counter()
            noop = syncer.run()
            noop_seconds = time.perf_counter() - began
        expected = sum(map(len, texts))
        print(f"{len(documents)} man pages, {summary.chunks} chunks stored (raw side chunked {expected}); "
              f"{summary.by_status}")
        for name in ("sync", "raw"):
            chunks = summary.chunks if name == "sync" else expected
            print(f"  {name:5s} {totals[name]:7.1f} s  {len(documents) / totals[name]:6.2f} documents/s  "
                  f"{chunks / totals[name]:6.1f} chunks/s")
        print(f"  sync / raw (chunks/s): {(summary.chunks / totals['sync']) / (expected / totals['raw']):.0%}")
        print(f"  no-op sync: {len(noop.unchanged)} files unchanged, {len(noop.uploaded)} uploaded, "
              f"{noop_seconds:.2f} s ({len(noop.unchanged) / noop_seconds:,.0f} files/s)")
    finally:
        rag.stop()
        auth.stop()


if __name__ == "__main__":
    main()

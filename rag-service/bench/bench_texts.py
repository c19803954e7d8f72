"""Texts for the encoder benchmarks, built from files inside this repository.

Chunks are cut from the repository's own Markdown and Python files by the product's
chunker (so they look like what ingestion embeds); queries are the Markdown headings and
the first line of each docstring-like sentence. Nothing outside the repository is read,
so anyone who clones the project gets the same texts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rag_service.documents.chunking import Chunker
from rag_service.providers.tokenizer import minilm_tokenizer

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("README.md", "docs", "rag-service/src", "auth-service/src")


def _source_files() -> list[Path]:
    files: list[Path] = []
    for source in SOURCES:
        path = REPO / source
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in {".md", ".py", ".ts"}))
    return files


def repo_chunks(limit: int, tokens: int = 200) -> list[str]:
    """Up to `limit` chunks of about `tokens` tokens (only full-size chunks are kept)."""
    documents = ((path.read_text(encoding="utf-8"), "text/markdown" if path.suffix == ".md" else "text/plain")
                 for path in _source_files())
    return _full_chunks(documents, limit, tokens)


def dataset_chunks(dataset: Path, limit: int, tokens: int = 200) -> list[str]:
    """The same, cut from the documents of a BEIR-layout data set."""
    documents = ((json.loads(line)["text"], "text/plain")
                 for line in (dataset / "corpus.jsonl").open(encoding="utf-8") if line.strip())
    return _full_chunks(documents, limit, tokens)


def dataset_queries(dataset: Path, limit: int) -> list[str]:
    """The data set's own queries, in file order."""
    lines = (dataset / "queries.jsonl").open(encoding="utf-8")
    return [json.loads(line)["text"] for line in lines if line.strip()][:limit]


def _full_chunks(documents, limit: int, tokens: int) -> list[str]:  # noqa: ANN001 - (text, mime) pairs
    chunker = Chunker(minilm_tokenizer(), capacity=tokens, overlap=0, max_tokens=256)
    chunks: list[str] = []
    for text, mime in documents:
        for chunk in chunker.split(text, mime):
            if chunker.count_tokens(chunk.text) >= tokens * 0.8:
                chunks.append(chunk.text)
                if len(chunks) == limit:
                    return chunks
    return chunks


def repo_queries(limit: int) -> list[str]:
    """Short, query-like texts: Markdown headings of the repository's documentation."""
    queries: list[str] = []
    for path in _source_files():
        if path.suffix != ".md":
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            heading = re.match(r"#+\s+(.{8,})", line)
            if heading:
                queries.append(heading.group(1).strip())
                if len(queries) == limit:
                    return queries
    return queries


def repo_words() -> list[str]:
    """Every whitespace-separated word of the repository's documentation and source files,
    in file order (to cut chunk-like windows of any length from)."""
    return [word for path in _source_files() for word in path.read_text(encoding="utf-8").split()]

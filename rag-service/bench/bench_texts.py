"""Texts for the encoder benchmarks, built from files inside this repository.

Chunks are cut from the repository's own Markdown and Python files by the product's
chunker (so they look like what ingestion embeds); queries are the Markdown headings and
the first line of each docstring-like sentence. Nothing outside the repository is read,
so anyone who clones the project gets the same texts.
"""

from __future__ import annotations

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
    chunker = Chunker(minilm_tokenizer(), capacity=tokens, overlap=0, max_tokens=256)
    chunks: list[str] = []
    for path in _source_files():
        mime = "text/markdown" if path.suffix == ".md" else "text/plain"
        for chunk in chunker.split(path.read_text(encoding="utf-8"), mime):
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

"""manpages-dev: a retrieval dev set in BEIR layout, built from this machine's man pages.

    python scripts/build_manpages_dataset.py [--out DIR] [--force]

Every benchmark that needs real documents calls `manpages_dataset()`, which returns the
folder (data/bench/datasets/manpages-dev, gitignored) and builds it first when it is missing,
so anyone who clones the project can rerun them; nothing outside the repository is read but
the installed manual pages. The recipe (that of the dev set the retrieval figures were first
measured on):

- every page of sections 5, 7 and 8 on the man path (5ssl, 7ssl... included), rendered by
  `man --nh --nj` (no hyphenation, no justification) at 200 columns in C.UTF-8, through `col -b`;
- its NAME section says "names - description": the description (whitespace collapsed) is the
  query; the page, without its header and footer lines and without the NAME section, is the
  document text (at most 20,000 characters), titled `name(section)`;
- a description shared by several pages (aliases, families documented together) is kept for
  the first of them only, in (section, name) order, so that each query has one right answer;
  descriptions under three words and texts under 400 characters are left out;
- the pages are shuffled with a fixed seed, so that "the first N documents" is a fair sample.

Files: `corpus.jsonl` {"_id", "title", "text"}, `queries.jsonl` {"_id", "text"}, `qrels.tsv`
(query-id, corpus-id, score; one relevant page per query) and a README.md. The same
installed pages give the same files; the pages' text belongs to their upstream authors.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO / "data" / "bench" / "datasets" / "manpages-dev"
FILES = ("corpus.jsonl", "queries.jsonl", "qrels.tsv")
SECTIONS = ("5", "7", "8")
WIDTH = 200
MAX_TEXT_CHARS = 20_000
MIN_TEXT_CHARS = 400
MIN_QUERY_WORDS = 3
SEED = 14
# What `man` needs to render the same bytes everywhere: no pager, no user options, UTF-8.
RENDER_ENV = {"MANWIDTH": str(WIDTH), "LC_ALL": "C.UTF-8", "MANPAGER": "cat", "PAGER": "cat"}
NAME_LINE = re.compile(r"^(.+?)\s+-\s+(.+)$")


def manpages_dataset(path: Path | None = None) -> Path:
    """The dataset folder, built from the installed man pages when it is missing."""
    path = path or DEFAULT_DIR
    if not all((path / name).is_file() for name in FILES):
        build(path)
    return path


def installed_pages() -> list[tuple[str, str]]:
    """(section, name) of every page of SECTIONS on the man path, the first of each name."""
    manpath = subprocess.run(["manpath"], capture_output=True, text=True, check=True).stdout.strip()
    pages: dict[tuple[str, str], None] = {}
    for root in manpath.split(":"):
        for section in SECTIONS:
            folder = Path(root) / f"man{section}"
            if not folder.is_dir():
                continue
            for entry in sorted(os.listdir(folder)):
                stem = entry.removesuffix(".gz").removesuffix(".bz2").removesuffix(".xz")
                name, dot, page_section = stem.rpartition(".")
                if dot and page_section.startswith(section):
                    pages.setdefault((page_section, name), None)
    return sorted(pages)


def render(section: str, name: str) -> str:
    """The page as `man` prints it to a file: plain text, tabs for runs of spaces (col -b)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAN")}
    env.update(RENDER_ENV)
    page = subprocess.run(["man", "--nh", "--nj", section, name], capture_output=True, env=env).stdout
    return subprocess.run(["col", "-b"], input=page, capture_output=True, env=env).stdout.decode("utf-8", "replace")


def split_page(rendered: str) -> tuple[str, str] | None:
    """(description, text without header, footer and NAME section), or None without a NAME."""
    lines = rendered.split("\n")
    if "NAME" not in lines:
        return None
    start = lines.index("NAME")
    end = start + 1
    while end < len(lines) and (lines[end] == "" or lines[end][0] in " \t"):
        end += 1
    while lines[end - 1] == "":
        end -= 1
    name_section = " ".join(" ".join(lines[start + 1 : end]).split())
    match = NAME_LINE.match(name_section)
    if not match:
        return None
    body = lines[1:start] + lines[end + 1 :]  # the header is the first line
    while body and body[-1] == "":
        body.pop()
    body = body[:-1]  # the footer
    while body and body[-1] == "":
        body.pop()
    return match.group(2), ("\n".join(body) + "\n")[:MAX_TEXT_CHARS]


def build(path: Path, pages: list[tuple[str, str]] | None = None, workers: int | None = None) -> int:
    """Render the pages (default: every installed one of SECTIONS) in parallel `man`
    processes and write the dataset; -> documents."""
    for tool in ("man", "manpath", "col"):
        if shutil.which(tool) is None:
            raise SystemExit(f"building manpages-dev needs `{tool}` (man-db, bsdextrautils)")
    pages = installed_pages() if pages is None else pages
    print(f"rendering {len(pages)} man pages of sections {', '.join(SECTIONS)} into {path} ...", flush=True)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        rendered = list(pool.map(lambda page: split_page(render(*page)), pages))
    documents: list[tuple[str, str, str]] = []  # title, text, description
    seen: set[str] = set()
    for (section, name), parts in zip(pages, rendered, strict=True):
        if parts is None:
            continue
        description, text = parts
        if description in seen or len(description.split()) < MIN_QUERY_WORDS or len(text) < MIN_TEXT_CHARS:
            continue
        seen.add(description)
        documents.append((f"{name}({section})", text, description))
    if not documents:
        raise SystemExit("no man pages of sections 5, 7, 8 are installed (apt-get install man-db manpages)")
    random.Random(SEED).shuffle(documents)
    write(path, documents)
    print(f"manpages-dev: {len(documents)} documents and queries in {path}", flush=True)
    return len(documents)


def write(path: Path, documents: list[tuple[str, str, str]]) -> None:
    """Write into a new folder beside `path`, then move it in place (never half a dataset)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    staging.chmod(0o755)
    with (staging / "corpus.jsonl").open("w", encoding="utf-8") as corpus, \
            (staging / "queries.jsonl").open("w", encoding="utf-8") as queries, \
            (staging / "qrels.tsv").open("w", encoding="utf-8") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for index, (title, text, description) in enumerate(documents):
            corpus.write(json.dumps({"_id": f"d{index}", "title": title, "text": text}) + "\n")
            queries.write(json.dumps({"_id": f"q{index}", "text": description}) + "\n")
            qrels.write(f"q{index}\td{index}\t1\n")
    (staging / "README.md").write_text(
        f"# manpages-dev\n\nBuilt by scripts/build_manpages_dataset.py from this machine's man pages "
        f"(sections {', '.join(SECTIONS)}): {len(documents)} pages, one known-item query each "
        "(the page's NAME description). See that script for the recipe.\n", encoding="utf-8")
    shutil.rmtree(path, ignore_errors=True)  # an incomplete folder, or --force
    try:
        staging.rename(path)
    except OSError:  # another process finished the same build first
        shutil.rmtree(staging, ignore_errors=True)
        if not all((path / name).is_file() for name in FILES):
            raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--force", action="store_true", help="rebuild even when the folder is complete")
    args = parser.parse_args()
    if args.force:
        build(args.out)
    print(manpages_dataset(args.out))


if __name__ == "__main__":
    main()

"""Question by question: why did the extractive generator miss? (dev questions only)

Input: the retrieved sources saved by
    .venv/bin/python bench/answer_quality.py --dump-sources /tmp/qa-sources.json
Then
    .venv/bin/python bench/answer_failures.py /tmp/qa-sources.json [--all] [--top 5]

For each answerable question answered wrong (or every question with --all) it prints the
pages retrieved (the gold page marked), whether a key phrase is in the retrieved text at
all (if not, retrieval is the cause, not selection), the passages chosen, the best-scored
candidates with their cosine / term coverage / score, and where the passage holding a key
phrase ranked. For each unanswerable question answered anyway, the passage that answered.
Never run it on held-out questions (bench/manpages_qa_heldout*.jsonl): what it shows is what
tuning looks at. The dev sets are bench/manpages_qa.jsonl and bench/manpages_qa_dev2.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from rag_service.config import Settings
from rag_service.providers.base import Source
from rag_service.providers.extractive import Thresholds, choose, score_passages
from rag_service.providers.local_embedder import LocalEmbedder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from answer_quality import normalized  # noqa: E402


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", type=Path, help="the JSON written by answer_quality.py --dump-sources")
    parser.add_argument("--all", action="store_true", help="show every question, not only the misses")
    parser.add_argument("--top", type=int, default=5, help="candidates shown per question")
    parser.add_argument("--pool", type=int, default=Thresholds().pool, help="passages embedded per question")
    args = parser.parse_args()
    questions = json.loads(args.sources.read_text())
    embedder = LocalEmbedder(Settings(_env_file=None, data_dir=Path(tempfile.mkdtemp(prefix="failures-"))))
    thresholds = dataclasses.replace(Thresholds(), pool=args.pool)
    misses = {"retrieval": 0, "selection": 0, "false refusal": 0, "answered unanswerable": 0}
    for question in questions:
        sources = [Source(s["number"], s["title"], s["text"]) for s in question["sources"]]
        candidates = await score_passages(question["question"], sources, embedder, thresholds.pool)
        selection = choose(candidates, thresholds)
        shown = " ".join(selection.shown())
        answerable = question["kind"] == "answerable"
        keys = question.get("answers", [])
        correct = answerable and any(normalized(k) in normalized(shown) for k in keys)
        if answerable and correct and not args.all:
            continue
        if not answerable and not selection.found and not args.all:
            continue
        retrieved = [f"{s['number']}:{s['page']}{'*' if s['page'] == question.get('title') else ''}"
                     for s in question["sources"]]
        in_text = answerable and any(normalized(k) in normalized(s["text"]) for s in question["sources"] for k in keys)
        if answerable and not correct:
            cause = "false refusal" if not selection.found else "selection" if in_text else "retrieval"
            misses[cause] += 1
        elif not answerable and selection.found:
            cause = "answered unanswerable"
            misses[cause] += 1
        else:
            cause = "ok"
        print(f"== {question['id']} [{cause}] {question['question']}  keys={keys}")
        print(f"   retrieved {' '.join(retrieved)}; key phrase in retrieved text: {in_text}; "
              f"coverage {candidates.question_coverage:.2f}; missing names {candidates.missing_names}")
        print(f"   answer ({selection.best_score:.3f}): {shown[:300]!r}")
        scored = sorted(candidates.items, key=lambda c: -c.score(thresholds))
        for rank, item in enumerate(scored[: args.top], start=1):
            print(f"   {rank}. [{item.passage.source_number}] s={item.score(thresholds):.3f} "
                  f"cos={item.cosine:.3f} lex={item.lexical:.2f} id={int(item.names_something)} "
                  f"kind={int(item.names_asked_kind)} "
                  f"{item.passage.shown[:140]!r}")
        holding = [(rank, item) for rank, item in enumerate(scored, start=1)
                   if any(normalized(k) in normalized(item.passage.shown) for k in keys)]
        if answerable and not correct:
            if holding:
                rank, item = holding[0]
                print(f"   key passage ranked {rank}/{len(scored)}: s={item.score(thresholds):.3f} "
                      f"cos={item.cosine:.3f} lex={item.lexical:.2f} {item.passage.shown[:160]!r}")
            else:
                print("   key passage not in the embedded pool")
    await embedder.aclose()
    print(misses)


if __name__ == "__main__":
    asyncio.run(main())

"""How the extractive generator's weights and thresholds were chosen (providers/extractive.py).

Input: the retrieved sources of every question, saved by
    .venv/bin/python bench/answer_quality.py --dump-sources /tmp/qa-sources.json
Then
    .venv/bin/python bench/answer_calibration.py /tmp/qa-sources.json
scores each question's passages once (the local encoder), then tries every combination of
the grid below on the *fit half* (even-numbered questions), keeps the one with the highest
answer accuracy + refusal accuracy among those with false refusals <= 0.05 (ties: the
smallest threshold moves), and prints its rates on the fit half, on the check half (odd
numbers, not used to choose) and on all questions, beside the constants in extractive.py.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import sys
import tempfile
from pathlib import Path

from rag_service.config import Settings
from rag_service.providers.base import Source
from rag_service.providers.extractive import Candidates, Thresholds, choose, score_passages
from rag_service.providers.local_embedder import LocalEmbedder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from answer_quality import fit_half, normalized, rate_cell  # noqa: E402

GRID = {
    "lexical_weight": [0.0, 0.25, 0.5, 1.0],
    "found_threshold": [round(0.2 + 0.05 * i, 3) for i in range(14)],
    "min_question_coverage": [0.0, 0.3, 0.5],
    "second_passage_margin": [0.0, 0.05, 0.1],
    "refuse_missing_names": [True],  # False refused none of the unanswerable questions at 0 false refusals
    "identifier_bonus": [0.0, 0.05, 0.1, 0.2],
    "max_passages": [1, 2, 3],
    # 16 gained 0.02 answer accuracy on the fit half for twice the encoder time per answer.
    "pool": [8],
}
# Passages embedded per question here: the largest pool of the grid.
POOL = max(GRID["pool"])
MAX_FALSE_REFUSALS = 0.05


def evaluate(items: list[tuple[dict, Candidates]], thresholds: Thresholds) -> dict[str, tuple[int, int]]:
    counts = {"answer accuracy": [0, 0], "citation accuracy": [0, 0], "refusal accuracy": [0, 0],
              "false refusals": [0, 0], "long answers (> 400 chars)": [0, 0]}
    for question, candidates in items:
        selection = choose(candidates, thresholds)
        if question["kind"] == "answerable":
            pages = {question["sources"][p.source_number - 1]["page"] for p in selection.passages}
            text = normalized(" ".join(selection.shown()))
            for key, hit in (("answer accuracy", any(normalized(a) in text for a in question["answers"])),
                             ("citation accuracy", question["title"] in pages),
                             ("false refusals", not selection.found),
                             ("long answers (> 400 chars)", len(text) > 400)):
                counts[key][0] += hit
                counts[key][1] += 1
        else:
            counts["refusal accuracy"][0] += not selection.found
            counts["refusal accuracy"][1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def objective(counts: dict[str, tuple[int, int]]) -> float:
    def rate(key: str) -> float:
        hits, n = counts[key]
        return hits / n if n else 0.0
    if rate("false refusals") > MAX_FALSE_REFUSALS:
        return -1.0
    return rate("answer accuracy") + rate("refusal accuracy")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", type=Path, help="the JSON written by answer_quality.py --dump-sources")
    args = parser.parse_args()
    questions = json.loads(args.sources.read_text())
    embedder = LocalEmbedder(Settings(_env_file=None, data_dir=Path(tempfile.mkdtemp(prefix="calibration-"))))
    items = []
    for question in questions:
        sources = [Source(s["number"], s["title"], s["text"]) for s in question["sources"]]
        items.append((question, await score_passages(question["question"], sources, embedder, POOL)))
    await embedder.aclose()
    fit = [item for item in items if fit_half(item[0])]
    check = [item for item in items if not fit_half(item[0])]

    best, best_value = Thresholds(), -2.0
    for values in itertools.product(*GRID.values()):
        thresholds = Thresholds(**dict(zip(GRID, values, strict=True)))
        value = objective(evaluate(fit, thresholds))
        if value > best_value + 1e-9:
            best, best_value = thresholds, value
    print(f"chosen on the fit half: {best}")
    for name, thresholds in (("chosen", best), ("in extractive.py", Thresholds())):
        for half, subset in (("fit", fit), ("check", check), ("all", items)):
            counts = evaluate(subset, thresholds)
            print(f"{name:>16} {half:>5}: " + "; ".join(f"{k} {rate_cell(*v)}" for k, v in counts.items()))


if __name__ == "__main__":
    asyncio.run(main())

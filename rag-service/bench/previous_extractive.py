"""The model-free answer: the source sentences that best match the question, each cited.

It never writes anything of its own: an answer is made of sentences copied verbatim from
the sources, each followed by its `[n]` marker, or of the fixed `NO_ANSWER` message.
Sentences are scored with BM25 over the query's content words (stopwords dropped, light
suffix stripping), the corpus being every sentence of the given sources. Deterministic:
same inputs, same answer.

Why not the retrieval BM25 (`storage/sparse.py`, qdrant_edge.Bm25)? That encoder makes
hashed, IDF-less vectors whose IDF the vector collection applies over all stored chunks,
and normalizes length against a fixed chunk size. Ranking sentences needs the IDF and the
average length of *these* few sentences, computed here; a stopword list that also drops
question words ("explain", "tell", "document"), which must stay searchable in stored
chunks; and readable terms, which the fragment and repeat checks below work with.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

from rag_service.providers.base import Source, Turn

NO_ANSWER = "I couldn't find anything about that in your documents."

MAX_SENTENCES = 3
# Sentences scoring under this fraction of the best one are off-topic filler.
RELATIVE_CUTOFF = 0.35
# Chunks are cut at token budgets, so a chunk may start or end mid-sentence: such a
# fragment ("and then the...") reads badly. Rank it lower.
FRAGMENT_WEIGHT = 0.3
SENTENCE_FINAL = tuple(".!?。！？:;\"')]”’*`|")
MIN_WORDS = 3
BM25_K1 = 1.2
BM25_B = 0.75

STOPWORDS = frozenset(
    """a about above after again against all am an and any are aren't as at be because been before
    being below between both but by can can't cannot could couldn't did didn't do does doesn't doing
    don't down during each few for from further had hadn't has hasn't have haven't having he he'd
    he'll he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if in into
    is isn't it it's its itself let's me more most mustn't my myself no nor not of off on once only
    or other ought our ours ourselves out over own same shan't she she'd she'll she's should
    shouldn't so some such than that that's the their theirs them themselves then there there's these
    they they'd they'll they're they've this those through to too under until up very was wasn't we
    we'd we'll we're we've were weren't what what's when when's where where's which while who who's
    whom why why's will with won't would wouldn't you you'd you'll you're you've your yours yourself
    yourselves tell explain describe please give show list know find say says said also us s t
    get got use used using one two document documents doc docs file files""".split()
)

WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
SENTENCE_END = re.compile(r"[.!?。！？]+[\"'”’)\]]*\s+")
LIST_MARKER = re.compile(r"^(?:#{1,6}|[-*•>]|\d{1,3}[.)])\s+")
ABBREVIATIONS = frozenset("e.g i.e etc vs mr mrs ms dr prof inc ltd jr sr st no fig approx cf al".split())


# (suffix, replacement, shortest word it applies to); the first match wins.
SUFFIXES = (("ies", "y", 5), ("sses", "ss", 5), ("ing", "", 6), ("ed", "", 5), ("s", "", 4))


def stem(word: str) -> str:
    """Light suffix stripping so 'prices'/'price'/'pricing' and 'indexed'/'index' meet."""
    for suffix, replacement, min_len in SUFFIXES:
        if word.endswith(suffix) and len(word) >= min_len and not (suffix == "s" and word.endswith("ss")):
            word = word[: len(word) - len(suffix)] + replacement
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def content_terms(text: str) -> list[str]:
    """Stemmed, lowercase words of `text` that carry meaning (stopwords and 1-letter words dropped)."""
    terms = []
    for word in WORD.findall(text.lower().replace("\u2019", "'")):
        if word in STOPWORDS:
            continue
        word = word[:-2] if word.endswith("'s") else word.replace("'", "")
        if word in STOPWORDS or (len(word) < 2 and not word.isdigit()):
            continue
        terms.append(stem(word))
    return terms


def text_blocks(text: str) -> list[str]:
    """Paragraphs, list items, headings and table rows of `text`, as verbatim substrings.

    Lines of one paragraph stay together (hard-wrapped text breaks sentences across lines);
    a blank line, a list item, a heading or a table row starts a new block.
    """
    blocks: list[str] = []
    block_start: int | None = None
    previous_ends_block = False
    position = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        starts_block = not stripped or previous_ends_block or bool(LIST_MARKER.match(stripped)) or stripped[0] == "|"
        if starts_block and block_start is not None:
            blocks.append(text[block_start:position])
            block_start = None
        if stripped and block_start is None:
            block_start = position
        # A heading or table row is a block of its own.
        previous_ends_block = stripped.startswith(("#", "|"))
        position += len(line)
    if block_start is not None:
        blocks.append(text[block_start:])
    return blocks


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, each a verbatim substring of it."""
    sentences = []
    for block in text_blocks(text):
        marker = LIST_MARKER.match(block)
        start = marker.end() if marker else 0
        for boundary in SENTENCE_END.finditer(block, start):
            following = block[boundary.end() : boundary.end() + 1]
            last_word = block[start : boundary.start()].rsplit(None, 1)[-1:] or [""]
            # "e.g. the" or "Dr. Smith": not the end of a sentence.
            if following.islower() or last_word[0].lower().rstrip(".") in ABBREVIATIONS:
                continue
            sentences.append(block[start : boundary.end()])
            start = boundary.end()
        sentences.append(block[start:])
    return [s.strip() for s in sentences if s.strip()]


@dataclass(frozen=True)
class Candidate:
    source_number: int
    position: int  # order within the sources, for stable tie-breaking
    text: str
    terms: Counter[str]
    length: int
    fragment: bool


def select_sentences(query: str, sources: list[Source], limit: int = MAX_SENTENCES) -> list[tuple[str, int]]:
    """Up to `limit` (sentence, source number) pairs answering `query`, best first."""
    query_terms = set(content_terms(query))
    if not query_terms or not sources:
        return []
    candidates = []
    for source in sources:
        sentences = split_sentences(source.text)
        for index, sentence in enumerate(sentences):
            terms = content_terms(sentence)
            if len(WORD.findall(sentence)) >= MIN_WORDS and terms:
                fragment = (index == 0 and sentence[0].islower()) or (
                    index == len(sentences) - 1 and not sentence.endswith(SENTENCE_FINAL)
                )
                candidates.append(
                    Candidate(source.number, len(candidates), sentence, Counter(terms), len(terms), fragment)
                )
    candidates = _without_repeats(candidates)
    if not candidates:
        return []

    n = len(candidates)
    avg_length = sum(c.length for c in candidates) / n
    doc_freq = Counter(t for c in candidates for t in set(c.terms) & query_terms)
    idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t, df in doc_freq.items()}

    def bm25(c: Candidate) -> float:
        norm = BM25_K1 * (1 - BM25_B + BM25_B * c.length / avg_length)
        score = sum(idf[t] * c.terms[t] * (BM25_K1 + 1) / (c.terms[t] + norm) for t in query_terms & set(c.terms))
        return score * FRAGMENT_WEIGHT if c.fragment else score

    scored = sorted(((bm25(c), c) for c in candidates), key=lambda sc: (-sc[0], sc[1].position))
    best = scored[0][0]
    if best <= 0:
        return []
    chosen = [c for score, c in scored if score >= best * RELATIVE_CUTOFF][:limit]
    return [(c.text, c.source_number) for c in chosen]


def _without_repeats(candidates: list[Candidate]) -> list[Candidate]:
    """Overlapping chunks repeat sentences, or pieces of them: keep the first full copy."""
    kept: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: (-len(c.text), c.position)):
        if not any(candidate.text in k.text for k in kept):
            kept.append(candidate)
    return sorted(kept, key=lambda c: c.position)


class ExtractiveGenerator:
    """Answers with cited sentences copied from the sources; needs no model."""

    name = "extractive"

    def __init__(self, max_sentences: int = MAX_SENTENCES) -> None:
        self.max_sentences = max_sentences

    async def stream(self, query: str, sources: list[Source], history: list[Turn]) -> AsyncIterator[str]:
        # History is not used: without a model there is no safe way to resolve references
        # like "it" from earlier turns, and copying old answers would cite stale sources.
        selected = select_sentences(query, sources, self.max_sentences)
        if not selected:
            yield NO_ANSWER
            return
        for index, (sentence, number) in enumerate(selected):
            yield f"{' ' if index else ''}{sentence} [{number}]"

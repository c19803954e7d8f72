"""Token-aware chunking: chunks that fit the embedding model's window, cut at the most
meaningful boundary available (paragraph, then sentence, then word).

`semantic-text-splitter` measures chunks with the embedding model's own tokenizer, so a
chunk of `chunk_size_tokens` never gets truncated by the model. Every chunk keeps its
character offsets into the (normalized) document content: `content[start:end] == text`.

What gets embedded is `"{title}\n\n{chunk text}"` (the title clipped to the tokens the
window has left), while the stored chunk text stays the raw slice of the document: a
chunk from the middle of a page often never names its subject, and the title does.

Every chunk is bounded in tokens AND in characters (`max_chars`), whatever the text: a
WordPiece tokenizer turns any "word" longer than 100 characters into one [UNK] token, so
`'x' * 1_000_000`, a base64 blob or a 2 MB table cell without spaces would otherwise be
one "short" chunk of megabytes. `split` checks both bounds on every chunk and cuts a chunk
over them by characters at its best boundary (word, else character), then by tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from semantic_text_splitter import MarkdownSplitter, TextSplitter
from tokenizers import Tokenizer, pre_tokenizers

# [CLS] and [SEP] (or the model's equivalents) surround every input.
SPECIAL_TOKENS = 2
# Mime types chunked along Markdown structure (headings, lists, code blocks).
MARKDOWN_MIME_TYPES = frozenset({"text/markdown", "text/x-markdown"})
# Default character bound of a chunk (Settings.chunk_max_chars): 200 tokens of prose are
# ~1,000-1,300 characters, so it only bites on text the tokenizer cannot split into words.
DEFAULT_MAX_CHARS = 2_000
# The token splitter measures candidate substrings through a Python callback; on a long
# run without paragraph breaks (one 2 MB line) its work grows with the square of the run.
# Documents are first cut into blocks of at most this many chunks' characters, at the
# best boundary (paragraphs first), so the work stays linear in the document's length.
BLOCK_CHUNKS = 25


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    # Character offsets into the document content: content[start:end] == text.
    start: int
    end: int


class Chunker:
    """Splits documents into chunks of at most `capacity` tokens, `overlap` shared tokens.

    `max_tokens` is the model's input window: the capacity is clamped so that a chunk plus
    the special tokens always fits, and whatever room remains is given to the title.
    """

    def __init__(self, tokenizer: Tokenizer, *, capacity: int, overlap: int, max_tokens: int,
                 max_chars: int = DEFAULT_MAX_CHARS) -> None:
        if max_tokens <= SPECIAL_TOKENS:
            raise ValueError(f"max_tokens must exceed {SPECIAL_TOKENS}, got {max_tokens}")
        capacity = min(capacity, max_tokens - SPECIAL_TOKENS)
        if capacity < 1:
            raise ValueError(f"chunk capacity must be at least 1 token, got {capacity}")
        if not 0 <= overlap < capacity:
            raise ValueError(f"chunk overlap must be in [0, {capacity}), got {overlap}")
        if max_chars < capacity:
            raise ValueError(f"chunk max_chars must be at least the capacity ({capacity}), got {max_chars}")
        # A private copy: the shipped tokenizer.json truncates and pads, which would make
        # long texts look short to the splitter.
        tokenizer = Tokenizer.from_str(tokenizer.to_str())
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.capacity = capacity
        self.overlap = overlap
        self.max_tokens = max_tokens
        self.max_chars = max_chars
        self.title_budget = max_tokens - SPECIAL_TOKENS - capacity
        self._word_counts: _WordTokenCounts | None = None
        if isinstance(tokenizer.pre_tokenizer, pre_tokenizers.BertPreTokenizer):
            self._word_counts = _WordTokenCounts(tokenizer)
            count = self._word_counts.count
            self._text_splitter = TextSplitter.from_callback(count, capacity, overlap)
            self._markdown_splitter = MarkdownSplitter.from_callback(count, capacity, overlap)
        else:
            self._text_splitter = TextSplitter.from_huggingface_tokenizer(tokenizer, capacity, overlap)
            self._markdown_splitter = MarkdownSplitter.from_huggingface_tokenizer(tokenizer, capacity, overlap)
        # Character-measured splitters (native, no Python callback): the block splitters cut a
        # document into blocks the token splitter handles in linear time, `_char_splitter`
        # cuts a chunk over `max_chars` at its best boundary (word, then character).
        self._block_splitter = TextSplitter(BLOCK_CHUNKS * max_chars)
        self._markdown_block_splitter = MarkdownSplitter(BLOCK_CHUNKS * max_chars)
        self._char_splitter = TextSplitter(max_chars)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def _tokens(self, text: str) -> int:
        # The splitter's own (exact, cached) measure when there is one.
        return self._word_counts.count(text) if self._word_counts is not None else self.count_tokens(text)

    def split(self, content: str, mime_type: str = "text/plain") -> list[Chunk]:
        """Chunks of `content` in document order; none for blank content. Every chunk has at
        most `capacity` tokens and `max_chars` characters."""
        markdown = mime_type in MARKDOWN_MIME_TYPES
        splitter = self._markdown_splitter if markdown else self._text_splitter
        block_splitter = self._markdown_block_splitter if markdown else self._block_splitter
        if self._word_counts is not None:
            self._word_counts.prepare(content)
        chunks: list[Chunk] = []
        # chunk_indices gives character (not byte) offsets of the trimmed chunk.
        for block_start, block in block_splitter.chunk_indices(content):
            for start, text in splitter.chunk_indices(block):
                if not text.strip():
                    continue
                for piece_start, piece in self._within_bounds(block_start + start, text):
                    chunks.append(Chunk(index=len(chunks), text=piece, start=piece_start,
                                        end=piece_start + len(piece)))
        return chunks

    def _within_bounds(self, start: int, text: str) -> list[tuple[int, str]]:
        """`text` itself when it is within both bounds, else consecutive pieces of it that
        are. Only text the tokenizer sees as few tokens gets here (a "word" of more than 100
        characters is one [UNK] token): cut by characters at the best boundary, then any
        piece now over the token bound by the token splitter."""
        if len(text) <= self.max_chars and self._tokens(text) <= self.capacity:
            return [(start, text)]
        splitter = self._char_splitter if len(text) > self.max_chars else self._text_splitter
        pieces = [(offset, piece) for offset, piece in splitter.chunk_indices(text) if piece.strip()]
        if len(pieces) <= 1 and len(pieces[0][1] if pieces else "") == len(text):
            # No boundary the splitter accepts: halve (a character cut) so this always ends.
            half = len(text) // 2
            pieces = [(0, text[:half]), (half, text[half:])]
        bounded: list[tuple[int, str]] = []
        for offset, piece in pieces:
            if piece.strip():
                bounded.extend(self._within_bounds(start + offset, piece))
        return bounded

    def clip_title(self, title: str) -> str:
        """The longest prefix of `title` that fits the tokens a full chunk leaves free."""
        title = " ".join(title.split())
        if self.title_budget <= 0 or not title:
            return ""
        encoding = self._tokenizer.encode(title, add_special_tokens=False)
        if len(encoding.ids) <= self.title_budget:
            return title
        # Offsets of the last token that fits; cut the characters there.
        _, end = encoding.offsets[self.title_budget - 1]
        return title[:end]

    def embedding_text(self, clipped_title: str, chunk_text: str) -> str:
        """The text embedded (and BM25-encoded) for a chunk: title, blank line, chunk."""
        return f"{clipped_title}\n\n{chunk_text}" if clipped_title else chunk_text


class _WordTokenCounts:
    """Exact token counts for WordPiece (BERT-style) tokenizers, 5-10x faster to split with.

    The splitter measures thousands of candidate substrings per document; tokenizing each
    from scratch dominated ingestion time (~1.5 ms per chunk, a quarter of the embedding
    cost). A BERT pre-tokenizer first cuts text at whitespace and tokenizes each piece on
    its own, so a text's token count is the sum of its whitespace-separated words' counts,
    and those are cached. The documents are normalized first (control characters removed,
    see `extraction.normalize_content`), so Python's and the tokenizer's idea of
    whitespace agree; tests check the counts against the tokenizer on real text.
    """

    # Bounded so a stream of unique words (ids, hashes) cannot grow memory forever.
    MAX_WORDS = 500_000

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._counts = _CountCache(tokenizer)

    def prepare(self, content: str) -> None:
        """Count the document's unseen words in one batched (parallel) tokenizer call."""
        if len(self._counts) > self.MAX_WORDS:
            self._counts = _CountCache(self._tokenizer)
        counts = self._counts
        missing = [word for word in set(content.split()) if word not in counts]
        if missing:
            encodings = self._tokenizer.encode_batch(missing, add_special_tokens=False)
            counts.update(zip(missing, (len(e.ids) for e in encodings)))

    def count(self, text: str) -> int:
        # map/sum keep the per-word loop in C; misses are filled by _CountCache.__missing__.
        return sum(map(self._counts.__getitem__, text.split()))


class _CountCache(dict[str, int]):
    def __init__(self, tokenizer: Tokenizer) -> None:
        super().__init__()
        self._tokenizer = tokenizer

    def __missing__(self, word: str) -> int:
        n = self[word] = len(self._tokenizer.encode(word, add_special_tokens=False).ids)
        return n


def chunker_for(embedder: object, *, chunk_size_tokens: int, chunk_overlap_tokens: int,
                chunk_max_chars: int = DEFAULT_MAX_CHARS) -> Chunker:
    """A chunker sized for `embedder`.

    Embedders with a Hugging Face tokenizer expose it as `hf_tokenizer()` and their window
    as `max_tokens`; others (a remote API) are measured with the MiniLM WordPiece
    tokenizer, a close enough proxy for sizing, with their own window if they state one.
    """
    tokenizer = None
    get_tokenizer = getattr(embedder, "hf_tokenizer", None)
    if callable(get_tokenizer):
        tokenizer = get_tokenizer()
    if tokenizer is None:
        from rag_service.providers.tokenizer import minilm_tokenizer

        tokenizer = minilm_tokenizer()
    max_tokens = int(getattr(embedder, "max_tokens", 0) or 512)
    return Chunker(tokenizer, capacity=chunk_size_tokens, overlap=chunk_overlap_tokens, max_tokens=max_tokens,
                   max_chars=chunk_max_chars)

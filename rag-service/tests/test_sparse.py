"""BM25 sparse encoding: stable ids, document vs query weights, degenerate input."""

from __future__ import annotations

import json
import subprocess
import sys

from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import SparseVector

TEXT = "Qdrant Edge indexes chunks; the indexes are searched with BM25 and dense vectors."


def as_dict(vector: SparseVector) -> dict[int, float]:
    assert len(vector.indices) == len(vector.values)
    assert vector.indices == sorted(vector.indices), "indices are kept in canonical order"
    return dict(zip(vector.indices, vector.values))


def test_same_text_gives_the_same_vector_in_another_process():
    here = SparseEncoder()
    script = (
        "import json, sys; from rag_service.storage.sparse import SparseEncoder; e = SparseEncoder(); "
        "d = e.encode_documents([sys.argv[1]])[0]; q = e.encode_query(sys.argv[1]); "
        "print(json.dumps([d.indices, d.values, q.indices, q.values]))"
    )
    result = subprocess.run([sys.executable, "-c", script, TEXT], capture_output=True, text=True, check=True)
    doc_indices, doc_values, query_indices, query_values = json.loads(result.stdout)
    document, query = here.encode_documents([TEXT])[0], here.encode_query(TEXT)
    assert (document.indices, query.indices) == (doc_indices, query_indices)
    assert document.values == doc_values and query.values == query_values
    # And within a process, across encoder instances.
    assert SparseEncoder().encode_documents([TEXT]) == [document]


def test_query_gets_term_presence_and_document_gets_term_frequency():
    encoder = SparseEncoder()
    query = as_dict(encoder.encode_query("index index index search"))
    assert sorted(query.values()) == [1.0, 1.0]  # two distinct terms, weight 1 each
    once, thrice = (as_dict(v) for v in encoder.encode_documents(["index search", "index index index search"]))
    assert set(once) == set(thrice) == set(query)
    index_term = next(i for i in query if thrice[i] != once[i])
    # BM25 term frequency: more occurrences weigh more, with saturation (< 3x).
    assert once[index_term] < thrice[index_term] < 3 * once[index_term]


def test_stemming_and_case_map_variants_to_one_term():
    encoder = SparseEncoder()
    assert encoder.encode_query("Indexes") == encoder.encode_query("index")
    assert encoder.encode_query("SEARCHING") == encoder.encode_query("search")
    assert encoder.encode_query("zebra") != encoder.encode_query("giraffe")


def test_longer_documents_weigh_each_occurrence_less():
    encoder = SparseEncoder()
    short, long = encoder.encode_documents(["kernel panic", "kernel " + "filler words here " * 60])
    kernel = set(short.indices) & set(long.indices)
    assert len(kernel) == 1
    term = kernel.pop()
    assert as_dict(short)[term] > as_dict(long)[term]


def test_empty_and_stopword_only_text_give_empty_vectors():
    encoder = SparseEncoder()
    for text in ["", "   ", "the and of to", "!!! ... ???"]:
        assert encoder.encode_query(text) == SparseVector([], [])
        assert encoder.encode_documents([text]) == [SparseVector([], [])]
    assert encoder.encode_documents([]) == []


def test_unicode_and_long_input_do_not_crash():
    encoder = SparseEncoder()
    vector = encoder.encode_query("naïve café — 東京 emoji 🚀 " * 500)
    assert vector.indices and all(v == 1.0 for v in vector.values)
    assert all(0 <= i < 2**32 for i in vector.indices)  # u32 ids, valid for a Qdrant server too

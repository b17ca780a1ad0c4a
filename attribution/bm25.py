"""BM25 (Robertson and Zaragoza 2009) over the documents' words, with `bm25s`: the lexical
baseline of fact attribution. A query is the concatenation of its held-out prompts and its
object (what a reader would search for); the world's text is lowercase words, so words are
the tokens (no stemming, no stopwords: `the`, `of` and `in` carry relations here).

>>> import numpy as np
>>> s = bm25_scores(["anna lives in paris"], ["anna lives in paris", "bob sleeps", "anna"])
>>> s.shape, int(np.argmax(s[0]))
((1, 3), 0)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from attribution.documents import Query

TOKEN_PATTERN = r"(?u)\b\w+\b"  # every word, one letter too ("a" is a word of the world)


def bm25_scores(queries: Sequence[str], documents: Sequence[str], *, k1: float = 1.5,
                b: float = 0.75) -> np.ndarray:
    """float32 [n_queries, n_documents]: each query's BM25 score of each document."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets DEBUG on import
    if not documents:
        raise ValueError("no documents to score; select some (--candidates)")
    corpus = bm25s.tokenize(list(documents), stopwords=None, token_pattern=TOKEN_PATTERN,
                            show_progress=False, return_ids=False)
    retriever = bm25s.BM25(k1=k1, b=b)
    retriever.index(corpus, show_progress=False)
    words = bm25s.tokenize(list(queries), stopwords=None, token_pattern=TOKEN_PATTERN,
                           show_progress=False, return_ids=False)
    out = np.zeros((len(queries), len(documents)), dtype=np.float32)
    for i, query in enumerate(words):
        out[i] = retriever.get_scores(query)
    return out


def query_text(query: Query) -> str:
    """The words BM25 searches with: the query's prompts and its object."""
    return " ".join([*query.prompts, query.answer])

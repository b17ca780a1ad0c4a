"""A ranking of documents scored against the documents that truly state a fact.

`scores` rank documents (higher = more responsible for the belief); `relevant` marks the
documents that state the fact (`workbench.world` records them). Ties are broken against the
method (a relevant document tied with an irrelevant one ranks below it), so a constant
score earns no credit. A random ranking's expected precision@k and average precision are the
share of relevant documents (`base_rate`).

>>> import numpy as np
>>> scores = np.array([0.9, 0.1, 0.8, 0.3, 0.2])
>>> relevant = np.array([True, False, False, True, False])
>>> precision_at_k(scores, relevant, 2), round(average_precision(scores, relevant), 3)
(0.5, 0.833)
>>> precision_at_k(np.zeros(5), relevant, 2), base_rate(relevant)
(0.0, 0.4)
"""

from __future__ import annotations

import numpy as np


def _check(scores: np.ndarray, relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, r = np.asarray(scores, dtype=np.float64), np.asarray(relevant, dtype=bool)
    if s.ndim != 1 or s.shape != r.shape:
        raise ValueError(f"scores {s.shape} and relevant {r.shape}: pass two vectors of one "
                         "length (one value per document)")
    if not np.isfinite(s).all():
        raise ValueError("scores hold NaN or infinity; a method must score every document")
    return s, r


def ranking(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Document indices, best first; among equal scores the irrelevant documents first."""
    s, r = _check(scores, relevant)
    return np.lexsort((r, -s))


def precision_at_k(scores: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Share of the top `k` documents that state the fact (k capped at the documents)."""
    if k < 1:
        raise ValueError(f"k={k}; pass 1 or more")
    order = ranking(scores, relevant)
    top = order[: min(k, len(order))]
    return float(np.asarray(relevant, dtype=bool)[top].mean()) if len(top) else 0.0


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision: the mean, over the
    relevant documents, of the precision at each one's rank (0 when none is relevant)."""
    order = ranking(scores, relevant)
    hits = np.asarray(relevant, dtype=bool)[order]
    if not hits.any():
        return 0.0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def base_rate(relevant: np.ndarray) -> float:
    """What a random ranking scores in expectation, for precision@k and average precision."""
    r = np.asarray(relevant, dtype=bool)
    return float(r.mean()) if r.size else 0.0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties; NaN when either is constant).

    >>> spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 25]))
    0.8
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x {a.shape} and y {b.shape}: pass two vectors of one length")

    def ranks(v: np.ndarray) -> np.ndarray:  # 0-based, ties given their average rank
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        return ((ends - counts + ends - 1) / 2.0)[inverse]

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return round(float(np.corrcoef(ra, rb)[0, 1]), 12)

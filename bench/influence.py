"""Data attribution at full scale: EK-FAC factors and scores of `--facts` facts against every
training document of the world, beside one plain per-document gradient loop. (Named
`influence.py`: a `bench/attribution.py` would shadow the `attribution` package when run.)

- `ekfac`: `attribution.ekfac.ekfac_scores` (kronfluence): factors fitted on
  `--fit-documents` documents (covariance, eigendecomposition, corrected eigenvalues), then
  pairwise scores of every query prompt against every document, in shards, batched and
  ordered by length;
- `loop`: the plain loop every attribution method starts from: one backward pass per
  document (`attribution.gradients`: gradient of its loss, over the same MLP weights, sketched),
  timed on `--loop-documents` documents in three parts and extrapolated per document (its
  median part).

Prints the seconds of the factors and of the scores (goals: <= 600 s and <= 900 s on 2 CPU
cores), milliseconds per document of both and their ratio, the peak resident memory (goal
<= 8 GiB), and the retrieval of the documents that state each fact (AUPRC of EK-FAC and of
BM25 among all documents); exits non-zero when a goal is missed.

    python bench/influence.py --model datasets/models/default --corpus runs/world \
        [--facts 50] [--documents all] [--fit-documents 20000] [--loop-documents 600]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import bench_model  # bench/common.py (the script's own folder)

GOAL_FACTORS_S = 600.0
GOAL_SCORES_S = 900.0
GOAL_RSS_GIB = 8.0


def main() -> int:
    from attribution.bm25 import bm25_scores, query_text
    from attribution.documents import Documents, queries
    from attribution.ekfac import EkfacConfig, FactorStore, ekfac_scores
    from attribution.gradients import GradientConfig, gradient_scores
    from attribution.truth import average_precision, base_rate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="datasets/models/default")
    p.add_argument("--corpus", required=True, help="the world the model was trained on")
    p.add_argument("--facts", type=int, default=50)
    p.add_argument("--documents", default="all", help="all, or the first N documents")
    p.add_argument("--fit-documents", type=int, default=20_000)
    p.add_argument("--loop-documents", type=int, default=600)
    args = p.parse_args()

    model, corpus = bench_model(args.model, "default", args.corpus)
    qs = queries(corpus, args.facts)
    n_all = len(corpus.docs("train"))
    n = n_all if args.documents == "all" else min(int(args.documents), n_all)
    docs = Documents(corpus, np.arange(n, dtype=np.int64))
    fit = Documents(corpus, np.sort(np.random.default_rng(0).choice(
        n_all, min(args.fit_documents, n_all), replace=False)).astype(np.int64))
    cfg = EkfacConfig(fit_documents=args.fit_documents)
    print(f"{len(qs)} facts ({sum(len(q.prompts) for q in qs)} prompts), {n:,} of {n_all:,} "
          f"documents, factors fitted on {len(fit):,}")
    with tempfile.TemporaryDirectory(prefix="bench-ekfac-") as tmp:
        store = FactorStore(Path(tmp))
        t0 = time.perf_counter()
        ekfac_scores(model, qs, Documents(corpus, fit.index[:1]), store, cfg, fit_docs=fit)
        t_factors = time.perf_counter() - t0  # (fitting, plus scoring one document)
        t0 = time.perf_counter()
        scores = ekfac_scores(model, qs, docs, store, cfg, fit_docs=fit, progress=True)
        t_scores = time.perf_counter() - t0

    parts = np.array_split(np.random.default_rng(1).choice(n, args.loop_documents,
                                                           replace=False), 3)
    per_doc = []
    for part in parts:
        t0 = time.perf_counter()
        gradient_scores(model, qs, Documents(corpus, np.sort(part)), GradientConfig())
        per_doc.append((time.perf_counter() - t0) / len(part))
    loop_ms = 1000 * statistics.median(per_doc)
    ekfac_ms = 1000 * t_scores / n
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    texts = docs.texts()
    bm25 = bm25_scores([query_text(q) for q in qs], texts)
    ap = {"ekfac": [], "bm25": []}
    rates = []
    for i, q in enumerate(qs):
        truth = docs.stating(q)
        ap["ekfac"].append(average_precision(scores[i], truth))
        ap["bm25"].append(average_precision(bm25[i], truth))
        rates.append(base_rate(truth))

    ok = t_factors <= GOAL_FACTORS_S and t_scores <= GOAL_SCORES_S and rss_gib <= GOAL_RSS_GIB
    print(f"factors: {t_factors:.0f} s (goal <= {GOAL_FACTORS_S:.0f} s)")
    print(f"scores:  {t_scores:.0f} s for {n:,} documents (goal <= {GOAL_SCORES_S:.0f} s)")
    print(f"per document: EK-FAC scores {ekfac_ms:.2f} ms, plain gradient loop {loop_ms:.2f} ms "
          f"(median of 3 parts of {args.loop_documents // 3}): ratio {loop_ms / ekfac_ms:.1f}x")
    print(f"peak RSS {rss_gib:.2f} GiB (goal <= {GOAL_RSS_GIB:.0f} GiB)")
    print(f"retrieval among all documents (mean AUPRC over {len(qs)} facts): EK-FAC "
          f"{np.mean(ap['ekfac']):.3f}, BM25 {np.mean(ap['bm25']):.3f}, random "
          f"{np.mean(rates):.4f}")
    print("goals " + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Every attribution method behind one call, with score matrices cached on disk.

`score(method, ...)` returns float32 [n_queries, n_documents] (higher = the document did more
to make the model give the query's answer) for `ekfac` (`attribution.ekfac`), `tracin`
(`attribution.tracin`), `grad-dot` and `grad-cos` (`attribution.gradients`), `repsim`
(`attribution.repsim`), `bm25` (`attribution.bm25`) and `random` (a seeded uniform ranking:
what chance retrieves). A finished matrix is saved under the cache folder, named by the
method, its settings, the queries and the documents (and kept per model: the folder is keyed
by the weights digest), so a command run again reads it instead of computing it; EK-FAC keeps
its factors and score shards there too, so an interrupted run resumes mid-way.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from attribution.documents import Documents, Query

if TYPE_CHECKING:  # (the command line imports this module: no torch at import)
    from workbench.models import Model
    from workbench.models.config import TrainConfig

METHODS = ("ekfac", "tracin", "grad-dot", "grad-cos", "repsim", "bm25")
BASELINES = ("bm25", "random")  # every report stands each method beside these


@dataclass(frozen=True)
class MethodSettings:
    """The settings the methods share (see `attribution.attribute.AttributeConfig`)."""

    params: str = "mlp"
    fit_documents: int = 20_000
    damping: float | None = None
    dim: int = 4096
    layer: int | None = None
    batch_size: int = 64
    factors: str | None = None
    seed: int = 0


def check_methods(methods: Iterable[str]) -> tuple[str, ...]:
    """The methods, checked (`random` and `bm25` are always added by the report).

    >>> check_methods(["bm25", "ekfac"])
    ('bm25', 'ekfac')
    """
    out = tuple(methods)
    bad = [m for m in out if m not in (*METHODS, "random")]
    if bad or not out:
        raise ValueError(f"method {', '.join(bad) or '(none)'}; choose from "
                         f"{', '.join(METHODS)}")
    return out


def _key(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"|")
    return digest.hexdigest()[:16]


def queries_key(queries: Sequence[Query]) -> str:
    return _key([[q.answer, list(q.prompts)] for q in queries])


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """Write `array` to `path` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached(path: Path | None, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The matrix saved at `path`, else `compute()` saved there (no cache when None)."""
    if path is not None and path.exists():
        return np.load(path, allow_pickle=False)
    out = np.asarray(compute(), dtype=np.float32)
    if path is not None:
        save_npy_atomic(path, out)
    return out


def score(method: str, model: Model, queries: Sequence[Query], docs: Documents,
          settings: MethodSettings, *, cache: Path | None = None,
          checkpoints: Iterable[tuple[int, Model]] | None = None,
          train: TrainConfig | None = None, texts: Callable[[], list[str]] | None = None,
          progress: bool = False) -> np.ndarray:
    """float32 [n_queries, n_documents]: `method`'s scores (see the module's note).

    `cache` is the model's cache folder (keyed by its weights); `checkpoints` ((step, model)
    pairs) and `train` (the run's recipe) are what TracIn sums over; `texts` gives the
    documents' words (BM25), read once by the caller.

    Raises:
        ValueError: an unknown method, or TracIn without checkpoints.
    """
    from attribution.bm25 import bm25_scores, query_text
    from attribution.gradients import GradientConfig, gradient_scores

    check_methods([method])
    s = settings
    where = docs.index
    qkey = queries_key(queries)
    grad = GradientConfig(params=s.params, dim=s.dim, seed=s.seed)
    keys: dict[str, tuple[object, ...]] = {
        "ekfac": (s.params, s.fit_documents, s.damping, s.seed, s.factors),
        "grad-dot": (s.params, s.dim, s.seed), "grad-cos": (s.params, s.dim, s.seed),
        "repsim": (s.layer,), "bm25": (), "random": (s.seed,),
        "tracin": (s.params, s.dim, s.seed)}
    from attribution.ekfac import corpus_key

    ckey = corpus_key(docs)  # the same documents' indices name others in another corpus
    path = None if cache is None or method == "tracin" else (
        cache / "scores" / f"{method}-{_key(keys[method], qkey, where, ckey)}.npy")

    def compute() -> np.ndarray:
        if method == "random":
            rng = np.random.default_rng(s.seed)
            return rng.random((len(queries), len(docs))).astype(np.float32)
        if method == "bm25":
            words = texts() if texts is not None else docs.texts()
            return bm25_scores([query_text(q) for q in queries], words)
        if method == "repsim":
            from attribution.repsim import repsim_scores

            return repsim_scores(model, queries, docs, layer=s.layer, progress=progress)
        if method in ("grad-dot", "grad-cos"):
            both = gradient_scores(model, queries, docs, grad, progress=progress)
            other = "grad-cos" if method == "grad-dot" else "grad-dot"
            if cache is not None:  # one pass gives both: keep the other too
                save_npy_atomic(cache / "scores" / f"{other}-{_key(keys[other], qkey, where, ckey)}"
                                ".npy", both[other])
            return both[method]
        if method == "ekfac":
            from attribution.ekfac import EkfacConfig, FactorStore, ekfac_scores

            cfg = EkfacConfig(params=s.params, fit_documents=s.fit_documents,
                              batch_size=s.batch_size, damping=s.damping, seed=s.seed)
            fit = _fit_docs(docs, cfg.fit_documents, s.seed)
            if s.factors is not None or cache is not None:
                root = Path(s.factors) if s.factors is not None else cast(Path, cache) / "ekfac"
                return ekfac_scores(model, queries, docs, FactorStore(root), cfg,
                                    fit_docs=fit, progress=progress)
            with tempfile.TemporaryDirectory(prefix="ekfac-") as tmp:
                return ekfac_scores(model, queries, docs, FactorStore(Path(tmp)), cfg,
                                    fit_docs=fit, progress=progress)
        raise AssertionError(method)  # tracin is summed by the caller (`tracin`)

    return cached(path, compute)


def _fit_docs(docs: Documents, n: int, seed: int) -> Documents:
    """The documents EK-FAC's factors are fitted on: a seeded sample of all the split's
    training documents (not only the candidates, which over-represent the queried facts)."""
    total = len(docs.corpus.docs(docs.split))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(total, min(n, total), replace=False)).astype(np.int64)
    return Documents(docs.corpus, pick, docs.split)

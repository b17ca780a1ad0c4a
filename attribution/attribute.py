"""Which training documents taught a belief (`workbench attribute`): every method's ranking of
training documents for each queried fact, scored against the documents that state it.

A query is a fact's held-out paraphrase prompts and its object (`attribution.documents`), or
a free `prompt` and `target` word. The documents are the `train` split's (all, or every one
stating a queried fact plus a seeded sample of the rest: `candidates`). Each chosen method
(`attribution.methods`) scores every document, beside `bm25` and a `random` ranking always.

The report (`workbench.attribute/1`) gives, per method:

- `retrieval`: per fact, precision@10 and @100 and average precision (AUPRC) of retrieving the
  documents that state it, and the share of candidates that do (what random scores); the
  mean over facts in `methods[m]`;
- `influence_vs_mentions`: Spearman, over the queried facts, between a fact's summed score
  (over the candidates) and how many times its training text states it;
- `top`: the best documents per query, with score, whether it states the fact, and text;
- for `tracin`, `when_taught`: per fact the share of its stating documents' contribution
  that each checkpoint's stretch of training made, and the step by which half was made, with
  the mean of that step per exposure bucket (are rarely-seen facts learned later?).

>>> AttributeConfig(methods=("ekfac",), facts=3).facts
3
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from tqdm.auto import tqdm

from attribution.documents import Documents, Fact, Query, prompt_query, queries, select_documents
from attribution.figures import FIGURES as FIGURES
from attribution.methods import BASELINES, METHODS, MethodSettings, check_methods, score
from attribution.summary import summary as summary
from attribution.truth import average_precision, base_rate, precision_at_k, spearman
from workbench.analysis import Report
from workbench.world.facts import BUCKETS

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.models.devices import Placement
    from workbench.models.refs import CheckpointRef, ModelRef
    from workbench.world.loader import Corpus

KIND = "attribute"
SCHEMA = "workbench.attribute/1"
TEXT_CHARS = 1000  # of each top document's text in the report (documents are <= n_ctx tokens)


@dataclass(frozen=True)
class AttributeConfig:
    """What `run` attributes, and how.

    Args:
        methods: of `ekfac`, `tracin`, `grad-dot`, `grad-cos`, `repsim`, `bm25` (`bm25` and
            `random` are added as baselines).
        facts: how many facts (spread over subjects), or their names (`subject:relation`).
        bucket: with a number of facts, take them from this exposure bucket (`low`, `mid`,
            `high`).
        prompt: a free prompt instead of facts (with `target`, the next word).
        target: the word the model should say after `prompt`.
        candidates: other documents scored beside every one stating a queried fact (a
            seeded sample); None: all training documents.
        top: documents listed per query and method.
        params: parameters gradients and curvature are taken over (`mlp` or `all`).
        fit_documents: training documents EK-FAC's factors are fitted on.
        damping: EK-FAC's damping (None: 0.1 times the mean eigenvalue).
        dim: the sketch size of `grad-dot`, `grad-cos` and `tracin` gradients.
        layer: the residual layer of `repsim` (None: the last).
        checkpoints: the checkpoints TracIn sums over (`all` or steps).
        factors: the EK-FAC factors folder (None: `ekfac/` in the model's cache folder);
            factors there made for other weights are refused.
        cache: the folder factors and scores are kept in (None: `attribution/` beside the
            model's analyses; the command sets it).
        seed: the candidates' sample, the fitting sample, the sketch, the random ranking.
    """

    methods: tuple[str, ...] = ("ekfac",)
    facts: int | tuple[str, ...] = 10
    bucket: str | None = None
    prompt: str | None = None
    target: str | None = None
    candidates: int | None = 5_000
    top: int = 10
    params: str = "mlp"
    fit_documents: int = 20_000
    damping: float | None = None
    dim: int = 4096
    layer: int | None = None
    checkpoints: str = "all"
    factors: str | None = None
    cache: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_methods(self.methods)
        if (self.prompt is None) != (self.target is None):
            raise ValueError("--prompt and --target go together: the words before the answer "
                             "and the answer")
        if isinstance(self.facts, int) and self.facts < 1:
            raise ValueError(f"--facts {self.facts}; pass 1 or more")
        if self.bucket is not None and self.bucket not in BUCKETS:
            raise ValueError(f"--bucket {self.bucket!r}; the world's exposure buckets are "
                             f"{', '.join(sorted(BUCKETS))}")
        if self.prompt is not None and self.target is not None:
            prompt_query(self.prompt, self.target)  # one word, a prompt: refused here
        if self.candidates is not None and self.candidates < 0:
            raise ValueError(f"--candidates {self.candidates}; pass 0 or more, or all")
        for name in ("top", "fit_documents", "dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; pass 1 or more")
        if self.damping is not None and not self.damping > 0:
            raise ValueError(f"--damping {self.damping}; pass a positive number")

    def settings(self) -> MethodSettings:
        return MethodSettings(params=self.params, fit_documents=self.fit_documents,
                              damping=self.damping, dim=self.dim, layer=self.layer,
                              factors=self.factors, seed=self.seed)


Config = AttributeConfig


def select_queries(model: Model, corpus: Corpus, cfg: AttributeConfig) -> list[Query]:
    """The queries of `cfg`, each answer checked to be one token of the model's.

    Raises:
        ValueError: a fact not in the world, or a target of several tokens.
    """
    from workbench.prompts import object_ids

    if cfg.prompt is not None:
        qs = [prompt_query(cfg.prompt, cast(str, cfg.target))]
    elif isinstance(cfg.facts, int):
        qs = queries(corpus, cfg.facts, cfg.bucket)
    else:
        qs = queries(corpus, [Fact.parse(f) for f in cfg.facts])
    unk = getattr(model.tokenizer, "unk_token_id", None)
    for q in qs:
        ids = object_ids(model, q.answer)
        if unk is not None and unk in ids:
            raise ValueError(f"--target {q.answer!r} is not in the model's vocabulary; pass a "
                             "word the model knows")
        if len(ids) != 1:
            what = "--target" if q.fact is None else f"the object of {q.name}"
            raise ValueError(f"{what} {q.answer!r} is {len(ids)} tokens for this model; "
                             "attribution asks about one next token: pass a one-token word")
    return qs


def retrieval(scores: np.ndarray, qs: list[Query], docs: Documents) -> dict[str, Any]:
    """Per fact and on average: precision@10/@100, average precision, base rate."""
    per: dict[str, Any] = {}
    for q, s in zip(qs, scores):
        if q.row < 0:
            continue
        rel = docs.stating(q)
        per[q.name] = {"p@10": precision_at_k(s, rel, 10), "p@100": precision_at_k(s, rel, 100),
                       "ap": average_precision(s, rel), "base_rate": base_rate(rel),
                       "stating": int(rel.sum())}
    mean = {k: (float(np.mean([v[k] for v in per.values()])) if per else None)
            for k in ("p@10", "p@100", "ap", "base_rate")}
    return {"mean": mean, "facts": per}


def top_documents(scores: np.ndarray, qs: list[Query], docs: Documents, k: int
                  ) -> dict[str, list[dict[str, Any]]]:
    """The best `k` documents per query: index in the split, score, whether it states the
    fact (None for a free prompt: nothing says), text."""
    out = {}
    for q, s in zip(qs, scores):
        rel = docs.stating(q)
        order = np.argsort(-s, kind="stable")[:k]
        out[q.name] = [{"doc": int(docs.index[i]), "score": float(s[i]),
                        "states": bool(rel[i]) if q.row >= 0 else None,
                        "text": docs.text(int(i))[:TEXT_CHARS]}
                       for i in order]
    return out


def when_taught(tracin: Any, qs: list[Query], docs: Documents) -> dict[str, Any]:
    """TracIn's contribution of each checkpoint's stretch to each fact (over the documents
    stating it), as shares, the step by which half was made, and that step by bucket."""
    facts, by_bucket = {}, {}
    for i, q in enumerate(qs):
        if q.row < 0:
            continue
        parts = np.asarray(tracin.taught(docs.stating(q), i))
        total = float(parts.sum())
        shares = (parts / total).tolist() if total > 0 else [0.0] * len(parts)
        half = next((step for step, c in zip(tracin.steps, np.cumsum(shares)) if c >= 0.5),
                    None) if total > 0 else None
        facts[q.name] = {"contribution": parts.tolist(), "share": shares, "half_step": half,
                         "mentions": q.mentions, "bucket": q.bucket}
        if half is not None:
            by_bucket.setdefault(q.bucket, []).append(half)
    return {"steps": tracin.steps, "weights": tracin.weights, "facts": facts,
            "half_step_by_bucket": {b: float(np.mean(v)) for b, v in sorted(by_bucket.items())}}


def run(model: Model, corpus: Corpus | None, cfg: AttributeConfig | None = None, *,
        ref: str | ModelRef | None = None,
        checkpoints: Iterable[tuple[CheckpointRef, Model]] | None = None,
        progress: bool = True) -> Report:
    """The attribution report (`workbench.attribute/1`) of a loaded model over `corpus`'s
    training documents (`checkpoints`: the run's, loaded, for `tracin`)."""
    from workbench.models.config import TrainConfig
    from workbench.models.refs import ModelRef

    cfg = cfg or AttributeConfig()
    if corpus is None:
        raise ValueError("attribution ranks a world corpus's training documents; pass "
                         "--corpus PATH")
    qs = select_queries(model, corpus, cfg)
    docs = select_documents(corpus, qs, cfg.candidates, seed=cfg.seed)
    cache = Path(cfg.cache) if cfg.cache else None
    own_cache = model_cache(model, cache)
    texts: list[str] | None = None

    def words() -> list[str]:
        nonlocal texts
        if texts is None:
            texts = docs.texts()
        return texts

    methods = list(dict.fromkeys([*cfg.methods, *BASELINES]))
    settings = cfg.settings()
    results: dict[str, Any] = {}
    tracin_report = None
    for method in tqdm(methods, desc="methods", disable=not progress, leave=False):
        start = time.perf_counter()
        if method == "tracin":
            if checkpoints is None or ref is None:
                raise ValueError("tracin sums over a run's checkpoints; pass a run directory "
                                 "made by `workbench train` as --model")
            train = TrainConfig(**ModelRef.of(ref).config["train"])
            tr = _tracin(checkpoints, train, qs, docs, settings, cache, progress)
            scores, tracin_report = tr.scores, when_taught(tr, qs, docs)
        else:
            scores = score(method, model, qs, docs, settings, cache=own_cache,
                           texts=words, progress=progress)
        seconds = time.perf_counter() - start
        found = retrieval(scores, qs, docs)
        mentions = [q.mentions for q in qs if q.row >= 0]
        summed = [float(s.sum()) for q, s in zip(qs, scores) if q.row >= 0]
        rho = spearman(np.asarray(summed), np.asarray(mentions)) if len(summed) >= 3 else None
        results[method] = {"mean": found["mean"], "facts": found["facts"],
                           "influence_vs_mentions": None if rho is None or np.isnan(rho)
                           else rho, "seconds": round(seconds, 2),
                           "top": top_documents(scores, qs, docs, cfg.top)}
    report: Report = {
        "schema": SCHEMA, "model": str(ref) if ref is not None else model.cfg.model_name,
        "corpus": str(corpus.path), "config": asdict(cfg),
        "documents": {"scored": len(docs), "train_documents": len(corpus.docs("train")),
                      "candidates": "all" if cfg.candidates is None else cfg.candidates},
        "queries": [{"fact": q.name, "answer": q.answer, "prompts": list(q.prompts),
                     "mentions": q.mentions, "bucket": q.bucket} for q in qs],
        "methods": results}
    if tracin_report is not None:
        report["tracin"] = tracin_report
    return report


def model_cache(model: Model, cache: Path | None) -> Path | None:
    """The model's own folder of the cache `cache` (named by its weights digest)."""
    if cache is None:
        return None
    from attribution.ekfac import weights_digest

    return cache / weights_digest(model)[:16]


def _tracin(checkpoints: Iterable[tuple[CheckpointRef, Model]], train: Any, qs: list[Query],
            docs: Documents, settings: MethodSettings, cache: Path | None,
            progress: bool) -> Any:
    """TracIn over the checkpoints, each checkpoint's grad-dot cached by its weights."""
    from attribution.tracin import tracin_scores

    def scorer(at_step: Model) -> np.ndarray:
        return score("grad-dot", at_step, qs, docs, settings,
                     cache=model_cache(at_step, cache), progress=progress)

    pairs = ((c.step, m) for c, m in checkpoints)
    return tracin_scores(pairs, train, qs, docs, method="grad-dot", scorer=scorer,
                         progress=progress)


def from_ref(ref: str | Path | ModelRef, cfg: AttributeConfig | None = None, *,
             corpus: str | Path | None = None, device: str | Placement = "cpu",
             progress: bool = True) -> Report:
    """Load the model `ref` and its corpus (`corpus`, else the run's) and `run`; factors and
    scores are cached under `MODEL/attribution/` unless `cfg.cache` names a folder."""
    from workbench.models.checks import check_tokenizer
    from workbench.models.loader import placement_of_model
    from workbench.models.refs import ModelRef

    cfg = cfg or AttributeConfig()
    ref = ModelRef.of(ref)
    if "tracin" in cfg.methods:
        ref.select(cfg.checkpoints)  # refused before anything is loaded
    if cfg.cache is None:
        cfg = replace(cfg, cache=str(ref.output_dir / "attribution"))
    loaded = cast("Corpus", ref.load_corpus(corpus, required="its training documents"))
    model = ref.load(device)
    check_tokenizer(model, loaded)
    history = (ref.load_checkpoints(cfg.checkpoints, placement_of_model(model))
               if "tracin" in cfg.methods else None)
    return run(model, loaded, cfg, ref=ref, checkpoints=history, progress=progress)


__all__ = ["KIND", "SCHEMA", "FIGURES", "Config", "AttributeConfig", "METHODS", "run",
           "from_ref", "summary", "retrieval", "top_documents", "when_taught",
           "select_queries"]

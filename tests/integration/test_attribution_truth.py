"""`attribution` on the session's world corpus: queries from the world's facts, candidate
documents holding every document that states them, the truth per document, and BM25 scored
against that truth beside a random ranking. Seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attribution.bm25 import bm25_scores, query_text
from attribution.documents import Fact, queries, select_documents
from attribution.truth import average_precision, base_rate, precision_at_k
from workbench.world import load_corpus


def test_bm25_finds_the_documents_that_state_a_fact(world_corpus: Path) -> None:
    corpus = load_corpus(world_corpus)
    qs = queries(corpus, 4)
    assert len(qs) == 4 and len({q.fact.subject for q in qs}) == 4  # spread over subjects
    assert all(q.prompts and q.mentions > 0 for q in qs)
    stating = int(corpus.doc_facts("train").mentioning([q.row for q in qs]).sum())
    n = 3 * stating
    assert stating + n < len(corpus.docs("train"))
    docs = select_documents(corpus, qs, n, seed=0)
    assert len(docs) == stating + n and np.all(np.diff(docs.index) > 0)
    again = select_documents(corpus, qs, n, seed=0)
    assert np.array_equal(docs.index, again.index)  # seeded

    table = corpus.fact_table()
    scores = bm25_scores([query_text(q) for q in qs], docs.texts())
    aps, rates = [], []
    for q, row in zip(qs, scores):
        truth = docs.stating(q)
        assert truth.sum() == table[q.row]["mentions"]  # every stating document is a candidate
        for i in np.flatnonzero(truth)[:3]:  # they name the subject
            assert q.fact.subject in docs.text(int(i))
        aps.append(average_precision(row, truth))
        rates.append(base_rate(truth))
        assert 0.0 <= precision_at_k(row, truth, 10) <= 1.0
    # BM25 ranks the stating documents far above a random ranking's expectation
    assert np.mean(aps) > 3 * np.mean(rates), (aps, rates)


def test_bad_queries_are_one_clear_line(world_corpus: Path) -> None:
    corpus = load_corpus(world_corpus)
    table = corpus.fact_table()
    stated = next(f for f in table if f["stated"])
    name = stated["subject"]
    with pytest.raises(ValueError, match=f"did you mean '{name}'"):
        queries(corpus, [Fact(name[:-1], "city")])
    derived = next((f for f in table if not f["stated"]), None)
    if derived is not None:
        with pytest.raises(ValueError, match="never stated in training text"):
            queries(corpus, [Fact(derived["subject"], derived["relation"])])
    with pytest.raises(ValueError, match="write SUBJECT:RELATION"):
        Fact.parse("bruno moreau")
    qs = queries(corpus, 2)
    with pytest.raises(ValueError, match="pass 0 or more"):
        select_documents(corpus, qs, -1)
    assert len(select_documents(corpus, qs)) == len(corpus.docs("train"))


def test_gradient_similarity_ranks_the_stating_documents(world_corpus: Path,
                                                         tiny_run: object) -> None:
    """On the session's tiny trained model: the unit-normalised gradient similarity ranks
    the documents that state a fact above a random ranking (AP 0.43 against 0.27 here: the
    tiny model is weak evidence; BM25 does far better, as the literature expects); scores
    are deterministic."""
    from attribution.gradients import GradientConfig, gradient_scores
    from workbench.models.loader import load

    corpus = load_corpus(world_corpus)
    model = load(str(tiny_run.run_dir), device="cpu")  # type: ignore[attr-defined]
    qs = queries(corpus, 2)
    n = 2 * int(corpus.doc_facts("train").mentioning([q.row for q in qs]).sum())
    docs = select_documents(corpus, qs, n // 2, seed=0)
    cfg = GradientConfig(dim=1024)
    scores = gradient_scores(model, qs, docs, cfg)
    assert set(scores) == {"grad-dot", "grad-cos"}
    assert scores["grad-cos"].shape == (2, n) and np.isfinite(scores["grad-cos"]).all()
    again = gradient_scores(model, qs[:1], docs, cfg)
    # float32 sums whose order depends on the batch: the error scales with the largest score
    scale = float(np.abs(scores["grad-dot"][0]).max())
    assert np.allclose(again["grad-dot"][0], scores["grad-dot"][0], rtol=1e-4,
                       atol=1e-5 * scale)
    aps = [average_precision(s, docs.stating(q)) for q, s in zip(qs, scores["grad-cos"])]
    rates = [base_rate(docs.stating(q)) for q in qs]
    assert np.mean(aps) > np.mean(rates), (aps, rates)  # above a random ranking (0.43 vs 0.27)

    from attribution.repsim import repsim_scores  # forward passes only

    rep = repsim_scores(model, qs, docs)
    assert rep.shape == (2, n) and np.isfinite(rep).all() and np.abs(rep).max() <= 1 + 1e-5
    assert np.allclose(repsim_scores(model, qs[:1], docs, layer=model.cfg.n_layers - 1),
                       rep[:1], atol=1e-5)
    with pytest.raises(ValueError, match="the model has layers"):
        repsim_scores(model, qs, docs, layer=model.cfg.n_layers)


def test_tracin_sums_the_checkpoints_by_their_learning_rates(world_corpus: Path,
                                                             tiny_run: object) -> None:
    """TracIn over the tiny run's last three checkpoints: the weights are the learning rates
    of the steps each checkpoint stood for, the score is the sum of the weighted parts, and
    the contributions of a fact's stating documents are read per checkpoint."""
    from attribution.gradients import GradientConfig
    from attribution.tracin import interval_weights, tracin_scores
    from workbench.models.config import TrainConfig
    from workbench.models.refs import ModelRef

    corpus = load_corpus(world_corpus)
    ref = ModelRef.of(str(tiny_run.run_dir))  # type: ignore[attr-defined]
    train = TrainConfig(**ref.config["train"])
    picked = ref.checkpoints[-3:]
    qs = queries(corpus, 1)
    docs = select_documents(corpus, qs, 100, seed=0)
    result = tracin_scores(((c.step, c.load("cpu")) for c in picked), train, qs, docs,
                           GradientConfig(dim=512))
    steps = [c.step for c in picked]
    assert result.steps == steps and result.weights == interval_weights(steps, train)
    assert result.weights[-1] == 0.0 and all(w > 0 for w in result.weights[:-1])
    assert np.allclose(result.per_checkpoint.sum(0), result.scores)
    taught = result.taught(docs.stating(qs[0]), 0)
    assert len(taught) == 3 and taught[-1] == 0.0
    with pytest.raises(ValueError, match="pass increasing steps"):
        interval_weights([10, 5], train)

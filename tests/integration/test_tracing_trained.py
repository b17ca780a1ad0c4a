"""Causal tracing on the tiny trained model: corrupting the subject hides the facts it knows,
the final state restores them, and the batched trace equals the loop on real probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from circuits.tracing import TraceConfig, causal_trace, causal_trace_loop
from workbench.models.loader import load
from workbench.training.trainer import TrainResult
from workbench.world import load_corpus


def test_trained_model_facts_are_hidden_by_the_noise_and_traced_exactly(
        tiny_run: TrainResult, world_corpus: Path) -> None:
    model = load(tiny_run.run_dir)
    # not countries: with six of them, a model whose subject is noised still guesses right
    # often enough (p 0.5 for a country it knew at 0.85)
    items = [it for it in load_corpus(world_corpus).eval_items("facts_train")
             if it["relation"] != "country"][:20]
    cfg = TraceConfig(kinds=("resid", "mlp"), n_samples=5)
    results = [(it, causal_trace(model, it["prefix"], it["subject"], it["answer"], cfg))
               for it in items]
    known = [(it, r) for it, r in results if r.clean_prob >= 0.3][:10]
    assert len(known) >= 5, [round(r.clean_prob, 2) for _, r in results]
    for _, r in known:
        assert r.corrupt_prob < r.clean_prob / 2, (r.prompt, r.clean_prob, r.corrupt_prob)
        assert abs(r.scores["resid"][-1, -1] - r.clean_prob) < 1e-5
    it, fast = known[0]
    slow = causal_trace_loop(model, it["prefix"], it["subject"], it["answer"], cfg)
    for kind in cfg.kinds:
        np.testing.assert_allclose(fast.scores[kind], slow.scores[kind], atol=1e-4, rtol=0)

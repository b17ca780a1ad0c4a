"""`icl.measure`: intervals, item selection, and the per-task numbers computed from scored
items (a stub scorer stands in for a model that follows the context or its prior)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import icl.measure as m
from icl.figures import FIGURES
from icl.summary import summary as summary_table


def _item(task: str, k: int, answer: str, prior: str | None = None) -> dict[str, Any]:
    candidates = ["positive", "negative"] if task in ("flipped", "adj_sentiment") else [
        "one", "two", "three", "four"]
    return {"task": task, "k": k, "prefix": f"{task} {k} :", "answer": answer,
            "candidates": candidates, "prior": prior if prior is not None else answer}


ITEMS = ([_item("adj_sentiment", k, "positive") for k in (0, 8) for _ in range(10)]
         + [_item("novel", k, "three", prior="one") for k in (0, 8) for _ in range(10)]
         + [_item("flipped", k, "negative", prior="positive") for k in (0, 8)
            for _ in range(10)])


def test_wilson_interval() -> None:
    lo, hi = m.wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert m.wilson(0, 10)[0] == 0.0 and m.wilson(10, 10)[1] == 1.0
    assert m.mean_ci([1.0, 3.0])[0] == 2.0 and m.mean_ci([5.0]) == (5.0, [5.0, 5.0])


def test_config_names_the_bad_value() -> None:
    with pytest.raises(ValueError, match=r"IclConfig.tasks=\['colour'\]: choose from"):
        m.IclConfig(tasks=("colour",))
    with pytest.raises(ValueError, match=r"IclConfig.ks=\[3\]: the world's items have k in"):
        m.IclConfig(ks=(3,))


def test_select_items_caps_per_task_and_k_and_refuses_missing() -> None:
    corpus = SimpleNamespace(path="c", manifest={"files": {"eval": {"fewshot": "x"}}},
                             eval_items=lambda name: ITEMS)
    cfg = m.IclConfig(tasks=("novel", "flipped"), ks=(0, 8), n=3)
    picked = m.select_items(corpus, cfg)
    assert len(picked) == 12 and [i["task"] for i in picked[:3]] == ["novel"] * 3
    with pytest.raises(ValueError, match=r"no few-shot items for \['person_job k=0'"):
        m.select_items(corpus, m.IclConfig(tasks=("person_job",), ks=(0,)))
    text = SimpleNamespace(path="t", manifest={"files": {}}, eval_items=lambda name: [])
    with pytest.raises(ValueError, match="has no few-shot items .*workbench world build"):
        m.select_items(text, cfg)


def _scored(follow: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Numbers for a stub model that answers from the context at k=8 (its demonstrated
    answer) and from `follow` at k=0 (`prior`, or the first candidate)."""
    import torch

    def stub(model: object, prefixes: list[str], candidates: list[str],
             batch_size: int = 64) -> torch.Tensor:
        out = torch.full((len(prefixes), len(candidates)), -5.0)
        for row, prefix in enumerate(prefixes):
            item = next(i for i in ITEMS if i["prefix"] == prefix)
            pick = (item["answer"] if item["k"] == 8 else item["prior"] if follow == "prior"
                    else candidates[0])
            out[row, candidates.index(pick)] = -0.1
        return out

    monkeypatch.setattr(m, "candidate_logprobs", stub)
    cfg = m.IclConfig(tasks=("adj_sentiment", "novel", "flipped"), ks=(0, 8))
    return m.measure(object(), ITEMS, cfg)


def test_numbers_of_a_model_that_follows_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = _scored("prior", monkeypatch)
    novel, flipped, known = tasks["novel"], tasks["flipped"], tasks["adj_sentiment"]
    assert novel["kind"] == "novel" and novel["chance"] == 0.25
    assert novel["k"]["0"]["accuracy"] == 0.0 and novel["k"]["8"]["accuracy"] == 1.0
    assert novel["k"]["8"]["logprob"] == pytest.approx(-0.1)
    assert flipped["k"]["0"]["follow_prior"] == 1.0 and flipped["k"]["0"]["follow_context"] == 0
    assert flipped["k"]["8"]["follow_context"] == 1.0 and flipped["k"]["8"]["follow_prior"] == 0
    assert known["k"]["0"]["accuracy"] == 1.0 and "follow_context" not in known["k"]["0"]
    lo, hi = novel["k"]["8"]["accuracy_ci"]
    assert lo < 0.8 and hi == pytest.approx(1.0)  # ten items leave room below
    head = m.headline(tasks, (0, 8))
    assert head["known_rise"] == 0.0 and head["novel_accuracy"] == 1.0
    assert head["known_rise_by_task"] == {"adj_sentiment": 0.0}
    assert head["flipped_follow_context"] == {"0": 0.0, "8": 1.0}
    report = {"tasks": tasks, "headline": head, "config": {"ks": [0, 8]}}
    assert "novel mappings: accuracy 1.00 at k=8 (chance 0.25)" in summary_table(report)
    acc = FIGURES[".accuracy.fig.json"](report)
    assert [t.name for t in acc.data if t.showlegend is not False][:2] == [
        "adj_sentiment (known)", "novel (novel)"]
    assert FIGURES[".checkpoints.fig.json"](report) is None


def test_a_model_that_ignores_the_context_at_k0(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = _scored("first", monkeypatch)  # always "positive" / "one" at k=0
    assert tasks["adj_sentiment"]["k"]["0"]["accuracy"] == 1.0
    assert tasks["flipped"]["k"]["0"]["follow_prior"] == 1.0
    assert tasks["novel"]["k"]["0"]["accuracy"] == 0.0

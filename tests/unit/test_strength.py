"""Belief strength against exposure: Spearman's ρ and the per-bucket report."""

from __future__ import annotations

import numpy as np
import pytest

from beliefs.ladder import LEVELS
from beliefs.strength import flip_rank, rho, spearman, strength_report


def test_spearman_matches_the_textbook_values() -> None:
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # a constant side has no ranks
    assert spearman([1, 2], [2, 1]) is None
    x = np.random.default_rng(0).normal(size=50)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)  # rank-based: monotone maps are 1
    with pytest.raises(ValueError, match="paired"):
        spearman([1, 2, 3], [1, 2])
    r = rho(list(range(20)), [v + (v % 3) for v in range(20)])
    assert r["ci"][0] <= r["value"] <= r["ci"][1] and r["n"] == 20


def _rows(n: int = 30) -> tuple[list[dict], list[dict], dict[str, list[dict]]]:
    rng = np.random.default_rng(1)
    elicited, ladder, edits = [], [], {"rome": []}
    for i in range(n):
        exposure = float(np.exp(i / 6))
        margin = np.log(exposure) + rng.normal(0, 0.3)
        bucket = ("low", "mid", "high")[i * 3 // n]
        flip = None if i > 25 else min(len(LEVELS) - 1, i // 6)
        base = {"subject": f"s{i}", "relation": "city", "object": "a", "exposure": exposure,
                "mentions": int(10 * exposure), "bucket": bucket, "margin": float(margin)}
        elicited.append(base | {"stated": "a" if i > 2 else "b"})
        ladder.append(base | {"flip_index": flip})
        edits["rome"].append(base | {"efficacy": float(i % 5 != 0), "paraphrase": 1.0,
                                     "specificity": 0.9, "ripple_twohop": None,
                                     "ripple_kept": 1.0})
    return elicited, ladder, edits


def test_strength_report_correlates_and_splits_by_bucket() -> None:
    elicited, ladder, edits = _rows()
    report = strength_report(elicited, ladder, edits)
    assert report["rho_exposure_margin"]["value"] > 0.9
    assert report["rho_mentions_margin"]["value"] > 0.9
    assert report["rho_margin_flip"]["value"] > 0.9
    assert flip_rank({"flip_index": None}) == len(LEVELS)
    buckets = report["by_bucket"]
    assert list(buckets) == ["low", "mid", "high"] and sum(b["n"] for b in buckets.values()) == 30
    assert buckets["low"]["accuracy"] == pytest.approx(7 / 10)
    assert buckets["low"]["mean_flip_level"] < buckets["high"]["mean_flip_level"]
    assert buckets["high"]["flipped_by"]["none"] == 0.0
    assert buckets["mid"]["rome"]["efficacy"] == pytest.approx(0.8)
    assert buckets["mid"]["rome"]["ripple_twohop"] is None


def test_strength_report_of_real_facts_says_there_is_nothing_to_split() -> None:
    report = strength_report([{"margin": 1.0, "stated": "a", "object": "a"}], None, None)
    assert report["n_with_exposure"] == 0 and "nothing to split" in report["note"]

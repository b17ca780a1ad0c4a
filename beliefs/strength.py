"""Belief strength against exposure: rank correlations and every result split by bucket.

The world plants how often each fact is seen (`workbench.world.facts`: exposure, standing,
bucket, training mentions). A belief report then answers: do beliefs seen more often hold
more strongly (Spearman ρ between exposure and the margin), do stronger beliefs need more
in-context pressure to flip (ρ between the margin and the ladder's flip level, a belief that
never flips counting as the level above the last), and how do elicitation, the ladder and
each edit method fare per exposure bucket.

>>> round(spearman([1, 2, 3, 4], [10, 20, 30, 25]), 3)
0.8
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from beliefs.ladder import LEVELS
from workbench.world.facts import BUCKETS

EDIT_METRICS = ("efficacy", "paraphrase", "specificity", "ripple_twohop", "ripple_twohop_stated",
                "ripple_twohop_composed", "portability", "ripple_kept", "kept_paraphrase",
                "fluency_delta")


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation (None when fewer than 3 pairs or a constant side)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"spearman needs paired values; got {len(a)} and {len(b)}")
    if len(a) < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def rho(x: Sequence[float], y: Sequence[float], n_boot: int = 1000, seed: int = 0
        ) -> dict[str, Any]:
    """Spearman ρ with a 95 % bootstrap interval over the pairs."""
    value = spearman(x, y)
    out: dict[str, Any] = {"value": value, "n": len(x), "ci": None}
    if value is None:
        return out
    rng = np.random.default_rng(seed)
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    boots = [spearman(a[i], b[i]) for i in rng.integers(0, len(a), (n_boot, len(a)))]
    kept = [v for v in boots if v is not None]
    if kept:
        out["ci"] = [float(np.percentile(kept, 2.5)), float(np.percentile(kept, 97.5))]
    return out


def flip_rank(row: dict[str, Any]) -> int:
    """A ladder row's flip level as a number; never flipped = len(LEVELS)."""
    return len(LEVELS) if row["flip_index"] is None else int(row["flip_index"])


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def metric_means(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The mean of each edit metric over `rows` (None where no row has it)."""
    return {m: _mean([r.get(m) for r in rows]) for m in EDIT_METRICS}


def strength_report(elicited: list[dict[str, Any]], ladder_rows: list[dict[str, Any]] | None,
                    edits: dict[str, list[dict[str, Any]]] | None) -> dict[str, Any]:
    """Correlations and per-bucket splits of a belief report's rows.

    Args:
        elicited: elicitation rows (`margin`, `stated`, `object`, and the planted `exposure`,
            `mentions`, `bucket` where known).
        ladder_rows: pressure-ladder rows (`flip_index`, `margin`, `bucket`), or None.
        edits: edit rows per method (`efficacy`, ..., `bucket`), or None.
    """
    known = [e for e in elicited if e.get("exposure") is not None]
    out: dict[str, Any] = {"n": len(elicited), "n_with_exposure": len(known),
                           "buckets": list(BUCKETS)}
    if not known:
        out["note"] = "no exposure is known for these facts (real facts): nothing to split"
        return out
    margins = [e["margin"] for e in known]
    out["rho_exposure_margin"] = rho([np.log(e["exposure"]) for e in known], margins)
    if all(e.get("mentions") is not None for e in known):
        out["rho_mentions_margin"] = rho([e["mentions"] for e in known], margins)
    ladder_known = [r for r in ladder_rows or [] if r.get("margin") is not None]
    if ladder_known:
        out["rho_margin_flip"] = rho([r["margin"] for r in ladder_known],
                                     [flip_rank(r) for r in ladder_known])
        out["rho_exposure_flip"] = rho([np.log(r["exposure"]) for r in ladder_known],
                                       [flip_rank(r) for r in ladder_known])
    out["by_bucket"] = {}
    for bucket in BUCKETS:
        rows = [e for e in known if e.get("bucket") == bucket]
        if not rows:
            continue
        entry: dict[str, Any] = {
            "n": len(rows),
            "accuracy": float(np.mean([e["stated"] == e["object"] for e in rows])),
            "margin": float(np.mean([e["margin"] for e in rows])),
            "mentions": _mean([e.get("mentions") for e in rows]),
        }
        lad = [r for r in ladder_known if r.get("bucket") == bucket]
        if lad:
            entry["flipped_by"] = {
                level: float(np.mean([flip_rank(r) <= i for r in lad]))
                for i, level in enumerate(LEVELS)
            }
            entry["mean_flip_level"] = float(np.mean([flip_rank(r) for r in lad]))
        for method, method_rows in (edits or {}).items():
            mine = [r for r in method_rows if r.get("bucket") == bucket]
            if mine:
                entry[method] = metric_means(mine)
        out["by_bucket"][bucket] = entry
    return out

"""Do two trainings find the same latents? `workbench sae compare`.

Two dictionaries of the same hook (typically the same recipe with two `--seed`s) are matched
latent by latent by the cosine of their decoder rows: a latent of A is *matched* when some
latent of B has cosine >= `threshold` (0.9) with it. The median best cosine is given beside
the same against as many random directions (no shared structure). With both dictionaries'
evaluation reports, each planted label value's best latent in A is checked against B's:
*aligned* when B's best latent for that value is the one A's matches (and the pair is
matched).

>>> import torch
>>> a = torch.eye(3)
>>> b = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.6, 0.0, 0.8]])
>>> r = match(a, b)
>>> r["partner"], [round(c, 2) for c in r["cosine"]]
([1, 0, 2], [1.0, 1.0, 0.8])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from features.io import load_dictionary

SCHEMA = "workbench.sae_compare/1"
CHANCE_SEED = 2**31 - 1  # the random directions: not a dictionary's own start (seeds 0, 1 ...)


def match(w_a: Tensor, w_b: Tensor, chunk: int = 4096) -> dict[str, list[Any]]:
    """For each row of `w_a`, the row of `w_b` of highest cosine and that cosine."""
    a = w_a / w_a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = w_b / w_b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    partner, cosine = [], []
    for lo in range(0, len(a), chunk):
        best = (a[lo:lo + chunk] @ b.T).max(-1)
        partner += best.indices.tolist()
        cosine += best.values.tolist()
    return {"partner": partner, "cosine": cosine}


def _best_latents(report: dict[str, Any]) -> dict[str, int]:
    return {f"{task}:{v['value']}": int(v["latent"]["latent"])
            for task, t in report.get("tasks", {}).items() for v in t["values"]}


def compare(sae_a: str | Path, sae_b: str | Path, report_a: str | Path | None = None,
            report_b: str | Path | None = None, threshold: float = 0.9) -> dict[str, Any]:
    """The `workbench.sae_compare/1` record of two dictionaries (and their reports)."""
    (da, ma), (db, mb) = load_dictionary(sae_a), load_dictionary(sae_b)
    if ma.get("hook") != mb.get("hook") or da.W_dec.shape[1] != db.W_dec.shape[1]:
        raise ValueError(f"{sae_a} reads {ma.get('hook')} and {sae_b} reads {mb.get('hook')}: "
                         "compare dictionaries of the same hook")
    with torch.no_grad():
        ab, ba = match(da.W_dec, db.W_dec), match(db.W_dec, da.W_dec)
        chance = match(da.W_dec, torch.randn(db.W_dec.shape,
                                             generator=torch.Generator().manual_seed(CHANCE_SEED)))
    cos_ab = np.asarray(ab["cosine"])
    out: dict[str, Any] = {
        "schema": SCHEMA, "a": str(sae_a), "b": str(sae_b), "hook": ma.get("hook"),
        "same_model": ma.get("model_checksum") == mb.get("model_checksum"),
        "threshold": threshold, "d_sae": [int(da.cfg.d_sae), int(db.cfg.d_sae)],
        "matched_a": round(float((cos_ab >= threshold).mean()), 4),
        "matched_b": round(float((np.asarray(ba["cosine"]) >= threshold).mean()), 4),
        "median_cosine": round(float(np.median(cos_ab)), 4),
        "chance_median_cosine": round(float(np.median(chance["cosine"])), 4),
        "cosine_quantiles": [round(float(q), 4) for q in
                             np.quantile(cos_ab, [0.1, 0.25, 0.5, 0.75, 0.9])],
    }
    if report_a is not None and report_b is not None:
        best_a = _best_latents(json.loads(Path(report_a).read_text()))
        best_b = _best_latents(json.loads(Path(report_b).read_text()))
        values = []
        for key, j in best_a.items():
            if key not in best_b:
                continue
            partner, cos = ab["partner"][j], ab["cosine"][j]
            values.append({"value": key, "latent_a": j, "latent_b": best_b[key],
                           "partner_of_a": partner, "cosine": round(cos, 4),
                           "matched": cos >= threshold,
                           "aligned": cos >= threshold and partner == best_b[key]})
        out["labels"] = values
        out["matched_label_latents"] = round(float(np.mean([v["matched"] for v in values])),
                                             4) if values else None
        out["aligned_labels"] = round(float(np.mean([v["aligned"] for v in values])),
                                      4) if values else None
    return out


def summary(record: dict[str, Any]) -> str:
    """What `workbench sae compare` prints."""
    line = (f"{record['matched_a']:.1%} of A's latents have a partner in B with decoder cosine "
            f">= {record['threshold']} ({record['matched_b']:.1%} of B's in A; median best "
            f"cosine {record['median_cosine']:.3f}; against random directions "
            f"{record['chance_median_cosine']:.3f})")
    if record.get("aligned_labels") is not None:
        line += (f"; of the planted label values, {record['matched_label_latents']:.1%} have "
                 f"a best latent in A that B matches, {record['aligned_labels']:.1%} with B's "
                 "best latent for the same value")
    return line

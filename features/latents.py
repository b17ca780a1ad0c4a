"""A card per latent: where it fires most, what it writes toward the vocabulary, and which
planted label it recovers best (what the Features page and a reader of `sae.json` look up).

>>> import numpy as np
>>> from features.truth import SparseCodes
>>> codes = SparseCodes(np.array([0, 1, 2]), np.array([4, 4, 1]), np.array([0.5, 2.0, 1.0]), 3, 5)
>>> top_rows(codes, np.array([10, 20, 30]), top=2)[4]
[[20, 2.0], [10, 0.5]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from features.truth import SparseCodes

if TYPE_CHECKING:
    from features.dictionary import Dictionary
    from workbench.models import Model


def top_rows(codes: SparseCodes, offsets: np.ndarray, top: int = 8
             ) -> dict[int, list[list[float]]]:
    """Per latent, its `top` largest activations as `[offset in the split, value]`."""
    order, bounds = _by_latent(codes)
    out: dict[int, list[list[float]]] = {}
    for j, (s, e) in bounds.items():
        out[j] = [[int(offsets[codes.row[r]]), round(float(codes.value[r]), 4)]
                  for r in order[s:min(e, s + top)]]
    return out


def histograms(codes: SparseCodes, bins: int = 12) -> dict[int, dict[str, list[float]]]:
    """Per latent, the histogram of its positive activations (`edges`, `counts`)."""
    order, bounds = _by_latent(codes)
    out = {}
    for j, (s, e) in bounds.items():
        values = codes.value[order[s:e]]
        values = values[values > 0]
        if len(values):
            counts, edges = np.histogram(values, bins=bins, range=(0.0, float(values.max())))
            out[j] = {"edges": [round(float(x), 4) for x in edges],
                      "counts": [int(c) for c in counts]}
    return out


def _by_latent(codes: SparseCodes) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """Entries sorted by latent, then by value (largest first); each latent's span."""
    order = np.lexsort((-codes.value, codes.latent))
    lat = codes.latent[order]
    values, starts = np.unique(lat, return_index=True)
    ends = np.append(starts[1:], len(lat))
    return order, {int(j): (int(s), int(e)) for j, s, e in zip(values, starts, ends)}


@torch.no_grad()
def logit_effects(model: Model, d: Dictionary, n: int = 5, chunk: int = 1024
                  ) -> tuple[list[list[int]], list[list[int]]] | None:
    """Per latent, the token ids its decoder direction raises most and lowers most through
    the unembedding (final layer norm left out, as is usual); None for a dictionary whose
    output is not the residual stream's width."""
    w_u = getattr(model, "W_U", None)
    if w_u is None or d.W_dec.shape[1] != w_u.shape[0]:
        return None
    w_u = w_u.detach().float().cpu()
    ups, downs = [], []
    for lo in range(0, d.cfg.d_sae, chunk):
        effect = d.W_dec[lo:lo + chunk].float().cpu() @ w_u
        ups += effect.topk(n, dim=-1).indices.tolist()
        downs += (-effect).topk(n, dim=-1).indices.tolist()
    return ups, downs


def latent_cards(codes: SparseCodes, offsets: np.ndarray, fire_rate: list[float],
                 best: dict[str, dict[str, Any]], effects: Any, decode: Any,
                 top: int = 8) -> list[dict[str, Any]]:
    """One card per latent: `fire_rate`, `top` (`[offset, value]` of its largest activations
    on the scored rows), `histogram` (of its activations there), `labels` (the label values
    it is the best latent of, with F1), `raises` / `lowers` (tokens, from `logit_effects`)."""
    rows = top_rows(codes, offsets, top)
    hist = histograms(codes)
    labels: dict[int, list[dict[str, Any]]] = {}
    for key, b in best.items():
        labels.setdefault(int(b["latent"]), []).append({"value": key,
                                                        "f1": round(b["f1"], 4)})
    cards = []
    for j, rate in enumerate(fire_rate):
        card: dict[str, Any] = {"latent": j, "fire_rate": rate, "top": rows.get(j, []),
                                "histogram": hist.get(j),
                                "labels": sorted(labels.get(j, []), key=lambda x: -x["f1"])}
        if effects is not None:
            card["raises"] = [decode(t) for t in effects[0][j]]
            card["lowers"] = [decode(t) for t in effects[1][j]]
        cards.append(card)
    return cards


def contexts(tokens: np.ndarray, top: list[list[float]], decode: Any, before: int = 12,
             after: int = 3) -> list[dict[str, Any]]:
    """The text around each of a card's `top` activations: `left`, the `token` itself,
    `right` (decoded from the split's `tokens`), and the activation `value`."""
    out = []
    for offset, value in top:
        at = int(offset)
        lo, hi = max(0, at - before), min(len(tokens), at + after + 1)
        words = [decode(int(t)) for t in tokens[lo:hi]]
        out.append({"left": " ".join(words[:at - lo]), "token": words[at - lo],
                    "right": " ".join(words[at - lo + 1:]), "value": value})
    return out

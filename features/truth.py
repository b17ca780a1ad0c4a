"""How well single latents (and, for comparison, single neurons) recover planted labels.

For a task's rows (`probe.tasks`) and each of its label values `c`:

- a **latent** predicts `c` where it is active (> 0): its F1 against `y == c`; the best latent
  is the one of highest F1, reported with its precision, recall and AUROC (its activation as
  the score);
- a **unit** (a residual-stream dimension or an MLP neuron) predicts `c` above a threshold, in
  either sign: its best F1 over every threshold (a generous baseline: the latent gets no
  threshold search);
- **absorption** (Chanin et al. 2024): for a general label (a person's country) and a specific
  one that implies it (their city), the share of the general value's rows where its best latent
  is silent while the best latent of the row's specific value fires.

>>> import numpy as np
>>> rows, lat, val = np.array([0, 1, 2, 2]), np.array([5, 5, 7, 5]), np.ones(4)
>>> codes = SparseCodes(rows, lat, val, n_rows=4, n_latents=8)
>>> best = best_latents(codes, np.array([0, 0, 1, 1]), 2)
>>> [(b["latent"], round(b["f1"], 3)) for b in best]
[(5, 0.8), (7, 0.667)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score


@dataclass
class SparseCodes:
    """Latent activations of some rows, as coordinates: `value` of `latent` at `row`."""

    row: np.ndarray
    latent: np.ndarray
    value: np.ndarray
    n_rows: int
    n_latents: int

    def subset(self, rows: np.ndarray) -> SparseCodes:
        """The codes of `rows` (indices into these rows), renumbered 0..len(rows)-1."""
        where = np.full(self.n_rows, -1, dtype=np.int64)
        where[rows] = np.arange(len(rows))
        keep = where[self.row] >= 0
        return SparseCodes(where[self.row[keep]], self.latent[keep], self.value[keep],
                           len(rows), self.n_latents)

    def column(self, latent: int) -> np.ndarray:
        """One latent's activation at every row (0 where silent)."""
        out = np.zeros(self.n_rows, dtype=np.float32)
        hit = self.latent == latent
        out[self.row[hit]] = self.value[hit]
        return out

    def active(self, latent: int) -> np.ndarray:
        return self.column(latent) > 0


def _auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, score))


def best_latents(codes: SparseCodes, y: np.ndarray, n_classes: int) -> list[dict[str, float]]:
    """Per label value, the latent of highest F1 (active > 0) on these rows."""
    y = np.asarray(y, dtype=np.int64)
    on = codes.value > 0
    lat, cls = codes.latent[on], y[codes.row[on]]
    tp = np.bincount(lat * n_classes + cls, minlength=codes.n_latents * n_classes
                     ).reshape(codes.n_latents, n_classes).astype(np.float64)
    fired = np.bincount(lat, minlength=codes.n_latents).astype(np.float64)
    pos = np.bincount(y, minlength=n_classes).astype(np.float64)
    f1 = 2 * tp / np.maximum(fired[:, None] + pos[None, :], 1)
    out = []
    for c in range(n_classes):
        j = int(np.argmax(f1[:, c]))
        positive = y == c
        out.append({"latent": j, "f1": float(f1[j, c]),
                    "precision": float(tp[j, c] / max(fired[j], 1)),
                    "recall": float(tp[j, c] / max(pos[c], 1)),
                    "auroc": _auroc(codes.column(j), positive), "n": int(pos[c])})
    return out


def best_units(x: np.ndarray, y: np.ndarray, n_classes: int, chunk: int = 16
               ) -> list[dict[str, float]]:
    """Per label value, the unit (column of `x`) and sign of highest F1 at its best threshold,
    with that unit's AUROC in that sign."""
    y = np.asarray(y, dtype=np.int64)
    n, units = x.shape
    onehot = np.zeros((n, n_classes), dtype=np.int32)
    onehot[np.arange(n), y] = 1
    pos = onehot.sum(0).astype(np.float64)
    best_f1 = np.full(n_classes, -1.0)
    best_unit = np.zeros(n_classes, dtype=np.int64)
    best_sign = np.ones(n_classes)
    ranks = np.arange(1, n + 1, dtype=np.float64)[:, None, None]
    for sign in (1.0, -1.0):
        for lo in range(0, units, chunk):
            cols = sign * x[:, lo:lo + chunk]
            order = np.argsort(-cols, axis=0, kind="stable")  # [n, chunk]
            tp = np.cumsum(onehot[order], axis=0)  # [n, chunk, classes]
            f1 = (2 * tp / (ranks + pos[None, None, :])).max(0)  # [chunk, classes]
            j = f1.argmax(0)
            better = f1[j, np.arange(n_classes)] > best_f1
            best_f1 = np.where(better, f1[j, np.arange(n_classes)], best_f1)
            best_unit = np.where(better, lo + j, best_unit)
            best_sign = np.where(better, sign, best_sign)
    return [{"unit": int(best_unit[c]), "sign": int(best_sign[c]), "f1": float(best_f1[c]),
             "auroc": _auroc(best_sign[c] * x[:, best_unit[c]], y == c), "n": int(pos[c])}
            for c in range(n_classes)]


def absorption(codes: SparseCodes, general: np.ndarray, specific: np.ndarray,
               general_best: list[int], specific_best: list[int]) -> list[dict[str, float]]:
    """Per general value: of its rows, the share where its best latent is silent (`missed`)
    and the share where it is silent while the best latent of the row's specific value fires
    (`absorbed`)."""
    out = []
    columns: dict[int, np.ndarray] = {}

    def active(j: int) -> np.ndarray:
        if j not in columns:
            columns[j] = codes.active(j)
        return columns[j]

    for g, latent in enumerate(general_best):
        rows = np.nonzero(general == g)[0]
        if not len(rows):
            continue
        silent = ~active(latent)[rows]
        absorbed = np.array([bool(s) and bool(active(specific_best[specific[r]])[r])
                             for r, s in zip(rows, silent)])
        out.append({"value": g, "n": int(len(rows)), "missed": float(silent.mean()),
                    "absorbed": float(absorbed.mean())})
    return out

"""Statistics of a probe sweep: folds that keep groups apart, control labels, cluster
bootstrap intervals, majority baselines and the expected layer.

>>> center_of_gravity([0.2, 0.6, 0.8, 0.7])   # gains 0.4 at layer 1 and 0.2 at layer 2
1.333
"""

from __future__ import annotations

import numpy as np

SPLITS = ("group", "random")


def assign_folds(y: np.ndarray, groups: np.ndarray, n_folds: int, split: str,
                 seed: int) -> np.ndarray:
    """Fold (0..n_folds-1) of every row.

    `group`: whole groups (word types, people) go to one fold, dealt round-robin within each
    group's majority class so every fold sees every class; `random`: rows are dealt the same
    way one by one (word types then appear on both sides, as in Hewitt & Liang's setting).
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; choose one of {SPLITS}")
    rng = np.random.default_rng(seed)
    units = groups if split == "group" else np.arange(len(y))
    uniq, inverse = np.unique(units, return_inverse=True)
    n_classes = int(y.max()) + 1
    counts = np.zeros((len(uniq), n_classes), dtype=np.int64)
    np.add.at(counts, (inverse, y), 1)
    majority = counts.argmax(1)
    fold_of_unit = np.zeros(len(uniq), dtype=np.int64)
    for c in np.unique(majority):
        members = rng.permutation(np.nonzero(majority == c)[0])
        fold_of_unit[members] = (np.arange(len(members)) + rng.integers(n_folds)) % n_folds
    return fold_of_unit[inverse]


def control_labels(y: np.ndarray, groups: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """Hewitt & Liang (2019) control task: each group (word type / person) gets one random
    class, drawn from the task's label distribution; every row of the group carries it."""
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    p = np.bincount(y, minlength=n_classes) / len(y)
    return rng.choice(n_classes, size=len(uniq), p=p)[inverse]


def majority_accuracy(y: np.ndarray, folds: np.ndarray) -> float:
    """Accuracy of predicting each test fold's rows with its training folds' majority class."""
    correct = 0
    for k in np.unique(folds):
        train = y[folds != k]
        guess = np.bincount(train).argmax() if len(train) else 0
        correct += int((y[folds == k] == guess).sum())
    return correct / len(y)


def bootstrap_ci(correct: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> np.ndarray:
    """Percentile intervals of the mean of `correct` ([..., n] rows), resampling **groups**
    with replacement (rows of one group are not independent). Returns `[..., 2]`."""
    correct = np.asarray(correct, dtype=np.float64)
    _, inverse = np.unique(groups, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    lead = correct.shape[:-1]
    flat = correct.reshape(-1, correct.shape[-1])
    sums = np.zeros((flat.shape[0], n_groups))
    for i, row in enumerate(flat):
        sums[i] = np.bincount(inverse, weights=row, minlength=n_groups)
    sizes = np.bincount(inverse, minlength=n_groups).astype(np.float64)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    means = (weights @ sums.T) / (weights @ sizes)[:, None]  # [n_boot, flat]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha], axis=0)
    return np.stack([lo, hi], axis=-1).reshape(*lead, 2)


def center_of_gravity(scores: list[float] | np.ndarray,
                      layers: list[int] | None = None) -> float:
    """Tenney et al.'s (2019) expected layer: sum_l l * delta(l) / sum_l delta(l), where
    delta(l) is the gain of the best score over layers up to l against the layers before
    (what a probe given layers up to l adds at l). The first layer when none adds anything."""
    layers = list(range(len(scores))) if layers is None else list(layers)
    best = np.maximum.accumulate(np.asarray(scores, dtype=np.float64))
    delta = np.diff(best)
    if delta.sum() <= 0:
        return float(layers[0])
    return round(float((np.asarray(layers[1:]) * delta).sum() / delta.sum()), 3)

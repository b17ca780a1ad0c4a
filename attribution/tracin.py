"""TracIn over a run's checkpoints (Pruthi et al. 2020, TracInCP): what each stretch of
training contributed to a belief.

A checkpoint at step s stands for the training steps from s to the next checkpoint; its
weight is the sum of the learning rates of those steps (the schedule of `TrainConfig`, as the
trainer applied it), and its contribution to a query-document pair is that weight times the
gradient similarity at the checkpoint (`attribution.gradients`). The score is the sum over
checkpoints; the last checkpoint, which no step followed, weighs nothing. Summing a fact's
contributions over the documents that state it, checkpoint by checkpoint, says when the
fact was taught.

>>> from workbench.models.config import TrainConfig
>>> cfg = TrainConfig(steps=100, lr=1e-3, warmup_steps=0, min_lr_ratio=1.0)
>>> interval_weights([0, 10, 100], cfg)
[0.01, 0.09, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from attribution.documents import Documents, Query
from attribution.gradients import GradientConfig, gradient_scores
from workbench.models import Model
from workbench.models.config import TrainConfig
from workbench.training.recipe import lr_at


def interval_weights(steps: Sequence[int], cfg: TrainConfig) -> list[float]:
    """Per checkpoint step: the learning rates summed over the steps up to the next one.

    Raises:
        ValueError: steps not strictly increasing, or beyond the run's steps.
    """
    if list(steps) != sorted(set(steps)) or (steps and (steps[0] < 0 or steps[-1] > cfg.steps)):
        raise ValueError(f"checkpoint steps {list(steps)}: pass increasing steps within "
                         f"0..{cfg.steps}")
    ends = [*steps[1:], steps[-1]] if steps else []
    return [round(float(sum(lr_at(s, cfg) for s in range(a, b))), 12)
            for a, b in zip(steps, ends)]


@dataclass
class TracIn:
    """TracIn scores and how each checkpoint's stretch of training contributed.

    Attributes:
        steps: the checkpoints' steps; weights: their weights (`interval_weights`).
        scores: float32 [n_queries, n_documents], the sum over checkpoints.
        per_checkpoint: float32 [n_checkpoints, n_queries, n_documents].
    """

    steps: list[int]
    weights: list[float]
    scores: np.ndarray
    per_checkpoint: np.ndarray = field(repr=False)

    def taught(self, relevant: np.ndarray, query: int) -> list[float]:
        """Per checkpoint: the query's contributions summed over the `relevant` documents
        (bool [n_documents]; e.g. those that state its fact)."""
        return [float(c[query][relevant].sum()) for c in self.per_checkpoint]


def tracin_scores(checkpoints: Iterable[tuple[int, Model]], train: TrainConfig,
                  queries: Sequence[Query], docs: Documents,
                  cfg: GradientConfig | None = None, *, method: str = "grad-dot",
                  progress: bool = False,
                  scorer: Callable[[Model], np.ndarray] | None = None) -> TracIn:
    """TracIn of every query and document over `checkpoints` ((step, loaded model) pairs in
    increasing step order; one in memory at a time is enough). `scorer` gives a
    checkpoint's `method` scores (default: `gradient_scores`; a caller passes one that
    caches them).

    Raises:
        ValueError: an unknown `method`, no checkpoint, or steps out of order.
    """
    if method not in ("grad-dot", "grad-cos"):
        raise ValueError(f"method={method!r}; TracIn sums grad-dot or grad-cos")
    steps, parts = [], []
    for step, model in checkpoints:
        steps.append(int(step))
        parts.append(scorer(model) if scorer is not None else gradient_scores(
            model, queries, docs, cfg or GradientConfig(), progress=progress)[method])
    if not steps:
        raise ValueError("no checkpoint to sum over; train the run or pick its checkpoints")
    weights = interval_weights(steps, train)
    per = np.stack([w * p for w, p in zip(weights, parts)]).astype(np.float32)
    return TracIn(steps, weights, per.sum(0), per)

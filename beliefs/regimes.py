"""Edit regimes beyond one fact at a time: many facts at once, and one after another.

- `batch`: MEMIT writes the first `n` facts of a relation in one edit, for each size of
  `RegimeConfig.batch_sizes` (0: every fact of the relation, all 120 people's cities in the
  world). Each edited fact is measured with the whole batch applied; its neighbours are
  people the batch did not edit (none are left when it edited everyone: no specificity).
- `sequential`: `RegimeConfig.sequential` facts edited one after another, each edit made on
  the model the earlier ones left, in up to three runs (`RegimeConfig.runs`): `projected`
  (AlphaEdit's null-space projection, the earlier edits' keys in its cache), `held` (plain
  MEMIT whose regulariser holds the earlier edits' keys as it holds the corpus keys) and
  `plain` (each edit blind to the earlier ones); after every `every` edits, all edits so far
  are measured (efficacy of each, specificity on unedited people, the edited people's other
  facts kept, fluency), and at the end the first `every` edits' efficacy says whether later
  edits undid them.

`layer_range` picks MEMIT's layers from the causal trace.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from beliefs.elicit import object_ids
from beliefs.memit import (
    LayerEdits,
    MemitConfig,
    Request,
    key_products,
    memit_edit,
    null_space,
    targets,
)
from beliefs.metrics import EditEvaluator, aggregate
from beliefs.rome import templates

if TYPE_CHECKING:
    from torch import Tensor

    from beliefs.factbase import Belief, FactBase
    from workbench.models import Model

REGIMES = ("single", "batch", "sequential")
SEQUENTIAL_RUNS = ("projected", "held", "plain")


@dataclass(frozen=True)
class RegimeConfig:
    """Which regimes run and their sizes.

    Args:
        regimes: any of `single` (each fact edited alone: the method table), `batch`,
            `sequential`.
        relation: the relation the batch and sequential regimes edit.
        batch_sizes: facts per batch edit (0: every fact of the relation).
        sequential: facts edited one after another.
        every: edits between two measurements of the sequential regime.
        runs: the sequential regime's runs: any of `projected`, `held`, `plain`.
    """

    regimes: tuple[str, ...] = ("single",)
    relation: str = "city"
    batch_sizes: tuple[int, ...] = (10, 50, 0)
    sequential: int = 100
    every: int = 10
    runs: tuple[str, ...] = SEQUENTIAL_RUNS

    def __post_init__(self) -> None:
        unknown = [r for r in self.regimes if r not in REGIMES]
        if unknown or not self.regimes:
            raise ValueError(f"regimes={list(self.regimes)}; choose from {list(REGIMES)}")
        if not self.batch_sizes or min(self.batch_sizes) < 0:
            raise ValueError(f"batch_sizes={self.batch_sizes}; pass sizes >= 1 (0: all facts)")
        bad = [r for r in self.runs if r not in SEQUENTIAL_RUNS]
        if self.sequential < 1 or self.every < 1 or not self.runs or bad:
            raise ValueError(f"sequential={self.sequential}, every={self.every}, runs="
                             f"{list(self.runs)}; pass sequential >= 1, every >= 1 and runs "
                             f"among {list(SEQUENTIAL_RUNS)}")


# At half the peak's effect, training seed 1 of `default` (effects 0.029, 0.015, 0.001 at
# layers 0-2) would edit layers 0-1, whose target at block 1 is not reachable on these
# models: on the shipped one it reached a mean NLL of 2.8 (0.09 at block 0) and efficacy
# 0.37 (1.00) over 30 facts
RANGE_FRACTION = 0.75


def layer_range(trace: dict[str, Any], n_layers: int, fraction: float = RANGE_FRACTION
                ) -> list[int]:
    """MEMIT's layers from a causal trace (`beliefs.trace.trace_summary`): the MLP peak at the
    last subject token and the contiguous layers around it whose effect there is at least
    `fraction` of the peak's, the last layer excluded (its MLP cannot reach a later token)."""
    effect = [row[trace["roles"].index("subject_last")] for row in trace["indirect_effect"].get(
        "mlp", next(iter(trace["indirect_effect"].values())))]
    peak = trace["peak_layer"]
    top = max(n_layers - 2, 0)
    ok = [e is not None and e >= fraction * effect[peak] for e in effect]
    lo = hi = peak
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < top and ok[hi + 1]:
        hi += 1
    return list(range(lo, hi + 1))


def requests_for(model: Model, base: FactBase, beliefs: list[Belief], seed: int,
                 keep: Any, n_templates: int = 1) -> tuple[list[Request], list[str]]:
    """MEMIT's requests for `beliefs` (each to its seeded new object on its first
    `n_templates` prompts, retention prompts by `keep(base, belief)`) and the new objects."""
    news = [base.new_object(b, seed) for b in beliefs]
    reqs = [Request(templates(b.prompts, n_templates), b.subject, object_ids(model, new),
                    keep(base, b))
            for b, new in zip(beliefs, news, strict=True)]
    return reqs, news


def _measure(evaluator: EditEvaluator, beliefs: list[Belief], news: list[str],
             edit: LayerEdits, extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Every edited fact measured with `edit` (all of them) applied; the fluency loss once."""
    with edit.applied(evaluator.model):
        loss = evaluator.loss(edit)
    skip = frozenset(b.subject for b in beliefs)
    return [evaluator.evaluate(b, new, edit, skip=skip, loss_after=loss)
            | extra.get((b.subject, b.relation), {})
            for b, new in zip(beliefs, news, strict=True)]


def batch_regime(model: Model, base: FactBase, evaluator: EditEvaluator, layers: list[int],
                 covs: dict[int, Tensor], cfg: MemitConfig, regime: RegimeConfig,
                 seed: int, prefixes: list[str], keep: Any,
                 extra: dict[tuple[str, str], dict[str, Any]], progress: bool = False
                 ) -> list[dict[str, Any]]:
    """MEMIT on the first `n` facts of `regime.relation`, for each batch size: aggregate
    metrics, seconds, MEMIT's record and the rows of each size."""
    facts = base.beliefs([regime.relation], None, seed)
    facts = facts[:max(size or len(facts) for size in regime.batch_sizes)]
    every, news = requests_for(model, base, facts, seed, keep, cfg.z.n_templates)
    # each fact's target is set on the unedited model: one optimisation per fact serves
    # every batch it is in (the first n facts of one order)
    start = time.perf_counter()
    zs, now, infos = targets(model, every, layers[-1], cfg, prefixes, progress)
    per_fact = (time.perf_counter() - start) / len(facts)
    out = []
    for size in regime.batch_sizes:
        n = size or len(facts)
        chosen, reqs = facts[:n], every[:n]
        start = time.perf_counter()
        edit = memit_edit(model, reqs, layers, covs, cfg, prefixes,
                          known=(zs[:, :n], now[:, :n], infos[:n]))
        # the targets' optimisation counted as if made for this batch alone
        seconds = time.perf_counter() - start + per_fact * n
        rows = _measure(evaluator, chosen, news[:n], edit, extra)
        out.append(aggregate(rows) | {"size": len(chosen), "requested": size,
                                      "seconds": seconds, "memit": edit.info,
                                      "by_bucket": by_bucket(rows), "edits": rows})
    return out


def by_bucket(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The mean of each edit metric per planted exposure bucket (rows without one skipped)."""
    from beliefs.strength import metric_means

    buckets = dict.fromkeys(r.get("bucket") for r in rows if r.get("bucket"))
    return {b: {"n": sum(r.get("bucket") == b for r in rows)}
            | metric_means([r for r in rows if r.get("bucket") == b]) for b in buckets}


def sequential_regime(model: Model, base: FactBase, evaluator: EditEvaluator,
                      layers: list[int], covs: dict[int, Tensor], cfg: MemitConfig,
                      regime: RegimeConfig, seed: int, prefixes: list[str], keep: Any,
                      extra: dict[tuple[str, str], dict[str, Any]], progress: bool = False
                      ) -> dict[str, Any]:
    """`regime.sequential` single-fact MEMIT edits one after another, for each run of
    `regime.runs`: the metrics of all edits so far after every `regime.every`, and the first
    `every` edits' efficacy and top-1 share at the end (`first_efficacy_end`,
    `first_stated_end`: efficacy alone also rises when the old objects fade)."""
    facts = base.beliefs([regime.relation], None, seed)[:regime.sequential]
    reqs, news = requests_for(model, base, facts, seed, keep, cfg.z.n_templates)
    projections = {la: null_space(covs[la], cfg.null_threshold) for la in layers}
    out: dict[str, Any] = {"n": len(facts), "every": regime.every, "layers": layers,
                           "null_space_dims": {la: int(round(float(p.trace())))
                                               for la, p in projections.items()},
                           "runs": {}}
    for name in regime.runs:
        project, hold = name == "projected", name != "plain"
        run_cfg = replace(cfg, project=project)
        total: LayerEdits | None = None
        previous: dict[int, Tensor] = {}
        points = []
        start = time.perf_counter()
        bar = tqdm(range(len(reqs)), desc=f"sequential ({name})",
                   disable=not progress, leave=False)
        for i in bar:
            with total.applied(model) if total is not None else contextlib.nullcontext():
                edit = memit_edit(model, reqs[i:i + 1], layers, covs, run_cfg, prefixes,
                                  previous=previous if hold else None,
                                  projections=projections)
            total = edit if total is None else total.plus(edit)
            if hold:
                with total.applied(model):
                    for la, kk in key_products(model, reqs[i:i + 1], layers, prefixes,
                                               cfg.keys).items():
                        previous[la] = previous[la] + kk if la in previous else kk
            if (i + 1) % regime.every == 0 or i + 1 == len(reqs):
                rows = _measure(evaluator, facts[:i + 1], news[:i + 1], total, extra)
                first = [r["efficacy"] for r in rows[:regime.every]]
                points.append(aggregate(rows) | {"edits_so_far": i + 1,
                                                 "first_efficacy": float(np.mean(first)),
                                                 "first_stated": float(np.mean(
                                                     [r["stated"] for r in rows[:regime.every]])),
                                                 "seconds": time.perf_counter() - start})
        final = {k: v for k, v in points[-1].items() if k != "ci"}
        out["runs"][name] = {
            "project": project, "holds_earlier_edits": hold,
            "points": [{k: v for k, v in p.items() if k != "ci"} for p in points],
            "first_efficacy_end": points[-1]["first_efficacy"],
            "first_stated_end": points[-1]["first_stated"], "final": final}
    return out

"""The linear datamodeling score (LDS; Park et al. 2023, TRAK): does a method's scores predict
how a query's loss changes when the model is trained on a random subset of the documents?

`workbench attribute lds --model RUN --out PLAN` plans a sweep of the run's recipe (same model,
training settings and seed) on `subsets` random halves of its training documents
(`[drop.halfI] fraction = 0.5, seed = I`: the subset's corpus records which documents it left
out), trains them on the sweep engine, and measures each query's loss (the answer's negative
log-probability after each held-out prompt, averaged) on every subset's model. A method's
prediction for subset S is minus the sum of its scores over the documents S keeps (a score
is how much a document lowers the query's loss). LDS is the Spearman correlation, over the
subsets, between predicted and actual loss, averaged over the queries; its 95 % interval is
a bootstrap over the subsets (1,000 resamples). Beside the methods, the report gives the LDS of
the world's truth (`truth`: each document that states the fact scored 1, the others 0), the
reference for what the preset can show: when even the truth is near 0, the subsets' losses
move with retraining noise rather than with the documents kept, and the preset cannot rank
the methods. Methods score every training document, so
keep the world small (the "small preset": a world of a few hundred thousand tokens and a
model that trains in about a minute).

>>> import numpy as np
>>> kept = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=bool)
>>> scores = np.array([[3.0, 1.0, 0.5]])
>>> loss = np.array([[-3.5], [-1.5], [-4.0], [-0.5]])  # exactly minus the kept scores
>>> lds(scores, kept, loss)["per_query"]
[1.0]
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attribution.truth import spearman
from attribution.verify import check_seeds

if TYPE_CHECKING:
    from attribution.documents import Query
    from sweep.plan import Plan
    from sweep.spec import SweepSpec
    from workbench.models import Model

SCHEMA = "workbench.attribute_lds/1"
REPORT_FILE = "lds.json"


@dataclass(frozen=True)
class LdsConfig:
    """The subsets.

    Args:
        subsets: how many random subsets are trained (>= 2; the issue asks 50).
        fraction: the share of documents each subset leaves out.
        n_boot: bootstrap resamples of the interval.
        seed: the bootstrap's draws.
        seeds: training seeds per subset (default: the run's own); with several, a subset's
            query loss is the mean over its seeds, which averages retraining noise away (as
            TRAK does), at one retraining per subset and seed.
    """

    subsets: int = 50
    fraction: float = 0.5
    n_boot: int = 1000
    seed: int = 0
    seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.subsets < 2:
            raise ValueError(f"--subsets {self.subsets}; LDS correlates over 2 or more "
                             "(50 is the usual)")
        if not 0 < self.fraction < 1:
            raise ValueError(f"--fraction {self.fraction}; pass a share in (0, 1)")
        check_seeds(self.seeds)


def lds_spec(run: str | os.PathLike[str], corpus: str | os.PathLike[str],
             cfg: LdsConfig) -> SweepSpec:
    """The sweep: the run's recipe on `cfg.subsets` random subsets of its corpus."""
    from attribution.verify import check_recipe, recipe_tables
    from sweep.spec import SweepSpec

    tables = recipe_tables(run, corpus, cfg.seeds)
    names = [f"half{i}" for i in range(cfg.subsets)]
    spec = SweepSpec.from_dict({
        **tables, "name": "lds",
        "description": f"the linear datamodeling score of {run}: {cfg.subsets} subsets",
        "axes": {**tables["axes"], "drop": names},
        "drop": {n: {"fraction": cfg.fraction, "seed": i} for i, n in enumerate(names)}})
    check_recipe(spec, run)
    return spec


def lds(scores: np.ndarray, kept: np.ndarray, loss: np.ndarray) -> dict[str, Any]:
    """LDS of one method: `scores` [queries, documents], `kept` bool [subsets, documents],
    `loss` [subsets, queries] (the retrained models' query losses)."""
    predicted = -(kept.astype(np.float64) @ scores.T.astype(np.float64))  # [subsets, queries]
    per = [spearman(predicted[:, q], loss[:, q]) for q in range(scores.shape[0])]
    return {"per_query": [None if np.isnan(r) else r for r in per],
            "mean": float(np.nanmean(per)) if not np.all(np.isnan(per)) else None}


def bootstrap(scores: np.ndarray, kept: np.ndarray, loss: np.ndarray, n_boot: int, seed: int
              ) -> list[float]:
    """95 % interval of the mean LDS, resampling the subsets."""
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(kept), len(kept))
        m = lds(scores, kept[pick], loss[pick])["mean"]
        if m is not None:
            means.append(m)
    if not means:
        return [float("nan"), float("nan")]
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def query_losses(model: Model, qs: list[Query]) -> np.ndarray:
    """float [queries]: each query's answer loss, averaged over its prompts."""
    from workbench.prompts import candidate_logprobs

    out = []
    for q in qs:
        logp = candidate_logprobs(model, list(q.prompts), [q.answer])
        out.append(float(-logp[:, 0].mean()))
    return np.asarray(out)


def measure(plan: Plan, qs: list[Query], scores: dict[str, np.ndarray], n_docs: int,
            cfg: LdsConfig, *, model: str, truth: np.ndarray | None = None,
            progress: bool = False) -> dict[str, Any]:
    """The LDS report from the plan's trained subsets; `truth` (bool [queries, documents]:
    the documents stating each query's fact) is scored like a method.

    Raises:
        ValueError: a subset is not trained yet.
    """
    from tqdm.auto import tqdm

    from sweep.run import finished
    from workbench.models.loader import load
    from workbench.world.subset import DROPPED_FILE

    members = plan.members()
    missing = [m.name for m in members if not finished(plan, m)]
    if missing:
        raise ValueError(f"{len(missing)} subset(s) of {plan.root} are not trained "
                         f"({missing[0]}, ...); run `workbench attribute lds` again")
    subsets = list(dict.fromkeys(m.drop for m in members))  # each with one member per seed
    seeds = sorted({m.seed for m in members})
    kept = np.ones((len(subsets), n_docs), dtype=bool)
    by_seed = np.zeros((len(seeds), len(subsets), len(qs)))
    for m in tqdm(members, desc="subsets", disable=not progress, leave=False):
        i = subsets.index(m.drop)
        kept[i, np.load(plan.world_dir(m.corpus_id) / DROPPED_FILE)] = False
        by_seed[seeds.index(m.seed), i] = query_losses(load(str(plan.run_dir(m)),
                                                            device="cpu"), qs)
    loss = by_seed.mean(0)
    def scored(s: np.ndarray) -> dict[str, Any]:
        return {**lds(s, kept, loss), "ci95": bootstrap(s, kept, loss, cfg.n_boot, cfg.seed)}

    out = {"schema": SCHEMA, "model": model, "config": asdict(cfg),
           "queries": [q.name for q in qs], "subsets": subsets, "seeds": seeds,
           "kept_share": float(kept.mean()), "loss": loss.tolist(),
           "loss_by_seed": by_seed.tolist(),
           "methods": {name: scored(s) for name, s in scores.items()}}
    if truth is not None:
        out["truth"] = {**scored(truth.astype(np.float64)),
                        "stating": [int(t.sum()) for t in truth]}
    return out


def summary(result: dict[str, Any]) -> str:
    """LDS per method with its interval (and the truth's, when reported)."""
    def line(name: str, m: dict[str, Any], note: str = "") -> str:
        lo, hi = m["ci95"]
        mean = "-" if m["mean"] is None else f"{m['mean']:+.3f}"
        return f"  {name:9s} {mean}  (95% interval {lo:+.3f} .. {hi:+.3f}{note})"

    seeds = result.get("seeds", [None])
    per = f" x {len(seeds)} training seeds (losses averaged)" if len(seeds) > 1 else ""
    lines = [f"LDS over {len(result['subsets'])} random subsets{per} (kept "
             f"{result['kept_share']:.2f} of the documents), {len(result['queries'])} queries"]
    lines += [line(name, m) for name, m in result["methods"].items()]
    if "truth" in result:
        lines.append(line("truth", result["truth"],
                          "; the documents stating each fact, scored 1"))
    return "\n".join(lines)


def plan_lds(run: str | os.PathLike[str], corpus: str | os.PathLike[str],
             out: str | os.PathLike[str], cfg: LdsConfig, *, overwrite: bool = False) -> Plan:
    """Plan the subsets under `out`, with the run's corpus as the plan's world."""
    from attribution.verify import _link_tree
    from sweep.plan import load_plan, plan_sweep

    outcome = plan_sweep(lds_spec(run, corpus, cfg), out, overwrite=overwrite)
    plan = load_plan(outcome.plan.root)
    world = plan.world_dir("world")
    if not (world / "corpus.json").is_file():
        _link_tree(Path(corpus), world)
    return plan

"""Circuit discovery on a task: score every node and edge of the graph, prune to a circuit,
and score the scores against the truth of exact patching.

Methods (`METHODS`):

- `exact`: activation patching of every node and path patching of every edge (one clean
  run per node or edge with its corrupted value, `circuits.edges.patched_metric`): the
  ground truth, one forward pass per edge;
- `attribution`: attribution patching of nodes (first order; a node's score is the sum of
  its EAP edge scores);
- `eap`: edge attribution patching (Syed et al. 2023);
- `eap-ig`: EAP with integrated gradients over `ig_steps` points (Hanna et al. 2024).

Every score is the mean change of the task's metric over pairs when the node or edge is
patched, divided by the task's total effect (metric on corrupted minus on clean prompts): an
edge that carries all of the effect scores 1. A node or edge is in the *truth* when its exact
score is at least `truth_fraction` in size; `recovery` gives each method's AUROC and AUPRC
against it. `faithfulness_curve` keeps the top-k edges by |score|, patches every other edge
from the corrupted run, and reports the fraction of the metric recovered (1 = the clean
model, 0 = the corrupted), with its area (CPR; and CMD, the area between it and 1, as in the
MIB benchmark) over the fraction of edges kept. `acdc` prunes greedily with exact patching
(Conmy et al. 2023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from circuits.edges import edge_attribution, node_scores, patched_metric, writer_outputs
from circuits.graph import Graph

if TYPE_CHECKING:
    from circuits.tasks import Task
    from workbench.models import Model

METHODS = ("exact", "attribution", "eap", "eap-ig")
EDGE_METHODS = ("exact", "eap", "eap-ig")
PASS_BYTES = 2**28  # the correction tensors of one patched pass (float32)
ACDC_MAX_EDGES = 5000  # greedy pruning runs one pass per edge


@dataclass(frozen=True)
class Effect:
    """The task's metric (mean over pairs) on clean and corrupted prompts."""

    clean: float
    corrupt: float

    @property
    def total(self) -> float:
        return self.corrupt - self.clean


@dataclass(frozen=True)
class Scores:
    """A method's normalised node scores (`[writer]`) and edge scores (`[edge]`, the graph's
    `edge_index()` order; None for a node method)."""

    method: str
    nodes: Float[Tensor, " writer"]
    edges: Float[Tensor, " edge"] | None


def _chunks(task: Task, batch_pairs: int) -> list[Task]:
    return [task.subset(slice(i, i + batch_pairs)) for i in range(0, task.n_pairs, batch_pairs)]


@torch.no_grad()
def task_effect(model: Model, task: Task, batch_pairs: int = 64) -> Effect:
    """The metric on clean and on corrupted prompts.

    Raises:
        ValueError: the two are equal (nothing to attribute).
    """
    device = next(model.parameters()).device
    clean = corrupt = 0.0
    for part in _chunks(task, batch_pairs):
        metric = part.metric()
        clean += float(metric(model(part.clean.to(device))).sum())
        corrupt += float(metric(model(part.corrupt.to(device))).sum())
    effect = Effect(clean / task.n_pairs, corrupt / task.n_pairs)
    if abs(effect.total) < 1e-6 * max(1.0, abs(effect.clean)):
        raise ValueError(f"task {task.name!r}: the metric is {effect.clean:.4g} on clean and on "
                         "corrupted prompts alike, so there is no effect to attribute; pick "
                         "prompts the model tells apart")
    return effect


@torch.no_grad()
def corrupt_outputs(model: Model, graph: Graph, task: Task, batch_pairs: int = 64
                    ) -> list[Tensor]:
    """Every writer's output on each chunk of `batch_pairs` corrupted prompts: what the
    patched passes of `patched_effects` deliver, computed once for a series of them."""
    device = next(model.parameters()).device
    return [writer_outputs(model, graph, part.corrupt.to(device))
            for part in _chunks(task, batch_pairs)]


def patched_effects(model: Model, graph: Graph, task: Task,
                    masks: Bool[Tensor, "copy writer reader"], batch_pairs: int = 64,
                    progress: bool = False, desc: str = "patching",
                    outputs: list[Tensor] | None = None) -> Float[Tensor, " copy"]:
    """The mean metric over pairs with each copy's edges patched (as many copies per pass
    as keep the pass under `PASS_BYTES`); `outputs`: the chunks' `corrupt_outputs`, when
    already computed."""
    device = next(model.parameters()).device
    total = torch.zeros(masks.shape[0])
    parts = _chunks(task, batch_pairs)
    outputs = outputs or corrupt_outputs(model, graph, task, batch_pairs)
    width = int(task.clean.shape[1])
    per_copy = 4 * min(batch_pairs, task.n_pairs) * width * graph.n_writers * model.cfg.d_model
    step = max(1, PASS_BYTES // max(per_copy, 1))
    bar = tqdm(total=masks.shape[0] * len(parts), desc=desc, disable=not progress, leave=False)
    for part, corrupt_out in zip(parts, outputs):
        clean = part.clean.to(device)
        metric = part.metric(gathered=True)
        for lo in range(0, masks.shape[0], step):
            chunk = masks[lo:lo + step]
            total[lo:lo + step] += patched_metric(model, graph, clean, corrupt_out, chunk,
                                                  metric, part.readout).sum(1).cpu()
            bar.update(len(chunk))
    bar.close()
    return total / task.n_pairs


def edge_masks(graph: Graph) -> Bool[Tensor, "edge writer reader"]:
    """One mask per edge, patching that edge alone."""
    w, r = graph.edge_index()
    masks = torch.zeros(len(w), graph.n_writers, graph.n_readers, dtype=torch.bool)
    masks[torch.arange(len(w)), w, r] = True
    return masks


def node_masks(graph: Graph) -> Bool[Tensor, "writer writer reader"]:
    """One mask per writer, patching all of its edges (activation patching of the node)."""
    masks = torch.zeros(graph.n_writers, graph.n_writers, graph.n_readers, dtype=torch.bool)
    for i in range(graph.n_writers):
        masks[i, i] = graph.edges[i]
    return masks


def exact_scores(model: Model, graph: Graph, task: Task, effect: Effect,
                 batch_pairs: int = 64, progress: bool = False) -> Scores:
    """Activation patching of every node and path patching of every edge, normalised."""
    outputs = corrupt_outputs(model, graph, task, batch_pairs)
    nodes = patched_effects(model, graph, task, node_masks(graph), batch_pairs, progress,
                            "exact nodes", outputs)
    edges = patched_effects(model, graph, task, edge_masks(graph), batch_pairs, progress,
                            "exact edges", outputs)
    return Scores("exact", (nodes - effect.clean) / effect.total,
                  (edges - effect.clean) / effect.total)


def attributed_scores(model: Model, graph: Graph, task: Task, effect: Effect, method: str,
                      ig_steps: int = 5, batch_pairs: int = 64) -> Scores:
    """`attribution`, `eap` or `eap-ig` scores, normalised."""
    if method not in ("attribution", "eap", "eap-ig"):
        raise ValueError(f"method={method!r} is not a gradient method")
    device = next(model.parameters()).device
    total = torch.zeros(graph.n_writers, graph.n_readers)
    for part in _chunks(task, batch_pairs):
        total += edge_attribution(model, graph, part.clean.to(device), part.corrupt.to(device),
                                  part.metric(gathered=True), ig_steps if method == "eap-ig"
                                  else 0, part.readout)
    matrix = total / task.n_pairs / effect.total
    edges = None if method == "attribution" else graph.edge_values(matrix)
    return Scores(method, node_scores(matrix), edges)


def discover(model: Model, graph: Graph, task: Task, effect: Effect, method: str,
             ig_steps: int = 5, batch_pairs: int = 64, progress: bool = False) -> Scores:
    """The scores of `method` (`METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "exact":
        return exact_scores(model, graph, task, effect, batch_pairs, progress)
    return attributed_scores(model, graph, task, effect, method, ig_steps, batch_pairs)


def truth_mask(exact: Tensor, fraction: float) -> np.ndarray:
    """Which exact scores are at least `fraction` of the total effect in size."""
    return (exact.abs() >= fraction).numpy()


def recovery(scores: Tensor, exact: Tensor, fraction: float) -> dict[str, Any]:
    """AUROC and AUPRC of |scores| against the truth (exact |score| >= `fraction`), the
    Pearson correlation of the signed scores with the exact ones, and the truth's size."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    truth = truth_mask(exact, fraction)
    out: dict[str, Any] = {"n_true": int(truth.sum()), "n": int(len(truth)),
                           "auroc": None, "auprc": None}
    if 0 < truth.sum() < len(truth):
        mag = scores.abs().numpy()
        out["auroc"] = float(roc_auc_score(truth, mag))
        out["auprc"] = float(average_precision_score(truth, mag))
    both = torch.stack([scores.float(), exact.float()])
    out["pearson"] = float(torch.corrcoef(both)[0, 1]) if len(scores) > 1 else None
    return out


def curve_sizes(n_edges: int, top_fraction: float = 0.05) -> list[int]:
    """Circuit sizes (edges kept) the faithfulness curve is measured at: on a graph of at most
    1,000 edges every size up to twice the top fraction and 40 geometric and linear steps
    beyond; on a larger one (GPT-2 small: 32,491 edges, a pass costs seconds) 10 geometric
    and 10 linear steps; always 0, all, and the top `top_fraction`."""
    k_top = top_k(n_edges, top_fraction)
    small = n_edges <= 1000
    points = 40 if small else 20
    sizes = set(range(min(n_edges, 2 * k_top) + 1)) if small else set()
    geo = np.round(np.geomspace(1, n_edges, points // 2)).astype(int)
    lin = np.round(np.linspace(0, n_edges, points // 2)).astype(int)
    sizes |= set(geo.tolist()) | set(lin.tolist()) | {0, n_edges, k_top}
    return sorted(sizes)


def top_k(n_edges: int, fraction: float) -> int:
    """The number of edges in the top `fraction` (at least one)."""
    return max(1, math.ceil(fraction * n_edges))


def kept_masks(graph: Graph, ranking: Tensor, sizes: list[int]) -> Bool[Tensor, "size w r"]:
    """For each size k, the mask patching every edge but the top k of `ranking` (edge
    indices, best first)."""
    w, r = graph.edge_index()
    masks = graph.edges.unsqueeze(0).repeat(len(sizes), 1, 1)
    for i, k in enumerate(sizes):
        keep = ranking[:k]
        masks[i, w[keep], r[keep]] = False
    return masks


def faithfulness_curve(model: Model, graph: Graph, task: Task, effect: Effect,
                       edge_scores: Tensor, top_fraction: float = 0.05,
                       batch_pairs: int = 64, progress: bool = False) -> dict[str, Any]:
    """The metric recovered by the top-k edges (by |score|) with every other edge patched,
    over circuit sizes; CPR and CMD (areas over the fraction of edges kept), the smallest
    circuit recovering 90 % (the first size on the grid that does, narrowed by bisection
    down from the last size that does not, to one edge or 0.5 % of the graph), and what the
    top `top_fraction` recovers."""
    sizes = curve_sizes(graph.n_edges, top_fraction)
    ranking = edge_scores.abs().argsort(descending=True, stable=True)
    outputs = corrupt_outputs(model, graph, task, batch_pairs)

    def measure(ks: list[int]) -> list[float]:
        values = patched_effects(model, graph, task, kept_masks(graph, ranking, ks),
                                 batch_pairs, progress, "faithfulness", outputs)
        return ((values - effect.corrupt) / (effect.clean - effect.corrupt)).tolist()

    recovered = dict(zip(sizes, measure(sizes)))
    first = next((k for k in sizes if recovered[k] >= 0.9), None)
    if first is not None and first > 0:  # bisect between the grid's last miss and its hit
        below = max(k for k in sizes if k < first)
        while first - below > max(1, graph.n_edges // 200):  # to 0.5 % of the graph
            mid = (below + first) // 2
            recovered[mid] = measure([mid])[0]
            below, first = (below, mid) if recovered[mid] >= 0.9 else (mid, first)
    sizes = sorted(recovered)
    x = np.array(sizes) / graph.n_edges
    y = np.array([recovered[k] for k in sizes])
    k_top = top_k(graph.n_edges, top_fraction)
    at_90 = next((k for k in sizes if recovered[k] >= 0.9), None)
    return {
        "sizes": sizes, "recovered": y.tolist(),
        "cpr": float(np.trapezoid(y, x)), "cmd": float(np.trapezoid(np.abs(1 - y), x)),
        "top_fraction": top_fraction, "top_k": k_top,
        "top_recovered": recovered[k_top],
        "smallest_90": at_90,
        "smallest_90_fraction": None if at_90 is None else at_90 / graph.n_edges,
    }


def acdc(model: Model, graph: Graph, task: Task, effect: Effect, threshold: float,
         batch_pairs: int = 64, progress: bool = False) -> Bool[Tensor, " edge"]:
    """Greedy ACDC: from the logits back, patch each edge (readers last to first, writers
    last to first) and leave it patched when the metric moves by less than `threshold` of
    the total effect; the edges left unpatched are the circuit."""
    if graph.n_edges > ACDC_MAX_EDGES:
        raise ValueError(f"--prune acdc runs one pass per edge; this graph has "
                         f"{graph.n_edges} (more than {ACDC_MAX_EDGES}); use --top-k or "
                         "--threshold with eap-ig")
    w, r = graph.edge_index()
    patched = torch.zeros(graph.n_writers, graph.n_readers, dtype=torch.bool)
    current = effect.clean
    order = sorted(range(graph.n_edges), key=lambda e: (-int(r[e]), -int(w[e])))
    outputs = corrupt_outputs(model, graph, task, batch_pairs)
    for e in tqdm(order, desc="acdc", disable=not progress, leave=False):
        trial = patched.clone()
        trial[w[e], r[e]] = True
        value = float(patched_effects(model, graph, task, trial[None], batch_pairs,
                                      outputs=outputs)[0])
        if abs(value - current) < threshold * abs(effect.total):
            patched, current = trial, value
    return ~graph.edge_values(patched)


def select(scores: Tensor, top_k_edges: int | None = None, threshold: float | None = None
           ) -> Bool[Tensor, " edge"]:
    """The circuit: the `top_k_edges` best edges by |score|, or those with |score| >=
    `threshold` (a fraction of the total effect)."""
    if (top_k_edges is None) == (threshold is None):
        raise ValueError("select a circuit by top_k or by threshold, not both")
    keep = torch.zeros(len(scores), dtype=torch.bool)
    if top_k_edges is not None:
        keep[scores.abs().argsort(descending=True, stable=True)[:top_k_edges]] = True
    else:
        keep = scores.abs() >= threshold
    return keep



"""Circuit discovery as an analysis (`workbench circuit`): for each task, every method's node
and edge scores, their recovery of the exact-patching truth, the faithfulness curve, the
circuit pruned from the first method's scores, and, for `induction`, whether that circuit holds
the heads and K-composition that `workbench induction` names. Written as
`workbench.circuit/1` JSON with plotly figures; the shape of every analysis
(`workbench.analysis`):

    from circuits import circuit
    report = circuit.run(model, corpus, circuit.Config(tasks=("facts",)))
    report = circuit.from_ref("runs/demo", circuit.Config(checkpoints="all"))
    report["tasks"]["facts"]["methods"]["eap-ig"]["recovery"]["edges"]["auroc"]

With `compare` (other models of the same shape, e.g. other training seeds) each one's circuit
is found the same way and the report gives the Jaccard similarity of the edge sets per task
(as named, and with heads' numbers dropped: seeds number their heads in any order);
with `checkpoints`, recovery and circuit size at every checkpoint of the run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from circuits.circuit_figures import FIGURES as FIGURES
from circuits.circuit_summary import summary as summary
from circuits.discovery import (
    ACDC_MAX_EDGES,
    EDGE_METHODS,
    METHODS,
    Effect,
    Scores,
    acdc,
    discover,
    faithfulness_curve,
    kept_masks,
    patched_effects,
    recovery,
    select,
    task_effect,
)
from circuits.graph import Graph, check_graph, graph_for
from circuits.tasks import TASKS, Task, build_task
from workbench.analysis import Report
from workbench.models.arch import require

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.models.devices import Placement
    from workbench.models.refs import CheckpointRef, ModelRef
    from workbench.world.loader import Corpus

KIND = "circuit"
SCHEMA = "workbench.circuit/1"
TRUTH = ("auto", "always", "never")
EXACT_MAX_EDGES = 5000  # `truth="auto"`: exact patching (one pass per edge) up to this size


@dataclass(frozen=True)
class CircuitConfig:
    """Settings of a circuit-discovery analysis.

    Attributes:
        tasks: world tasks (`circuits.tasks.TASKS`).
        methods: scoring methods; the first one's scores give the circuit (`exact` is the
            truth every other method is scored against, computed whenever `truth` allows).
        ig_steps: integrated-gradient steps of `eap-ig`.
        n_pairs: clean/corrupted pairs per task; seed: their seed.
        truth: exact patching of every node and edge: `always`, `never`, or `auto` (for
            graphs of at most `EXACT_MAX_EDGES` edges).
        truth_fraction: a node or edge is in the truth when its exact effect is at least
            this fraction of the task's total effect.
        top_fraction: the faithfulness curve reports what this top fraction of edges keeps.
        top_k / threshold / acdc: how the circuit is pruned (at most one): the top k edges,
            the edges whose |score| is at least `threshold` of the total effect, or greedy
            ACDC with exact patching at this threshold; none: the smallest top-k that
            recovers 90 % of the metric.
        checkpoints: `all` or steps: recovery and circuit size at each of the run's
            checkpoints (`method` = the first method).
        batch_pairs: pairs per forward pass.
    """

    tasks: tuple[str, ...] = ("induction", "facts", "agreement")
    methods: tuple[str, ...] = ("eap-ig", "eap", "attribution")
    ig_steps: int = 5
    n_pairs: int = 64
    seed: int = 0
    truth: str = "auto"
    truth_fraction: float = 0.02
    top_fraction: float = 0.05
    top_k: int | None = None
    threshold: float | None = None
    acdc: float | None = None
    checkpoints: str | None = None
    batch_pairs: int = 64

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"tasks={list(self.tasks)}: unknown task {bad[0] if bad else ''!r}"
                             f"; choose from {', '.join(TASKS)}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods={list(self.methods)}: unknown method "
                             f"{bad[0] if bad else ''!r}; choose from {', '.join(METHODS)}")
        if self.truth not in TRUTH:
            raise ValueError(f"truth={self.truth!r}; choose one of {', '.join(TRUTH)}")
        if self.ig_steps < 1 or self.n_pairs < 1 or self.batch_pairs < 1:
            raise ValueError(f"ig_steps={self.ig_steps}, n_pairs={self.n_pairs} and "
                             f"batch_pairs={self.batch_pairs} must be >= 1")
        for name in ("truth_fraction", "top_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)}; pass a fraction in (0, 1]")
        rules = [x for x in (self.top_k, self.threshold, self.acdc) if x is not None]
        if len(rules) > 1:
            raise ValueError("top_k, threshold and acdc each prune the circuit; pass one")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k={self.top_k}; pass at least 1 edge")
        if self.methods[0] == "attribution" and (self.top_k or self.threshold):
            raise ValueError("methods: `attribution` scores nodes only; put an edge method "
                             f"({', '.join(EDGE_METHODS)}) first to prune edges")


def _score_dict(s: Scores, seconds: float) -> dict[str, Any]:
    return {"nodes": s.nodes.tolist(), "edges": None if s.edges is None else s.edges.tolist(),
            "seconds": seconds}


def _circuit(model: Model, graph: Graph, task: Task, effect: Effect, scores: Scores,
             curve: dict[str, Any] | None, cfg: CircuitConfig, progress: bool
             ) -> dict[str, Any]:
    """The pruned circuit: its edges and nodes, and the metric it recovers (`method`: whose
    scores ranked the edges, `acdc` for greedy pruning, which ranks none)."""
    assert scores.edges is not None
    if cfg.acdc is not None:
        keep, rule = acdc(model, graph, task, effect, cfg.acdc, cfg.batch_pairs, progress), \
            f"acdc {cfg.acdc}"
    elif cfg.threshold is not None:
        keep, rule = select(scores.edges, threshold=cfg.threshold), f"|score| >= {cfg.threshold}"
    else:
        k = cfg.top_k
        rule = f"top {k}"
        if k is None:
            k = curve["smallest_90"] if curve and curve["smallest_90"] is not None \
                else graph.n_edges
            rule = "smallest top-k recovering 90 %"
        keep = select(scores.edges, top_k_edges=k)
    ranking = torch.cat([keep.nonzero()[:, 0], (~keep).nonzero()[:, 0]])
    value = float(patched_effects(model, graph, task,
                                  kept_masks(graph, ranking, [int(keep.sum())]),
                                  cfg.batch_pairs)[0])
    names = graph.edge_names()
    edges = [names[i] for i in keep.nonzero()[:, 0].tolist()]
    method = "acdc" if cfg.acdc is not None else scores.method
    return {"rule": rule, "method": method, "n_edges": len(edges), "edges": edges,
            "nodes": circuit_nodes(edges),
            "recovered": (value - effect.corrupt) / (effect.clean - effect.corrupt)}


def circuit_nodes(edges: Sequence[str]) -> list[str]:
    """The nodes an edge list touches (readers named by their head: `a1.h0<k>` -> `a1.h0`)."""
    out: list[str] = []
    for e in edges:
        for n in e.split("->"):
            n = n.split("<")[0]
            if n not in out:
                out.append(n)
    return out


def task_report(model: Model, graph: Graph, task: Task, cfg: CircuitConfig, exact: bool,
                progress: bool) -> dict[str, Any]:
    """One task: its effect, every method's scores and recovery, the circuit."""
    effect = task_effect(model, task, cfg.batch_pairs)
    out: dict[str, Any] = {
        "description": task.description, "metric": task.kind, "n_pairs": task.n_pairs,
        "clean": effect.clean, "corrupt": effect.corrupt, "total": effect.total,
        "truth_fraction": cfg.truth_fraction, "methods": {},
    }
    truth = None
    methods = list(dict.fromkeys(cfg.methods + (("exact",) if exact else ())))
    for method in methods:
        t0 = time.perf_counter()
        s = discover(model, graph, task, effect, method, cfg.ig_steps, cfg.batch_pairs,
                     progress)
        out["methods"][method] = _score_dict(s, time.perf_counter() - t0)
        if method == "exact":
            truth = s
    for entry in out["methods"].values():
        if truth is not None:
            entry["recovery"] = {"nodes": recovery(torch.tensor(entry["nodes"]), truth.nodes,
                                                   cfg.truth_fraction)}
            if entry["edges"] is not None:
                entry["recovery"]["edges"] = recovery(torch.tensor(entry["edges"]),
                                                      truth.edges, cfg.truth_fraction)
        if entry["edges"] is not None:
            entry["faithfulness"] = faithfulness_curve(
                model, graph, task, effect, torch.tensor(entry["edges"]), cfg.top_fraction,
                cfg.batch_pairs, progress)
    first = cfg.methods[0]
    if first in EDGE_METHODS:
        entry = out["methods"][first]
        scores = Scores(first, torch.tensor(entry["nodes"]), torch.tensor(entry["edges"]))
        out["circuit"] = _circuit(model, graph, task, effect, scores,
                                  entry.get("faithfulness"), cfg, progress)
    return out


def induction_check(model: Model, graph: Graph, circuit: dict[str, Any], progress: bool
                    ) -> dict[str, Any]:
    """Whether the induction circuit holds the induction and previous-token heads and the
    K-composition `workbench induction` names (by direct and by all-path patching of keys)."""
    from circuits import induction

    rep = induction.run(model, None, induction.InductionConfig(), progress=progress)
    nodes = set(circuit["nodes"])
    edges = set(circuit["edges"])

    def node(head: str) -> str:  # L2H0 -> a2.h0
        layer, h = head[1:].split("H")
        return f"a{layer}.h{h}"

    out: dict[str, Any] = {"induction_heads": {}, "previous_token_heads": {}, "pairs": []}
    for h in rep["induction_heads"]:
        out["induction_heads"][h] = node(h) in nodes
    for h in rep["previous_token_heads"]:
        out["previous_token_heads"][h] = node(h) in nodes
    group = graph.n_heads // graph.n_kv
    for p in rep["pairs"]:
        layer, head = (int(x) for x in p["induction_head"][1:].split("H"))
        target = graph.qkv_name(layer, "k", head // group)  # its key head's input
        direct = f"{node(p['k_path_source'])}->{target}"
        src_all = node(p["k_path_all_source"])
        out["pairs"].append({
            "induction_head": p["induction_head"],
            "k_path_source": p["k_path_source"], "k_path": p["k_path"],
            "direct_edge": direct, "direct_edge_in_circuit": direct in edges,
            "k_path_all_source": p["k_path_all_source"], "k_path_all": p["k_path_all"],
            "path_in_circuit": _reaches(edges, src_all, target, group),
        })
    return out


def _reaches(edges: set[str], source: str, target: str, group: int = 1) -> bool:
    """Whether circuit edges lead from the writer `source` to the reader `target` (a key or
    value head `a1.g0` feeds the `group` query heads it serves)."""
    nxt: dict[str, set[str]] = {}
    for e in edges:
        w, r = e.split("->")
        nxt.setdefault(w, set()).add(r)
    seen, todo = set(), [source]
    while todo:
        w = todo.pop()
        for r in nxt.get(w, ()):
            if r == target:
                return True
            base = r.split("<")[0]
            layer, _, unit = base.partition(".")
            heads = ([f"{layer}.h{int(unit[1:]) * group + i}" for i in range(group)]
                     if unit.startswith("g") else [base])
            for head in heads:
                if head not in seen:
                    seen.add(head)
                    todo.append(head)
    return False


def _exact_allowed(cfg: CircuitConfig, graph: Graph) -> bool:
    return cfg.truth == "always" or (cfg.truth == "auto" and graph.n_edges <= EXACT_MAX_EDGES)


def model_report(model: Model, corpus: Corpus | None, cfg: CircuitConfig, progress: bool,
                 check_induction: bool = True) -> dict[str, Any]:
    """Every task of one model (with `check_induction`, the induction circuit against
    `workbench induction`'s heads)."""
    require(model, "attention", "circuit discovery")
    graph = graph_for(model)
    tasks = {name: build_task(name, model, corpus, cfg.n_pairs, cfg.seed) for name in cfg.tasks}
    if cfg.acdc is not None and graph.n_edges > ACDC_MAX_EDGES:
        raise ValueError(f"--acdc runs one pass per edge; this model's graph has "
                         f"{graph.n_edges} edges (more than {ACDC_MAX_EDGES}); use --top-k or "
                         "--threshold")
    if cfg.top_k is not None and cfg.top_k > graph.n_edges:
        raise ValueError(f"--top-k {cfg.top_k} is more than the graph's {graph.n_edges} edges; "
                         f"pass at most {graph.n_edges}")
    first = next(iter(tasks.values()))
    check_graph(model, graph, first.clean[:4].to(next(model.parameters()).device))
    exact = _exact_allowed(cfg, graph)
    out: dict[str, Any] = {"tasks": {}}
    for name, task in tasks.items():
        out["tasks"][name] = task_report(model, graph, task, cfg, exact, progress)
        if check_induction and name == "induction" and "circuit" in out["tasks"][name]:
            out["tasks"][name]["induction_check"] = induction_check(
                model, graph, out["tasks"][name]["circuit"], progress)
    return out


def _graph_dict(graph: Graph) -> dict[str, Any]:
    return {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "n_kv": graph.n_kv,
            "parallel": graph.parallel, "writers": list(graph.writers),
            "readers": list(graph.readers), "edges": graph.edge_names(),
            "n_edges": graph.n_edges}


def jaccard(a: Iterable[str], b: Iterable[str]) -> float | None:
    """|a & b| / |a | b| (None when both are empty)."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else None


def _dynamics(checkpoints: Iterable[tuple[CheckpointRef, Model]], corpus: Corpus | None,
              cfg: CircuitConfig, progress: bool) -> list[dict[str, Any]]:
    """Per checkpoint and task: the first method's recovery, CPR and circuit size."""
    rows = []
    for ck, m in tqdm(checkpoints, desc="checkpoints", disable=not progress):
        row: dict[str, Any] = {"step": ck.step, "tasks": {}}
        rep = model_report(m, corpus, CircuitConfig(**{**asdict(cfg), "checkpoints": None}),
                           progress=False, check_induction=False)
        for name, t in rep["tasks"].items():
            entry = t["methods"][cfg.methods[0]]
            row["tasks"][name] = {
                "total": t["total"],
                "edge_auroc": entry.get("recovery", {}).get("edges", {}).get("auroc"),
                "node_auroc": entry.get("recovery", {}).get("nodes", {}).get("auroc"),
                "cpr": entry.get("faithfulness", {}).get("cpr"),
                "circuit_edges": t.get("circuit", {}).get("n_edges"),
                "circuit": t.get("circuit", {}).get("edges"),
            }
        rows.append(row)
    return rows


def run(model: Model, corpus: Corpus | None = None, cfg: CircuitConfig | None = None, *,
        ref: str | ModelRef | None = None,
        checkpoints: Iterable[tuple[CheckpointRef, Model]] | None = None,
        compare: Sequence[tuple[str, Model]] = (), progress: bool = True) -> Report:
    """Circuit discovery on a loaded model (`workbench.circuit/1`).

    Args:
        model: the model; corpus: the world corpus the tasks are built from (`induction`
            needs none).
        cfg: the settings (default `Config()`).
        ref: the reference recorded in the report.
        checkpoints: the run's loaded checkpoints (dynamics over training).
        compare: (name, model) of other models of the same shape (other training seeds):
            their circuits and the Jaccard similarity of edge sets with this one's.
    """
    cfg = cfg or CircuitConfig()
    graph = graph_for(model)
    for name, m in compare:
        if graph_for(m) != graph:
            raise ValueError(f"--compare {name}: its graph ({graph_for(m).n_layers} layers x "
                             f"{graph_for(m).n_heads} heads) is not this model's; compare "
                             "models of one shape (other training seeds)")
    body = model_report(model, corpus, cfg, progress)
    report: Report = {"schema": SCHEMA,
                      "model": str(ref) if ref is not None else model.cfg.model_name,
                      "config": asdict(cfg), "graph": _graph_dict(graph), **body}
    if compare:
        report["compare"] = _compare(body, compare, corpus, cfg, progress)
    if checkpoints is not None:
        report["dynamics"] = _dynamics(checkpoints, corpus, cfg, progress)
    return report


def _compare(body: dict[str, Any], compare: Sequence[tuple[str, Model]],
             corpus: Corpus | None, cfg: CircuitConfig, progress: bool) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for name, m in compare:
        models[name] = model_report(m, corpus, cfg, progress)["tasks"]
    jac: dict[str, Any] = {}
    by_layer: dict[str, Any] = {}
    for task, t in body["tasks"].items():
        sets = {"this": t.get("circuit", {}).get("edges", [])}
        sets |= {n: r[task].get("circuit", {}).get("edges", []) for n, r in models.items()}
        names = list(sets)
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
        jac[task] = {f"{a} | {b}": jaccard(sets[a], sets[b]) for a, b in pairs}
        by_layer[task] = {f"{a} | {b}": jaccard(map(unlabelled, sets[a]),
                                                map(unlabelled, sets[b])) for a, b in pairs}
    return {"models": models, "jaccard": jac, "jaccard_unlabelled": by_layer}


def unlabelled(edge: str) -> str:
    """An edge with its heads' numbers dropped (`a0.h1->a2.h0<k>` -> `a0.h*->a2.h*<k>`):
    training seeds number their heads in any order, so circuits are compared this way too.

    >>> unlabelled("a0.h1->a2.g0<k>")
    'a0.h*->a2.h*<k>'
    """
    return re.sub(r"\.[hg]\d+", ".h*", edge)


def from_ref(ref: str | Path | ModelRef, cfg: CircuitConfig | None = None, *,
             corpus: str | Path | None = None, device: str | Placement = "cpu",
             progress: bool = True, compare: Sequence[str] = ()) -> Report:
    """Load the model `ref` (and the `compare` models, and with `cfg.checkpoints` the run's
    checkpoints) and the corpus (default: the run's), then `run`."""
    from workbench.models.loader import placement_of_model
    from workbench.models.refs import ModelRef

    cfg = cfg or CircuitConfig()
    ref = ModelRef.of(ref)
    if cfg.checkpoints:
        ref.select(cfg.checkpoints)
    needs_corpus = [t for t in cfg.tasks if t != "induction"]
    loaded = ref.load_corpus(corpus) if needs_corpus or corpus is not None else None
    if needs_corpus and loaded is None:
        raise ValueError(f"task(s) {', '.join(needs_corpus)} are built from a world corpus; "
                         f"pass --corpus (a `workbench world build` directory in the model's "
                         "tokenizer), or --task induction")
    others = [ModelRef.of(c) for c in compare]
    for o in others:
        o.check_exists()
    model = ref.load(device)
    history = (ref.load_checkpoints(cfg.checkpoints, placement_of_model(model))
               if cfg.checkpoints else None)
    pairs = [(o.text, o.load(device)) for o in others]
    return run(model, loaded, cfg, ref=ref, checkpoints=history, compare=pairs,
               progress=progress)


Config = CircuitConfig

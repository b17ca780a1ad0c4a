"""Probes at every layer: every task, with control tasks, baselines and intervals.

Per task: its rows (`probe.tasks`), k-fold cross-validation over groups (word types or
people: a group is never on both sides), for every fold a probe per layer on the task's
labels and one on its control labels (all trained at once, `probe.fit`), then accuracy,
control accuracy, selectivity and cluster-bootstrap 95 % intervals per layer, the majority
baseline, the best layer and the center of gravity. `summary` says where each kind peaks.
The analysis has the shape of every other (`workbench.analysis`):

    from probe import layers
    report = layers.run(model, corpus, layers.Config(tasks="syntax,facts"))
    report = layers.from_ref("runs/demo", layers.Config(tasks="syntax,facts"))
    write_report(report, report_path("runs/demo", layers.KIND), layers.FIGURES)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from probe.figures import sweep_figure
from probe.fit import ProbeConfig, eigenbasis, fit_predict, preconditioned, standardize
from probe.rows import (
    ProbeRows,
    check_layers,
    fill_memory,
    plan_rows,
    store_config,
    store_rows,
)
from probe.stats import (
    assign_folds,
    bootstrap_ci,
    center_of_gravity,
    control_labels,
    majority_accuracy,
)
from probe.tasks import KINDS, Examples, Task, resolve_tasks, task_examples
from workbench.analysis import FigureMaker, Report
from workbench.models.checks import check_tokenizer

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.models.devices import Placement
    from workbench.models.refs import ModelRef
    from workbench.world.loader import Corpus

log = logging.getLogger(__name__)
KIND = "probe"
SCHEMA = "workbench.probe/1"
FIGURES: dict[str, FigureMaker] = {".fig.json": sweep_figure}


@dataclass(frozen=True)
class LayersConfig:
    """What a sweep probes and how.

    Args:
        tasks: comma-separated suites (`syntax`, `semantics`, `facts`) and task names.
        split: corpus split whose sentences are probed.
        max_tokens: cap on the split's tokens run through the model.
        max_examples: rows per task (a seeded random subset beyond it).
        layers: probe layers (0 = embedding .. n_layers); default all.
        folds: cross-validation folds (one is the test fold, the next the validation fold).
        holdout: `group` (word types / people never on both sides) or `random` rows.
        min_groups: classes with fewer groups cannot be split by group and are dropped.
        min_per_class: classes with fewer rows (after subsampling) are dropped (too few to
            learn from); fewer than two classes left is an error.
        n_boot: bootstrap resamples for the intervals.
        memory_gib: activations above this size go through an `ActivationStore` file.
        batch_size: sequences per forward pass.
        seed: folds, control labels, subsets, bootstrap and probe initialisation.
        probe: the probe's own settings.
    """

    tasks: str = "syntax,semantics,facts"
    split: str = "val"
    max_tokens: int | None = None
    max_examples: int = 20_000
    layers: tuple[int, ...] | None = None
    folds: int = 5
    holdout: str = "group"
    min_groups: int = 3
    min_per_class: int = 10
    n_boot: int = 1000
    memory_gib: float = 2.0
    batch_size: int = 16
    seed: int = 0
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self) -> None:
        if self.folds < 3:
            raise ValueError(f"folds={self.folds}; use at least 3 (test, validation, train)")
        if self.max_examples < 1 or self.n_boot < 1 or self.min_per_class < 1:
            raise ValueError("max_examples, n_boot and min_per_class must be positive")


def select_examples(task: Task, rows: ProbeRows, world: Any, cfg: LayersConfig
                    ) -> tuple[Examples, list[str]]:
    """The task's rows after dropping the classes too small to probe, and subsampling.

    A class is dropped (and named in the second value, the report's `dropped_classes`) when
    it has fewer than `cfg.min_groups` groups (with group holdout it cannot be split), or,
    after subsampling, fewer than `cfg.min_per_class` rows (too few to learn or test: the
    rare cities of a short split); the other classes are probed.

    Raises:
        ValueError: no row, or fewer than two classes left.
    """
    ex = task_examples(task, rows.labels, rows.meta["doc"], rows.words, world)
    dropped = []
    keep = np.ones(len(ex.y), dtype=bool)
    for c in np.unique(ex.y):
        n_groups = len(np.unique(ex.groups[ex.y == c]))
        if cfg.holdout == "group" and n_groups < cfg.min_groups:
            dropped.append(ex.classes[c])
            keep &= ex.y != c
    rng = np.random.default_rng(cfg.seed)
    idx = np.nonzero(keep)[0]
    if len(idx) > cfg.max_examples:
        idx = np.sort(rng.choice(idx, size=cfg.max_examples, replace=False))
    more = ("a larger --max-tokens or another --split" if cfg.max_tokens is not None
            else "another --split: all of this one was read")
    if len(idx) == 0:
        raise ValueError(
            f"task {task.name!r}: no example in split {cfg.split!r} (the first "
            f"{cfg.max_tokens or 'all'} tokens); probe more text ({more})")
    counts = {int(c): int((ex.y[idx] == c).sum()) for c in np.unique(ex.y[idx])}
    small = [c for c, n in counts.items() if n < cfg.min_per_class]
    present = np.array([c for c in counts if c not in small], dtype=np.int64)
    if len(present) < 2:
        named = {ex.classes[c]: n for c, n in counts.items()}
        raise ValueError(
            f"task {task.name!r}: {len(present)} class(es) with at least {cfg.min_per_class} "
            f"examples in split {cfg.split!r} ({named}; those with fewer than "
            f"{cfg.min_per_class} examples are dropped), two are needed; probe more text "
            f"({more}) or lower --min-per-class")
    dropped += [ex.classes[c] for c in small]
    idx = idx[np.isin(ex.y[idx], present)]
    remap = np.full(len(ex.classes), -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    out = Examples(ex.rows[idx], remap[ex.y[idx]], ex.groups[idx],
                   [ex.classes[c] for c in present])
    return out, dropped


def cv_variants(labels: list[np.ndarray], folds: np.ndarray, k: int,
                test_folds: Sequence[int], grid: Sequence[float]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The probes a sweep trains, in (L2, labels, test fold) order: labels `[v, n]`, train,
    validation and test row masks `[v, n]` (test fold f, validation fold f + 1 mod k, the
    rest train) and each variant's L2 `[v]`.

    >>> y, train, val, test, l2 = cv_variants([np.array([0, 1, 0])], np.array([0, 1, 2]), 3,
    ...                                       [0], [0.1, 1.0])
    >>> train.tolist(), l2.tolist()
    ([[False, False, True], [False, False, True]], [0.10000000149011612, 1.0])
    """
    folds_t = torch.from_numpy(folds)
    y = torch.stack([torch.from_numpy(lab) for _ in grid for lab in labels for _ in test_folds])
    test = torch.stack([folds_t == f for _ in grid for _ in labels for f in test_folds])
    val = torch.stack([folds_t == (f + 1) % k for _ in grid for _ in labels for f in test_folds])
    l2 = torch.tensor(grid, dtype=torch.float32).repeat_interleave(len(labels) * len(test_folds))
    return y, ~(test | val), val, test, l2


def probe_task(x: torch.Tensor, ex: Examples, layers: list[int], cfg: LayersConfig
               ) -> dict[str, Any]:
    """Cross-validated task and control probes on activations `x` `[layer, n, d]`.

    Task probes: every fold (test fold f, validation fold f + 1, the rest train) x L2
    strength of `cfg.probe.l2_grid`, all trained at once. For each fold and layer the task
    probe's L2 is the one with the best accuracy on that fold's validation rows; the fold's
    control probe is then trained with that L2 only (selectivity compares equal probes; a
    control probe at an L2 no task probe chose would never be read).
    """
    k = cfg.folds
    n_classes = len(ex.classes)
    grid = cfg.probe.l2_grid
    folds = assign_folds(ex.y, ex.groups, k, cfg.holdout, cfg.seed)
    control = control_labels(ex.y, ex.groups, n_classes, cfg.seed + 7)
    fold_t = torch.from_numpy(folds)
    labels = [torch.from_numpy(ex.y), torch.from_numpy(control)]
    xs = standardize(x)
    y, train, val, _, l2 = cv_variants([ex.y], folds, k, range(k), grid)
    # task and control probes read the same rows: one eigendecomposition for both
    basis = (eigenbasis(xs) if preconditioned(cfg.probe, xs.shape[-1], int(train.any(0).sum()))
             else None)
    logits = fit_predict(xs, y, train, val, n_classes, cfg.probe, l2=l2, basis=basis)
    pred = logits.argmax(-1).cpu().view(len(grid), k, len(layers), -1)
    del logits
    # validation accuracy of each task probe: [grid, fold, layer]
    val_hit = (pred == labels[0]).float() * val[:k, None].float()
    val_acc = val_hit.sum(-1) / val[:k].float().sum(-1).clamp_min(1)[:, None]
    choice = val_acc.argmax(0)  # [fold, layer]: the first (weakest) L2 among ties
    task_pred = pred.permute(1, 2, 0, 3).gather(
        2, choice[:, :, None, None].expand(k, len(layers), 1, pred.shape[-1])).squeeze(2)
    y_c, train_c, val_c, _, _ = cv_variants([control], folds, k, range(k), grid[:1])
    l2_c = torch.tensor(grid, dtype=torch.float32)[choice]  # [fold, layer]
    ctrl_pred = fit_predict(xs, y_c, train_c, val_c, n_classes, cfg.probe, l2=l2_c,
                            basis=basis).argmax(-1).cpu()
    pred = torch.cat([task_pred, ctrl_pred])  # task folds, control folds: [2k, layer, n]
    rows = torch.arange(len(folds))
    # each row is predicted by the probes of its own test fold: [n, layer]
    correct = (pred[fold_t, :, rows] == labels[0][:, None]).numpy().T.astype(np.float64)
    correct_ctrl = (pred[k + fold_t, :, rows] == labels[1][:, None]).numpy().T.astype(np.float64)
    l2_chosen = [[grid[g] for g in fold] for fold in choice.tolist()]  # [fold][layer]
    units = ex.groups if cfg.holdout == "group" else np.arange(len(ex.y))
    ci = bootstrap_ci(np.stack([correct, correct - correct_ctrl]), units, cfg.n_boot, cfg.seed)
    acc, ctrl = correct.mean(1), correct_ctrl.mean(1)
    per_layer = [
        {"layer": layer, "accuracy": round(float(acc[i]), 4),
         "control_accuracy": round(float(ctrl[i]), 4),
         "selectivity": round(float(acc[i] - ctrl[i]), 4),
         "ci": [round(float(v), 4) for v in ci[0, i]],
         "selectivity_ci": [round(float(v), 4) for v in ci[1, i]],
         "l2": [fold[i] for fold in l2_chosen]}
        for i, layer in enumerate(layers)
    ]
    best = int(np.argmax(acc))
    return {
        "layers": per_layer,
        "best_layer": layers[best],
        "best_accuracy": round(float(acc[best]), 4),
        "selectivity_at_best": round(float(acc[best] - ctrl[best]), 4),
        "center_of_gravity": center_of_gravity(acc, layers),
        "majority_baseline": round(majority_accuracy(ex.y, folds), 4),
        "embedding_accuracy": round(float(acc[0]), 4) if layers[0] == 0 else None,
    }


def run(model: Model, corpus: Corpus | None, cfg: LayersConfig | None = None, *,
        ref: str | ModelRef | None = None, acts: str | Path | None = None,
        progress: bool = True) -> Report:
    """Run the sweep on a loaded model and a world corpus; the `workbench.probe/1` report.

    Args:
        model: a TransformerBridge.
        corpus: a world corpus encoded with the model's tokenizer (`workbench.world`).
        ref: the reference recorded in the report (default: the model's name).
        acts: an activation file to read (made now, resumably, when it does not exist and
            the activations exceed `cfg.memory_gib`; None keeps them in memory when small).
    """
    cfg = cfg or LayersConfig()
    if corpus is None:
        raise ValueError("the probes need a world corpus encoded with the model's tokenizer; "
                         "pass --corpus PATH")
    model_ref = str(ref) if ref is not None else model.cfg.model_name
    t0 = time.perf_counter()
    tasks = resolve_tasks(cfg.tasks)
    check_corpus(model, corpus)
    layers = check_layers(list(cfg.layers) if cfg.layers is not None else None,
                          model.cfg.n_layers)
    world = corpus.world()
    if acts is not None and Path(acts).exists():
        rows = store_rows(acts, model.cfg.n_layers, layers, model=model, corpus=corpus,
                          split=cfg.split, max_tokens=cfg.max_tokens)
        source = f"store:{acts}"
    elif acts is not None:  # a file was asked for: make it (resumably), then read it
        rows = _cache_then_read(model, corpus, cfg, acts, model_ref, layers, progress)
        source = f"store:{acts}"
    else:
        rows = plan_rows(model, corpus, cfg.split, cfg.max_tokens, cfg.batch_size)
        source = "memory"
    chosen = {t.name: select_examples(t, rows, world, cfg) for t in tasks}
    needed = np.unique(np.concatenate([ex.rows for ex, _ in chosen.values()]))
    if rows.store is None:
        gib = len(needed) * len(layers) * model.cfg.d_model * 4 / 2**30
        if gib > cfg.memory_gib:
            raise ValueError(
                f"the activations need {gib:.1f} GiB (more than memory_gib="
                f"{cfg.memory_gib}); pass --acts FILE.h5 to stream them through a file, "
                "or lower --max-examples")
        fill_memory(rows, model, needed, layers, progress)
    device = next(model.parameters()).device
    results: dict[str, Any] = {}
    for task in tqdm(tasks, desc="probe tasks", disable=not progress):
        ex, dropped = chosen[task.name]
        x = rows.acts(ex.rows, layers).to(device)
        res = probe_task(x, ex, layers, cfg)
        results[task.name] = {
            "kind": task.kind, "reads": task.reads, "group": task.group,
            "n": int(len(ex.y)), "n_groups": int(len(np.unique(ex.groups))),
            "classes": ex.classes, "dropped_classes": dropped, **res,
        }
    if rows.store is not None:
        rows.store.close()
    report = {
        "schema": SCHEMA, "model": model_ref, "corpus": str(corpus.path), "split": cfg.split,
        "seed": cfg.seed, "probe": cfg.probe.probe, "source": source, "layers": layers,
        "config": _config_record(cfg), "tasks": results,
        "elapsed_s": round(time.perf_counter() - t0, 2),
    }
    report["summary"] = summarize(report)
    return report


def _cache_then_read(model: Model, corpus: Corpus, cfg: LayersConfig, acts: str | Path,
                     model_ref: str, layers: list[int], progress: bool) -> ProbeRows:
    from workbench.cache.store import cache_activations

    acts = Path(acts)
    resume = acts.with_name(acts.name + ".partial").exists()
    cache_activations(model, corpus, store_config(cfg.split, cfg.max_tokens, cfg.batch_size),
                      acts, model_ref=model_ref, resume=resume, progress=progress)
    return store_rows(acts, model.cfg.n_layers, layers, model=model, corpus=corpus,
                      split=cfg.split)


def _config_record(cfg: LayersConfig) -> dict[str, Any]:
    record = asdict(cfg)
    record["layers"] = list(cfg.layers) if cfg.layers is not None else None
    return record


def check_corpus(model: Model, corpus: Corpus) -> None:
    """A world corpus whose tokenizer is the model's (or fail with the fix)."""
    if corpus.kind != "world":
        raise ValueError(
            f"corpus at {corpus.path} is a real-text corpus: it has no labels to probe; pass "
            "--corpus with a world corpus (`workbench world build`)")
    check_tokenizer(model, corpus)


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Where syntax, semantics and facts peak on this model, and whether syntax comes first."""
    by_kind: dict[str, Any] = {}
    for kind in KINDS:
        tasks = {n: t for n, t in report["tasks"].items() if t["kind"] == kind}
        if not tasks:
            continue
        by_kind[kind] = {
            "best_layers": {n: t["best_layer"] for n, t in tasks.items()},
            "center_of_gravity": round(float(np.mean([t["center_of_gravity"]
                                                      for t in tasks.values()])), 3),
            "mean_best_layer": round(float(np.mean([t["best_layer"] for t in tasks.values()])),
                                     3),
            "min_selectivity_at_best": min(t["selectivity_at_best"] for t in tasks.values()),
        }
    lines = [
        f"{kind}: peaks at layers " + ", ".join(f"{n} {b}" for n, b in k["best_layers"].items())
        + f" (mean center of gravity {k['center_of_gravity']:.2f})"
        for kind, k in by_kind.items()
    ]
    verdict: bool | None = None
    if "syntax" in by_kind and len(by_kind) > 1:
        syn = by_kind["syntax"]["center_of_gravity"]
        others = {k: v["center_of_gravity"] for k, v in by_kind.items() if k != "syntax"}
        verdict = all(syn <= v for v in others.values())
        cmp = ", ".join(f"{k} {v:.2f}" for k, v in others.items())
        lines.append(
            f"syntax (center of gravity {syn:.2f}) peaks "
            + ("no later than" if verdict else "LATER than at least one of")
            + f" {cmp}: the account (syntax low, semantics and facts higher) "
            + ("holds" if verdict else "does not hold") + " on this model")
    dropped = [f"{n} ({', '.join(t['dropped_classes'])})" for n, t in report["tasks"].items()
               if t.get("dropped_classes")]
    if dropped:
        cfg = report.get("config", {})
        lines.append(f"classes left out (fewer than {cfg.get('min_groups', '?')} groups or "
                     f"{cfg.get('min_per_class', '?')} examples): " + "; ".join(dropped))
    weak = [n for n, t in report["tasks"].items() if t["selectivity_at_best"] <= 0.1]
    if weak:
        lines.append("selectivity <= 0.1 at the best layer (the probe barely beats its "
                     "control): " + ", ".join(weak))
    return {"by_kind": by_kind, "syntax_no_later": verdict, "text": "\n".join(lines)}


def from_ref(ref: str | Path | ModelRef, cfg: LayersConfig | None = None, *,
             corpus: str | Path | None = None, device: str | Placement = "cpu",
             progress: bool = True, acts: str | Path | None = None) -> Report:
    """Load the model `ref` and its corpus (`corpus`, else the run's) and run the probes."""
    from workbench.models.refs import ModelRef

    ref = ModelRef.of(ref)
    loaded = ref.load_corpus(corpus, required="a world corpus encoded with the model's "
                             "tokenizer")
    torch.manual_seed((cfg or LayersConfig()).seed)
    model = ref.load(device)
    return run(model, loaded, cfg, ref=ref, acts=acts, progress=progress)


def table(report: dict[str, Any]) -> str:
    """Plain-text table: per task the best layer, accuracy, selectivity and baselines."""
    head = (f"{'task':<10} {'kind':<9} {'n':>6} {'best':>4} {'acc':>6} {'95% CI':>13} "
            f"{'control':>7} {'select':>6} {'major':>6} {'L0':>6} {'CoG':>5}")
    lines = [head]
    for name, t in report["tasks"].items():
        b = next(r for r in t["layers"] if r["layer"] == t["best_layer"])
        emb = "-" if t["embedding_accuracy"] is None else f"{t['embedding_accuracy']:.3f}"
        lines.append(
            f"{name:<10} {t['kind']:<9} {t['n']:>6} {t['best_layer']:>4} {b['accuracy']:>6.3f} "
            f"{'[' + format(b['ci'][0], '.3f') + ',' + format(b['ci'][1], '.3f') + ']':>13} "
            f"{b['control_accuracy']:>7.3f} {b['selectivity']:>6.3f} "
            f"{t['majority_baseline']:>6.3f} {emb:>6} {t['center_of_gravity']:>5.2f}")
    return "\n".join(lines)


def summary(report: Report) -> str:
    """What `workbench probe` prints: the per-task table, then where each kind peaks."""
    return table(report) + "\n" + report["summary"]["text"]


Config = LayersConfig

"""Probe sweep: our all-layer batched probes vs scikit-learn `LogisticRegression` per layer.

Both fit multinomial logistic regression on the same standardized activations of one task
(default `pos`) at every layer, with the same L2 strength (sklearn's C = 1 / (l2 * n_train)),
the same stopping rule (no gradient entry above 1e-4) and the same iteration cap, on the
same probes (`--variants`):

- `sweep` (default): what `probe.layers.probe_task` trains, every cross-validation fold (word-
  type split: test fold f, validation fold f + 1, the rest train) x {task, control labels}
  x every L2 strength of the grid it chooses from (`probe.fit.L2_GRID`);
- `fold`: the task's probes of one fold (test fold 0, validation fold 1) at L2 1e-4.

- `ours`: `probe.fit.fit_predict`, every (variant, layer) probe at once (batched L-BFGS);
- `sklearn`: `LogisticRegression(C, max_iter)` (lbfgs, its fastest solver here), one fit per
  (variant, layer), in a loop.

Prints the median seconds of each over `--repeats` runs (after one untimed warm-up of ours),
the speedup (goal >= 5x) and the test accuracy per layer of both, pooled over the folds as
the sweep reports it (each row predicted by its own test fold's probes; control accuracy
too with `sweep`), for every L2: goal within 1 point everywhere; exits non-zero when it is
missed.

    python bench/probe_sweep.py [--model runs/demo] [--corpus runs/world] [--task pos]
                                [--variants sweep|fold]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from common import bench_model  # bench/common.py (the script's own folder)

GOAL_SPEEDUP = 5.0
GOAL_POINTS = 0.01


def main() -> int:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from probe.fit import L2_GRID, ProbeConfig, fit_predict, standardize
    from probe.layers import LayersConfig, cv_variants, select_examples
    from probe.rows import check_layers, fill_memory, plan_rows
    from probe.stats import assign_folds, control_labels
    from probe.tasks import TASKS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model (default: a random `default` model)")
    p.add_argument("--corpus", default="runs/world")
    p.add_argument("--task", default="pos")
    p.add_argument("--variants", choices=("sweep", "fold"), default="sweep",
                   help="probes: every fold x {task, control} (the sweep's) or one fold's")
    p.add_argument("--max-examples", type=int, default=20_000)
    p.add_argument("--max-iter", type=int, default=500, help="iteration cap of both")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    model, corpus = bench_model(args.model, "default", args.corpus)
    torch.set_grad_enabled(True)
    cfg = LayersConfig(tasks=args.task, max_examples=args.max_examples)
    rows = plan_rows(model, corpus, "val", None)
    ex, _ = select_examples(TASKS[args.task], rows, corpus.world(), cfg)
    layers = check_layers(None, model.cfg.n_layers)
    fill_memory(rows, model, ex.rows, layers, progress=False)
    x = standardize(rows.acts(ex.rows, layers))
    k = cfg.folds
    folds = assign_folds(ex.y, ex.groups, k, "group", seed=cfg.seed)
    labels = [ex.y]
    fold_of = [0]  # the test fold of each variant
    grid: tuple[float, ...] = (1e-4,)
    if args.variants == "sweep":  # as probe.layers.probe_task: (l2, labels, fold) order
        labels.append(control_labels(ex.y, ex.groups, len(ex.classes), cfg.seed + 7))
        fold_of = list(range(k))
        grid = L2_GRID
    ys_t, train_t, val_t, test_t, l2 = cv_variants(labels, folds, k, fold_of, grid)
    ys, train, test = ys_t.numpy(), train_t.numpy(), test_t.numpy()  # [variant, n]
    pcfg = ProbeConfig(max_iter=args.max_iter, l2=grid)
    n_classes = len(ex.classes)
    kinds = [f"{n} {v:g}" for v in grid for n in ["task", "control"][:len(labels)]]

    def pooled(pred: np.ndarray) -> np.ndarray:
        """Test accuracy `[l2 x labels, layer]` pooled over the folds: pred is `[variant,
        layer, n]` predictions of every row."""
        correct = [(pred[v][:, test[v]] == ys[v][test[v]]).sum(1) for v in range(len(ys))]
        per = np.stack(correct).reshape(len(kinds), len(fold_of), -1).sum(1)
        return per / test.reshape(len(kinds), len(fold_of), -1).sum((1, 2))[:, None]

    def ours() -> np.ndarray:
        logits = fit_predict(x, ys_t, train_t, val_t, n_classes, pcfg, l2=l2)
        return pooled(logits.argmax(-1).numpy())

    def sklearn() -> np.ndarray:
        pred = np.zeros((len(ys), len(layers), len(ex.y)), dtype=np.int64)
        for v in range(len(ys)):
            c = 1.0 / (float(l2[v]) * train[v].sum())
            for la in range(len(layers)):
                xl = x[la].numpy()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    clf = LogisticRegression(C=c, max_iter=args.max_iter).fit(
                        xl[train[v]], ys[v][train[v]])
                pred[v, la, test[v]] = clf.predict(xl[test[v]])
        return pooled(pred)

    ours()  # warm-up
    times: dict[str, list[float]] = {"ours": [], "sklearn": []}
    accs = {}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("sklearn", sklearn)):
            t0 = time.perf_counter()
            accs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    speedup = med["sklearn"] / med["ours"]
    gap = np.abs(accs["ours"] - accs["sklearn"])
    what = ("every fold x {task, control} x L2 grid" if args.variants == "sweep" else
            "test fold 0, validation fold 1")
    print(f"task {args.task}: {len(ex.y):,} rows (word-type split, {what}), {len(ys)} "
          f"variant(s) x {len(layers)} layers = {len(ys) * len(layers)} probes, d_model "
          f"{x.shape[-1]}, {n_classes} classes, max_iter {args.max_iter}, median of "
          f"{args.repeats}, {torch.get_num_threads()} torch thread(s)")
    print(f"  ours     {med['ours']:7.2f} s  (all probes at once)")
    print(f"  sklearn  {med['sklearn']:7.2f} s  (LogisticRegression per probe)")
    print(f"  speedup {speedup:.1f}x (goal >= {GOAL_SPEEDUP:.0f}x: "
          f"{'met' if speedup >= GOAL_SPEEDUP else 'MISSED'})")
    print("  probes          layer  ours    sklearn  |diff|")
    for j, kind in enumerate(kinds):
        for i, la in enumerate(layers):
            print(f"  {kind:<15} {la:>5}  {accs['ours'][j, i]:.4f}  {accs['sklearn'][j, i]:.4f}"
                  f"   {gap[j, i]:.4f}")
    ok = bool(gap.max() <= GOAL_POINTS)
    print(f"  max |accuracy difference| {gap.max():.4f} (goal <= {GOAL_POINTS}: "
          f"{'met' if ok else 'MISSED'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Probe sweep: our all-layer batched probes vs scikit-learn `LogisticRegression` per layer.

Both fit multinomial logistic regression on the same standardized activations of one task
(default `pos`, word-type split: test fold 0, validation fold 1, the rest train) at every
layer, with the same L2 strength (sklearn's C = 1 / (l2 * n_train)):

- `ours`: `probe.train.fit_predict`, every layer at once (Adam, early stopping on the
  validation rows);
- `sklearn`: `LogisticRegression(C, max_iter=500)` (lbfgs), one fit per layer, in a loop.

Prints the median seconds of each over `--repeats` runs (after one untimed warm-up of ours),
the speedup (goal >= 5x) and the test accuracy per layer of both (goal: within 1 point at
every layer; exits non-zero when it is missed).

    python bench/probe_sweep.py [--model runs/demo] [--corpus runs/world] [--task pos]
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

    from probe.rows import check_layers, fill_memory, plan_rows
    from probe.stats import assign_folds
    from probe.sweep import SweepConfig, select_examples
    from probe.tasks import TASKS
    from probe.train import ProbeConfig, fit_predict, standardize

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model (default: a random `default` model)")
    p.add_argument("--corpus", default="runs/world")
    p.add_argument("--task", default="pos")
    p.add_argument("--max-examples", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--patience", type=int, default=ProbeConfig.patience,
                   help="validation checks without improvement before a probe stops")
    args = p.parse_args()
    torch.manual_seed(0)
    model, corpus = bench_model(args.model, "default", args.corpus)
    torch.set_grad_enabled(True)
    cfg = SweepConfig(tasks=args.task, max_examples=args.max_examples)
    rows = plan_rows(model, corpus, "val", None)
    ex, _ = select_examples(TASKS[args.task], rows, corpus.world(), cfg)
    layers = check_layers(None, model.cfg.n_layers)
    fill_memory(rows, model, ex.rows, layers, progress=False)
    x = standardize(rows.acts(ex.rows, layers))
    folds = assign_folds(ex.y, ex.groups, 5, "group", seed=0)
    test, val = folds == 0, folds == 1
    train = ~(test | val)
    pcfg = ProbeConfig(patience=args.patience)
    y = torch.from_numpy(ex.y)
    n_classes = len(ex.classes)

    def ours() -> np.ndarray:
        logits = fit_predict(x, y[None], torch.from_numpy(train)[None],
                             torch.from_numpy(val)[None], n_classes, pcfg)
        pred = logits[0].argmax(-1).numpy()
        return (pred[:, test] == ex.y[test]).mean(1)

    def sklearn() -> np.ndarray:
        accs = []
        c = 1.0 / (pcfg.l2 * train.sum())
        for la in range(len(layers)):
            xl = x[la].numpy()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf = LogisticRegression(C=c, max_iter=500).fit(xl[train], ex.y[train])
            accs.append((clf.predict(xl[test]) == ex.y[test]).mean())
        return np.array(accs)

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
    print(f"task {args.task}: {len(ex.y):,} rows ({train.sum():,} train, {val.sum():,} val, "
          f"{test.sum():,} test, word-type split), {len(layers)} layers, d_model "
          f"{x.shape[-1]}, {n_classes} classes, median of {args.repeats}")
    print(f"  ours     {med['ours']:7.2f} s  (all layers at once)")
    print(f"  sklearn  {med['sklearn']:7.2f} s  (LogisticRegression per layer)")
    print(f"  speedup {speedup:.1f}x (goal >= {GOAL_SPEEDUP:.0f}x: "
          f"{'met' if speedup >= GOAL_SPEEDUP else 'MISSED'})")
    print("  layer  ours    sklearn  |diff|")
    for la, a, b, g in zip(layers, accs["ours"], accs["sklearn"], gap):
        print(f"  {la:>5}  {a:.4f}  {b:.4f}   {g:.4f}")
    ok = bool(gap.max() <= GOAL_POINTS)
    print(f"  max |accuracy difference| {gap.max():.4f} (goal <= {GOAL_POINTS}: "
          f"{'met' if ok else 'MISSED'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Circuit discovery's cost: EAP and EAP-IG against forward + backward passes, against exact
edge patching, and beside TransformerLens' edge attribution patching, in one run.

On `--n-pairs` pairs of a world task (`--task`, default `induction`: 256 pairs of repeated
random spans) of `--model` (default the shipped `runs/demo`):

- `fwd+bwd`: one forward and backward pass of the clean prompts through the task's metric
  (the unit: EAP should cost at most 3 of them);
- `eap`, `eap-ig`: `circuits.discovery.attributed_scores` (all pairs in one batch);
- `exact`: path patching of every edge (`patched_effects` with one mask per edge; timed once);
- `transformer_lens`: `transformer_lens.tools.analysis.attribution_patching.attribution_patch`
  (edge granularity) on the same pairs. It needs the bridge's per-head input hooks, which our
  native models lack, so it runs on the model exported as a Hugging Face GPT-2
  (`workbench.models.export.export_hf`, same logits); its scores (denoising: gradient at the
  corrupted run, summed over positions) are compared with ours computed with clean and
  corrupted swapped, on the export and on the native model (goal: equal to 1e-4).

Prints median seconds of `--repeats` runs (one warm-up each), EAP in forward+backward passes
(goal <= 3), the exact/EAP ratio (goal >= 50x), TransformerLens/ours, and the largest score
difference; exits non-zero when a goal is missed.

    python bench/circuit_discovery.py [--model runs/demo] [--corpus runs/world]
        [--task induction] [--n-pairs 256] [--repeats 3] [--tl-pairs 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import agreement, timed  # bench/common.py (the script's own folder)

TOLERANCE = 1e-4


def _median(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn)[0] for _ in range(repeats))


def _tl_scores(model: Any, graph: Any, task: Any) -> torch.Tensor:
    """TransformerLens' edge scores, one call per pair (its metric sees one pair's logits),
    as our `[writer, reader]` matrix summed over positions and pairs."""
    from transformer_lens.tools.analysis.attribution_patching import (
        EdgeAttributionConfig,
        attribution_patch,
    )

    from circuits.graph import transformer_lens_edge

    out = torch.zeros(graph.n_writers, graph.n_readers)
    for i in range(task.n_pairs):
        one = task.subset(slice(i, i + 1))
        metric = one.metric()
        res = attribution_patch(model, one.clean, one.corrupt,
                                lambda lg, metric=metric: metric(lg).sum(),
                                EdgeAttributionConfig("edge"))
        for edge, v in res.edge_scores.items():
            w, r = transformer_lens_edge(*edge)
            out[graph.writers.index(w), graph.readers.index(r)] += v
    return out


def main() -> None:
    from circuits.discovery import attributed_scores, edge_masks, patched_effects, task_effect
    from circuits.edges import edge_attribution
    from circuits.graph import graph_for
    from circuits.tasks import build_task
    from workbench.models.export import export_hf
    from workbench.models.loader import load
    from workbench.models.refs import ModelRef

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/demo")
    p.add_argument("--corpus", default=None, help="world corpus (default: the run's)")
    p.add_argument("--task", default="induction")
    p.add_argument("--n-pairs", type=int, default=256)
    p.add_argument("--tl-pairs", type=int, default=256,
                   help="pairs TransformerLens scores (one call each)")
    p.add_argument("--ig-steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    ref = ModelRef.of(args.model)
    model = load(args.model)
    corpus = ref.load_corpus(args.corpus) if args.task != "induction" else None
    task = build_task(args.task, model, corpus, args.n_pairs, seed=0)
    graph = graph_for(model)
    effect = task_effect(model, task, batch_pairs=task.n_pairs)
    print(f"{args.model}: {graph.n_layers} layers x {graph.n_heads} heads, {graph.n_edges} "
          f"edges; task {args.task}, {task.n_pairs} pairs of {task.clean.shape[1]} tokens; "
          f"{torch.get_num_threads()} threads")

    metric = task.metric()

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        metric(model(task.clean)).sum().backward()
        model.zero_grad(set_to_none=True)

    t_unit = _median(fwd_bwd, args.repeats)
    t_eap = _median(lambda: attributed_scores(model, graph, task, effect, "eap",
                                              batch_pairs=task.n_pairs), args.repeats)
    t_ig = _median(lambda: attributed_scores(model, graph, task, effect, "eap-ig",
                                             args.ig_steps, task.n_pairs), args.repeats)
    t_exact, _ = timed(lambda: patched_effects(model, graph, task, edge_masks(graph),
                                               batch_pairs=task.n_pairs))
    print(f"fwd+bwd          {t_unit:8.3f} s")
    print(f"eap              {t_eap:8.3f} s  = {t_eap / t_unit:.2f} fwd+bwd (goal <= 3)")
    print(f"eap-ig ({args.ig_steps} steps) {t_ig:8.3f} s  = {t_ig / t_unit:.2f} fwd+bwd")
    print(f"exact edges      {t_exact:8.3f} s  = {t_exact / t_eap:.0f}x eap (goal >= 50x)")
    ok = t_eap / t_unit <= 3 and t_exact / t_eap >= 50

    tl_task = task.subset(slice(0, min(args.tl_pairs, task.n_pairs)))
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(args.model, Path(tmp) / "hf")
        hf = load(Path(tmp) / "hf")
        t_tl, theirs = timed(lambda: _tl_scores(hf, graph, tl_task))
        t_ours, ours_hf = timed(lambda: edge_attribution(hf, graph, tl_task.corrupt,
                                                         tl_task.clean, tl_task.metric()))
        ours_native = edge_attribution(model, graph, tl_task.corrupt, tl_task.clean,
                                       tl_task.metric())
    n = tl_task.n_pairs
    print(f"transformer_lens {t_tl:8.3f} s on {n} pairs (one call per pair); ours "
          f"{t_ours:.3f} s on the same export: TransformerLens / ours = {t_tl / t_ours:.1f}x")
    ok &= agreement("ours - transformer_lens (mean edge score)",
                    {"export": float((ours_hf / n - theirs / n).abs().max()),
                     "native": float((ours_native / n - theirs / n).abs().max())}, TOLERANCE)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Causal tracing: our batched `causal_trace` vs the one-run-per-restoration loop, in one run.

The same model, fact and noise (`--n-samples` draws, 3 x the embedding std) on both sides:

- `batched`: `circuits.tracing.causal_trace`, every (kind, layer, position) restoration as
  rows of a few large batches, restorations that cannot change the output not run;
- `batched-all`: the same with `skip_unchanged=False` (every restoration run), to show what
  the batching alone buys;
- `loop`: `circuits.tracing.causal_trace_loop`, one forward run of `n_samples + 1` rows per
  restoration, as the ROME repository's `trace_with_patch` does it (the baseline).

Prints the median seconds of each (after one untimed warm-up call of each), the speedup of
`batched` over `loop` (goal >= 5x) and the largest absolute difference between the batched
and the loop heatmaps over every kind, layer and position (goal <= 1e-4; exits non-zero when
it is missed).

    python bench/causal_trace.py [--model runs/demo] [--prompt P --subject S [--target T]]
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import torch
from common import (  # bench/common.py (the script's own folder)
    add_model_args,
    agreement,
    model_from_args,
    timed,
)

TOLERANCE = 1e-4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--prompt", default="did you know ? cleo eklund lives in")
    parser.add_argument("--subject", default="cleo eklund")
    parser.add_argument("--target", default=None,
                        help="next token to trace (default: the model's top-1 after the prompt)")
    parser.add_argument("--n-samples", type=int, default=10)
    parser.add_argument("--window", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from circuits.tracing import TraceConfig, causal_trace, causal_trace_loop

    torch.manual_seed(0)
    model = model_from_args(args)
    target = args.target
    if target is None:
        with torch.no_grad():
            top = int(model(model.to_tokens(args.prompt))[0, -1].argmax())
        target = model.tokenizer.decode([top]).strip()
    cfg = TraceConfig(n_samples=args.n_samples, window=args.window)
    sides = {
        "batched": lambda: causal_trace(model, args.prompt, args.subject, target, cfg),
        "batched-all": lambda: causal_trace(model, args.prompt, args.subject, target,
                                            TraceConfig(n_samples=args.n_samples,
                                                        window=args.window,
                                                        skip_unchanged=False)),
        "loop": lambda: causal_trace_loop(model, args.prompt, args.subject, target, cfg),
    }
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    results = {name: fn() for name, fn in sides.items()}  # warm-up, untimed
    for _ in range(args.repeats):
        for name, fn in sides.items():
            t, _ = timed(fn)
            seconds[name].append(t)
    med = {name: statistics.median(s) for name, s in seconds.items()}
    loop = results["loop"]
    diff = {name: max(float(np.nanmax(np.abs(results[name].scores[k] - loop.scores[k])))
                      for k in cfg.kinds) for name in ("batched", "batched-all")}
    mc = model.cfg
    n_pos = len(loop.tokens)
    n_restore = len(cfg.kinds) * mc.n_layers * n_pos
    print(f"model {args.model or 'random ' + args.preset} ({mc.n_layers}L, d_model "
          f"{mc.d_model}), prompt {args.prompt!r} ({n_pos} tokens, subject {args.subject!r} at "
          f"{list(loop.subject)}), target {target!r}: clean p {loop.clean_prob:.4f}, corrupted "
          f"{loop.corrupt_prob:.4f}; {len(cfg.kinds)} kinds x {mc.n_layers} layers x {n_pos} "
          f"positions = {n_restore} restorations x {cfg.n_samples} samples, window "
          f"{cfg.window}; torch {torch.__version__}, {torch.get_num_threads()} threads; median "
          f"of {args.repeats} repeats")
    for name, s in med.items():
        print(f"  {name:12s} {s:8.4f} s   {med['loop'] / s:6.2f}x loop")
    ratio, alone = med["loop"] / med["batched"], med["loop"] / med["batched-all"]
    print(f"speedup batched vs loop = {ratio:.2f}x (goal >= 5: "
          f"{'met' if ratio >= 5 else 'NOT met'}); batching alone (batched-all) = {alone:.2f}x")
    ok = agreement("batched - loop", diff, TOLERANCE)
    for kind in cfg.kinds:
        last = results["batched"].peak(kind, "last_subject")
        anywhere = results["batched"].peak(kind, "any")
        print(f"  peak {kind:5s}: last subject token (layer, pos) = {last}, anywhere = "
              f"{anywhere}, p = {results['batched'].scores[kind][anywhere]:.4f}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

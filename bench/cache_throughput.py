"""Activation caching: throughput and peak memory against two baselines, in one run.

Each measurement runs in a fresh subprocess (so its peak RSS is its own) over the same
corpus tokens and batches:

- `forward`: a plain forward pass with no hooks (the speed of light; goal >= 0.8x);
- `store`: `cache_activations` of every `blocks.*.hook_resid_post` to HDF5 (ours);
- `naive`: `run_with_cache` of every hook, kept in memory, then dumped with h5py at the end.

Then `store` alone at `--mem-tokens` and at 10x that: peak RSS should not grow with the
number of tokens cached. (The naive baseline holds every activation in memory: it is run
at the small size only.)

    python bench/cache_throughput.py [--model runs/demo] [--tokens 20000] [--mem-tokens 200000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import bench_model  # bench/common.py (the script's own folder)


def run_one(args: argparse.Namespace) -> dict[str, float]:
    import h5py
    import torch

    from workbench.cache.plan import iter_batches
    from workbench.cache.store import CacheConfig, cache_activations

    torch.manual_seed(0)
    model, corpus = bench_model(args.model, args.preset, args.corpus)
    cfg = CacheConfig(hooks=("blocks.*.hook_resid_post",), split="train",
                      max_tokens=args.tokens, batch_size=args.batch_size, chunk=True)
    from workbench.cache.store import plan_for

    plan = plan_for(model, corpus, cfg)
    tokens = corpus.tokens("train")
    out = Path(args.workdir) / f"{args.mode}-{args.tokens}.h5"
    with torch.no_grad():  # warm-up batch, untimed, the same for every mode
        model(next(iter_batches(plan, tokens, cfg.batch_size, 0, plan.n_seqs)).tokens)
    t0 = time.perf_counter()
    if args.mode == "forward":
        with torch.no_grad():
            for batch in iter_batches(plan, tokens, cfg.batch_size, 0, plan.n_seqs):
                model(batch.tokens)
    elif args.mode == "store":
        cache_activations(model, corpus, cfg, out, progress=False, overwrite=True)
    elif args.mode == "naive":
        kept: dict[str, list] = {}
        with torch.no_grad():
            for batch in iter_batches(plan, tokens, cfg.batch_size, 0, plan.n_seqs):
                _, cache = model.run_with_cache(batch.tokens)
                for name, act in cache.items():
                    kept.setdefault(name, []).append(act)
        with h5py.File(out, "w") as f:
            for name, acts in kept.items():
                if name.endswith("hook_resid_post"):
                    b = [a.reshape(-1, a.shape[-1]) for a in acts]
                    f[name] = torch.cat(b).numpy()
    seconds = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"tokens_per_s": plan.n_tokens / seconds, "peak_rss_mib": peak_mib,
            "n_tokens": plan.n_tokens}


def _spawn(args: argparse.Namespace, mode: str, tokens: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--one", mode, "--tokens", str(tokens), "--corpus",
           str(args.corpus), "--workdir", args.workdir, "--preset", args.preset,
           "--batch-size", str(args.batch_size)] + (["--model", args.model] if args.model else [])
    result = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model ref (default: random `preset`)")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--corpus", default=None, help="world corpus (default: a new one)")
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mem-tokens", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.mode = args.one
        print(json.dumps(run_one(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        args.workdir = tmp
        if args.corpus is None:
            from workbench.world import WorldConfig, build_corpus

            args.corpus = build_corpus(WorldConfig(seed=0), Path(tmp) / "world",
                                       n_tokens_train=max(12 * args.tokens,
                                                          11 * args.mem_tokens),
                                       progress=False)
        res: dict[str, list[dict[str, float]]] = {"forward": [], "store": [], "naive": []}
        for _ in range(args.repeats):
            for mode in res:
                res[mode].append(_spawn(args, mode, args.tokens))
        small = [_spawn(args, "store", args.mem_tokens) for _ in range(args.repeats)]
        big = [_spawn(args, "store", 10 * args.mem_tokens)]
    med = {m: {k: float(np.median([r[k] for r in rs])) for k in rs[0]} for m, rs in res.items()}
    big_med = {k: float(np.median([r[k] for r in big])) for k in big[0]}
    small_med = {k: float(np.median([r[k] for r in small])) for k in small[0]}
    print(f"model {args.model or 'random ' + args.preset}, {args.tokens:,} tokens, "
          f"batch {args.batch_size}, median of {args.repeats} runs (fresh process each)")
    for mode, m in med.items():
        print(f"  {mode:8s} {m['tokens_per_s']:10,.0f} tokens/s  "
              f"{m['tokens_per_s'] / med['forward']['tokens_per_s']:.2f}x forward   "
              f"peak RSS {m['peak_rss_mib']:8,.0f} MiB")
    ratio = med["store"]["tokens_per_s"] / med["forward"]["tokens_per_s"]
    print(f"store/forward throughput = {ratio:.2f} (goal >= 0.80: "
          f"{'met' if ratio >= 0.8 else 'NOT met'})")
    print(f"store/naive throughput = "
          f"{med['store']['tokens_per_s'] / med['naive']['tokens_per_s']:.2f}, peak RSS "
          f"{med['store']['peak_rss_mib']:.0f} vs {med['naive']['peak_rss_mib']:.0f} MiB")
    mem_ratio = big_med["peak_rss_mib"] / small_med["peak_rss_mib"]
    print(f"store peak RSS at {10 * args.mem_tokens:,} vs {args.mem_tokens:,} tokens: "
          f"{big_med['peak_rss_mib']:.0f} vs {small_med['peak_rss_mib']:.0f} MiB "
          f"(ratio {mem_ratio:.2f}; bounded memory means close to 1); store at "
          f"{10 * args.mem_tokens:,} tokens: {big_med['tokens_per_s']:,.0f} tokens/s")


if __name__ == "__main__":
    main()

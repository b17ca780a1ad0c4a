"""Dictionary training throughput: rows from the HDF5 activation store against the same rows
held in memory, side by side in one run (goal: store >= 0.8x memory).

Both go through the same `features.train.train_dictionary` and `features.stream.RowStream`
(same seed, same order of rows); only the source differs: the h5py dataset of the store, or
that dataset read into a numpy array first. Each configuration runs `--repeats` times in
alternation; medians and the ratio are printed. A file is made with `workbench cache` when
`--acts` is missing.

    python bench/sae_throughput.py --acts runs/demo/acts_train_b1.h5 [--hook H] [--tokens 400000]
    python bench/sae_throughput.py --model runs/demo   # caches 400k train rows first
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_acts(model_ref: str, hook: str, tokens: int, out: Path) -> None:
    from workbench.cache.store import CacheConfig, cache_activations
    from workbench.models.refs import ModelRef

    ref = ModelRef.of(model_ref)
    cache_activations(ref.load("cpu"), ref.load_corpus(None),
                      CacheConfig(hooks=(hook,), split="train", positions="all",
                                  dtype="float16", chunk=True, max_tokens=tokens), out,
                      model_ref=ref.text, progress=True)


def timed(source: object, tokens: int, arch: str, out: Path) -> float:
    from features.train import TrainConfig, train_dictionary

    cfg = TrainConfig(arch=arch, tokens=tokens, log_every=10**9, ckpt_every=10**9)
    t0 = time.perf_counter()
    train_dictionary([source], cfg, out, meta={"hook": "bench"}, progress=False)
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--acts", default=None, help="activation file (made when missing)")
    p.add_argument("--model", default="runs/demo")
    p.add_argument("--hook", default="blocks.1.hook_resid_post")
    p.add_argument("--tokens", type=int, default=400_000, help="rows trained on per run")
    p.add_argument("--arch", default="topk")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from workbench.cache.store import ActivationStore

    with tempfile.TemporaryDirectory() as tmp:
        acts = Path(args.acts) if args.acts else Path(tmp) / "acts.h5"
        if not acts.exists():
            make_acts(args.model, args.hook, args.tokens, acts)
        store = ActivationStore(acts)
        disk = store.dataset(args.hook)
        memory = np.asarray(disk[:])
        rates: dict[str, list[float]] = {"store": [], "memory": []}
        for i in range(args.repeats):
            for name, source in (("store", disk), ("memory", memory)):
                rates[name].append(timed(source, args.tokens, args.arch,
                                         Path(tmp) / f"{name}{i}"))
                print(f"{name} run {i}: {rates[name][-1]:,.0f} rows/s", flush=True)
        store.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["store"] / med["memory"]
    print(json.dumps({"rows": int(len(memory)), "tokens": args.tokens, "arch": args.arch,
                      "median_rows_per_s": {k: round(v, 1) for k, v in med.items()},
                      "store_over_memory": round(ratio, 3), "goal": ">= 0.8"}))
    print(f"store/memory = {ratio:.2f}x (goal >= 0.8x); store {med['store']:,.0f} rows/s, "
          f"memory {med['memory']:,.0f} rows/s")


if __name__ == "__main__":
    main()

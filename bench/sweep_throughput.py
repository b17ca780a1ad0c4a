"""Sweep throughput: a member's training step against the plain PyTorch GPT, and the battery
against the analysis commands run one by one.

1. Training: the trainer's step (FastGPT) on a sweep member's exact shape (default: the
   `cpu` family's largest, 4x256x4) against `PlainGPT` of bench/train_throughput.py on the same
   random batches, interleaved rounds in this process. Goal: >= 0.9x.
2. Battery: `sweep.battery.run_battery` on one member's checkpoints (the `micro` family's
   largest member, trained here unless `--plan` names an existing one) against what a user
   would otherwise run per checkpoint: `workbench eval`, `workbench icl`, `workbench induction`,
   `workbench probe` and `workbench beliefs --method icl,rome` as subprocesses with small
   settings. Goal: >= 3x faster per checkpoint; the numbers both report in common (fact
   recall, agreement, validation-window loss vs `eval`) must agree.

    python bench/sweep_throughput.py [--spec cpu] [--plan runs/micro] [--checkpoints 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _train_bench():  # bench/ is not a package: load the baseline by path
    spec = importlib.util.spec_from_file_location("train_throughput",
                                                  HERE / "train_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def training(spec_name: str, size: str | None, steps: int, rounds: int, device: str) -> float:
    from sweep.spec import load_spec
    from workbench.models.loader import build_bridge
    from workbench.training.fastgpt import FastGPT, from_bridge_state_dict

    tb = _train_bench()
    members = load_spec(spec_name).members()
    member = next((m for m in members if m.size.text == size), members[-1])
    mcfg = member.model.replace(d_vocab=1000)
    tcfg = member.train
    torch.manual_seed(0)
    fast = FastGPT(mcfg)
    fast.load_state_dict(from_bridge_state_dict(build_bridge(mcfg).state_dict(), mcfg))
    plain = tb.PlainGPT(mcfg.n_layers, mcfg.d_model, mcfg.n_heads, mcfg.d_mlp, mcfg.n_ctx, 1000)
    fns = {name: tb.make_step(m.to(device).train(), tcfg, device)
           for name, m in (("member", fast), ("plain", plain))}
    b = tcfg.batch_size
    x = torch.randint(0, 1000, (b, mcfg.n_ctx), device=device)
    y = torch.randint(0, 1000, (b, mcfg.n_ctx), device=device)
    for fn in fns.values():
        for _ in range(3):
            fn(x, y)
    rates: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn(x, y)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            rates[name].append(b * mcfg.n_ctx * steps / (time.perf_counter() - t0))
    med = {n: statistics.median(r) for n, r in rates.items()}
    ratio = med["member"] / med["plain"]
    print(f"training: member {member.name} of {spec_name!r} (N={member.n_params:,}, B {b} "
          f"T {mcfg.n_ctx}) on {device}, {torch.get_num_threads()} thread(s), median of "
          f"{rounds} rounds x {steps} steps")
    for name, rate in med.items():
        print(f"  {name:8s} {rate:12,.0f} tokens/s")
    verdict = "met" if ratio >= 0.9 else "NOT met"
    print(f"ratio member/plain = {ratio:.2f} (goal >= 0.90: {verdict})")
    return ratio


def _commands(ck: Path, corpus: Path, out: Path) -> list[list[str]]:
    wb = [str(Path(sys.executable).parent / "workbench")]
    common = ["--model", str(ck), "--corpus", str(corpus), "--no-progress"]
    return [
        wb + ["eval", *common, "--out", str(out / "eval.json")],
        wb + ["icl", *common, "--k", "0,4", "--n", "8", "--no-mechanism",
              "--out", str(out / "icl.json")],
        wb + ["induction", *common, "--n-seqs", "16", "--out", str(out / "induction.json")],
        wb + ["probe", *common, "--split", "train", "--max-tokens", "20000",
              "--max-examples", "300", "--folds", "3", "--min-per-class", "2", "--l2", "1e-3",
              "--out", str(out / "probe.json")],
        wb + ["beliefs", *common, "--method", "icl,rome", "--n", "4", "--n-trace", "0",
              "--layer", "0", "--cov-tokens", "4000", "--out", str(out / "beliefs.json")],
    ]


def battery(plan_dir: Path | None, n_checkpoints: int) -> float:
    from sweep.battery import BatteryConfig, run_battery, world_inputs
    from sweep.plan import load_plan, plan_sweep
    from sweep.run import train_member
    from sweep.spec import load_spec
    from workbench.models.checkpoints import list_checkpoints
    from workbench.models.loader import load
    from workbench.world import load_corpus

    tmp = Path(tempfile.mkdtemp(prefix="sweep_bench_"))
    if plan_dir is None:
        plan = plan_sweep(load_spec("micro"), tmp / "micro").plan
    else:
        plan = load_plan(plan_dir)
    member = plan.members()[-1]
    train_member(plan, member, device="cpu", progress=False)
    cks = list_checkpoints(plan.run_dir(member))
    cks = [cks[round(i * (len(cks) - 1) / max(1, n_checkpoints - 1))]
           for i in range(n_checkpoints)]
    corpus_dir = plan.world_dir(member.world_id)
    corpus = load_corpus(corpus_dir)
    cfg = BatteryConfig(fact_items=1000, agreement_items=1000)  # all items, as `eval`
    t0 = time.perf_counter()
    inputs = None
    results = []
    for ck in cks:
        model = load(ck)
        inputs = inputs or world_inputs(model, corpus, cfg)
        results.append(run_battery(model, inputs, cfg))
    ours = (time.perf_counter() - t0) / len(cks)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    for i, ck in enumerate(cks):
        out = tmp / f"cmd{i}"
        out.mkdir()
        for cmd in _commands(ck, corpus_dir, out):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{cmd[1]} failed: {done.stderr[-1000:]}")
        ev = json.loads((out / "eval.json").read_text())["metrics"]
        got = results[i]["abilities"]
        for ours_name, theirs in (("facts", "fact_recall_heldout"), ("agreement", "agreement"),
                                  ("facts_twohop", "fact_recall_twohop")):
            a, b = got[ours_name]["discrete"]["value"], ev[theirs]["value"]
            assert abs(a - b) < 1e-6, f"{cks[i].name}: {ours_name} {a} != eval's {theirs} {b}"
    theirs = (time.perf_counter() - t0) / len(cks)
    print(f"battery: {len(cks)} checkpoint(s) of {member.name}: {ours:.2f} s per checkpoint "
          f"(every ability) vs {theirs:.2f} s for eval + icl + induction + probe + beliefs "
          "as commands; fact recall, two-hop and agreement equal eval's")
    speedup = theirs / ours
    print(f"speed-up = {speedup:.1f}x (goal >= 3x: {'met' if speedup >= 3 else 'NOT met'})")
    return speedup


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="cpu", help="the family whose member trains")
    p.add_argument("--size", default=None, help="member size (default: the largest)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--plan", type=Path, default=None, help="a planned micro-like sweep")
    p.add_argument("--checkpoints", type=int, default=3)
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--skip-battery", action="store_true")
    args = p.parse_args()
    if not args.skip_training:
        training(args.spec, args.size, args.steps, args.rounds, args.device)
    if not args.skip_battery:
        battery(args.plan, args.checkpoints)


if __name__ == "__main__":
    main()

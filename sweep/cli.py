"""`workbench sweep`: plan a family of models and train it (registered under the
`workbench.commands` entry points; `sweep.plan`, `sweep.run` and `sweep.analyze` do the
work)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from workbench.cli.argtypes import device
from workbench.cli.registry import Command

if TYPE_CHECKING:
    from sweep.plan import Plan

SWEEP_HELP = ("scaling sweeps: plan a family of models from a spec (TOML or JSON, or a preset "
              "of datasets/sweeps: micro, cpu, gpu), train its members and analyze them, "
              "resumably")


def sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.description = SWEEP_HELP
    sub = p.add_subparsers(dest="sweep_command", required=True)
    plan = sub.add_parser("plan", help="write one directory and one command per member")
    plan.add_argument("spec", help="spec file (.toml or .json) or preset name (micro, cpu, gpu)")
    plan.add_argument("--out", required=True, help="plan directory, e.g. runs/micro")
    plan.add_argument("--overwrite", action="store_true", help="replace a plan of another "
                      "spec (members whose config is unchanged keep their runs)")
    run = sub.add_parser("run", help="train the members that are not finished, in order "
                         "(resumes a killed member; never retrains a finished one)")
    run.add_argument("plan", help="plan directory made by `workbench sweep plan`")
    run.add_argument("--member", nargs="+", default=(), metavar="NAME",
                     help="train only these members (default: all)")
    run.add_argument("--device", type=device, default="auto", help="auto | cpu | cuda")
    run.add_argument("--jobs", type=int, default=1, help="members trained at once, each in "
                     "its own process with cores/jobs threads (default 1)")
    run.add_argument("--no-progress", action="store_true")
    analyze = sub.add_parser("analyze", help="the battery on every checkpoint of every member "
                             "(resumable), then sweep.json: loss laws and emergence verdicts")
    analyze.add_argument("plan", help="plan directory made by `workbench sweep plan`")
    analyze.add_argument("--overwrite", action="store_true",
                         help="measure every checkpoint again (default: only new ones)")
    analyze.add_argument("--device", type=device, default="cpu", help="auto | cpu | cuda")
    analyze.add_argument("--member", nargs="+", default=(), metavar="NAME",
                         help="measure only these members, and write no sweep.json")
    analyze.add_argument("--jobs", type=int, default=1, help="members measured at once, each "
                         "in its own process with cores/jobs threads; then sweep.json")
    analyze.add_argument("--no-progress", action="store_true")
    world = sub.add_parser("world", help="build the plan's world corpora that are missing")
    world.add_argument("plan", help="plan directory made by `workbench sweep plan`")
    world.add_argument("--world", nargs="+", default=(), metavar="ID",
                       help="build only these worlds (default: all)")
    world.add_argument("--no-progress", action="store_true")


def _plan(args: argparse.Namespace) -> None:
    from sweep.plan import COMMANDS_FILE, plan_sweep
    from sweep.spec import load_spec

    outcome = plan_sweep(load_spec(args.spec), args.out, overwrite=args.overwrite)
    plan = outcome.plan
    if outcome.status == "unchanged":
        print(f"{plan.root} already holds this plan; nothing changed")
    else:
        print(f"{outcome.status} plan {plan.spec.name!r}: {len(plan.members())} members, "
              f"{len(plan.spec.worlds())} world(s) -> {plan.root}")
        if outcome.kept or outcome.removed:
            print(f"kept {len(outcome.kept)} member(s) with their runs; removed "
                  f"{', '.join(outcome.removed) or 'nothing'}")
    print(f"{'member':40s} {'N':>12s} {'D':>14s} {'C':>10s}")
    for m in plan.members():
        print(f"{m.name:40s} {m.n_params:12,d} {m.tokens:14,d} {m.compute:10.2e}")
    print(f"commands: {plan.root / COMMANDS_FILE} (run them all here: "
          f"`workbench sweep run {plan.root}`)")


def _run(args: argparse.Namespace) -> None:
    from sweep.plan import load_plan
    from sweep.run import SweepRunConfig, run_sweep

    plan = load_plan(args.plan)
    if args.jobs != 1:
        _in_lanes(plan, args, ["run", "--device", args.device])
        args.no_progress = True
    cfg = SweepRunConfig(device=args.device, members=tuple(args.member),
                         progress=not args.no_progress)
    results = run_sweep(plan, cfg, log=lambda line: print(line, flush=True))
    busy = [r.name for r in results if r.status == "busy"]
    print(f"{len(results) - len(busy)} of {len(results)} member(s) finished"
          + (f"; being trained elsewhere: {', '.join(busy)}" if busy else ""))


def _world(args: argparse.Namespace) -> None:
    from sweep.plan import load_plan
    from sweep.run import ensure_world

    plan = load_plan(args.plan)
    for world_id in args.world or tuple(plan.spec.worlds()):
        out, built = ensure_world(plan, world_id, progress=not args.no_progress)
        print(f"world {world_id}: {'built' if built else 'present'} -> {out}")


def _in_lanes(plan: Plan, args: argparse.Namespace, command: list[str]) -> None:
    """`workbench sweep COMMAND PLAN` over the chosen members in `args.jobs` processes."""
    from sweep.lanes import battery_cost, run_lanes, split
    from workbench.models.checkpoints import list_checkpoints

    members = [plan.member(n) for n in args.member] if args.member else plan.members()
    if command[0] == "analyze":
        largest = max(m.compute for m in members)
        lanes = split(members, args.jobs, lambda m: battery_cost(
            len(list_checkpoints(plan.run_dir(m))), m.compute, largest))
    else:
        lanes = split(members, args.jobs)
    print(f"{len(members)} member(s) in {len(lanes)} lane(s): "
          + "; ".join(", ".join(m.name for m in lane) for lane in lanes), flush=True)
    run_lanes(["sweep", command[0], str(plan.root), *command[1:], "--no-progress"], lanes)


def _analyze(args: argparse.Namespace) -> None:
    from sweep.analyze import AnalyzeConfig, analyze_member_set, analyze_sweep
    from sweep.laws import REPORT_FILE
    from sweep.plan import load_plan

    plan = load_plan(args.plan)
    if args.jobs != 1:
        _in_lanes(plan, args, ["analyze", "--device", args.device]
                  + (["--overwrite"] if args.overwrite else []))
        args.overwrite, args.no_progress = False, True  # measured: sweep.json from the caches
    cfg = AnalyzeConfig(overwrite=args.overwrite, device=args.device,
                        progress=not args.no_progress)
    if args.member:
        if args.jobs == 1:
            analyze_member_set(plan, [plan.member(n) for n in args.member], cfg,
                               log=lambda line: print(line, flush=True))
        print(f"measured; `workbench sweep analyze {plan.root}` writes sweep.json")
        return
    report = analyze_sweep(plan, cfg, log=lambda line: print(line, flush=True))
    for key, law in report["laws"].items():
        if key == "note":
            print(f"laws: {law}")
        elif key == "joint":
            print(f"joint: L = {law['e']:.3g} + {law['a']:.3g}/N^{law['alpha']:.3f} + "
                  f"{law['b']:.3g}/D^{law['beta']:.3f} (R² {law['r2']:.3f})")
        else:
            lo, hi = law["ci"].get("alpha", (float("nan"), float("nan")))
            print(f"loss vs {key}: alpha {law['alpha']:.3f} [{lo:.3f}, {hi:.3f}], "
                  f"R² {law['r2']:.3f} over {law['n']} members")
    print(f"{'ability':20s} {'discrete vs N':16s} {'continuous vs N':16s}")
    for name, a in report["abilities"].items():
        print(f"{name:20s} {a['discrete']['N']['verdict']:16s} "
              f"{a['continuous']['N']['verdict']:16s}")
    print(report["differ"]["statement"])
    print(f"-> {plan.root / REPORT_FILE}")


def sweep_command(args: argparse.Namespace) -> None:
    {"plan": _plan, "run": _run, "world": _world, "analyze": _analyze}[args.sweep_command](args)


SWEEP = Command("sweep", SWEEP_HELP, sweep_arguments, sweep_command, order=78,
                on_interrupt="finished members and the checkpoints written so far are kept; "
                "run `workbench sweep run PLAN` again to continue")

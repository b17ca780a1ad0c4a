"""`workbench sweep`: plan a family of models and train it (registered under the
`workbench.commands` entry points; `sweep.plan`, `sweep.run` and `sweep.analyze` do the
work)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from workbench.cli.argtypes import device
from workbench.cli.registry import Command

if TYPE_CHECKING:
    from sweep.executor import ExecutorConfig
    from sweep.jobs import MemberJobs
    from sweep.member import Member
    from sweep.plan import Plan

SWEEP_HELP = ("scaling sweeps: plan a family of models from a spec (TOML or JSON, or a preset "
              "of datasets/sweeps: micro, cpu, emergence, gpu), train its members and analyze "
              "them, resumably, as local processes or a Slurm job array")


def sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.description = SWEEP_HELP
    sub = p.add_subparsers(dest="sweep_command", required=True)
    plan = sub.add_parser("plan", help="write one directory and one command per member")
    plan.add_argument("spec", help="spec file (.toml or .json) or preset name (micro, cpu, "
                      "emergence, gpu)")
    plan.add_argument("--out", required=True, help="plan directory, e.g. runs/micro")
    plan.add_argument("--overwrite", action="store_true", help="replace a plan of another "
                      "spec (members whose config is unchanged keep their runs)")
    run = sub.add_parser("run", help="train the members that are not finished, one job "
                         "each (resumes a killed member; never retrains a finished one)")
    run.add_argument("plan", help="plan directory made by `workbench sweep plan`")
    run.add_argument("--member", nargs="+", default=(), metavar="NAME",
                     help="train only these members (default: all)")
    run.add_argument("--device", type=device, default="auto", help="auto | cpu | cuda")
    executor_arguments(run)
    run.add_argument("--no-progress", action="store_true")
    analyze = sub.add_parser("analyze", help="the battery on every checkpoint of every member "
                             "(one job each, resumable), then sweep.json: loss laws and "
                             "emergence verdicts")
    analyze.add_argument("plan", help="plan directory made by `workbench sweep plan`")
    analyze.add_argument("--overwrite", action="store_true",
                         help="measure every checkpoint again (default: only new ones)")
    analyze.add_argument("--device", type=device, default="cpu", help="auto | cpu | cuda")
    analyze.add_argument("--member", nargs="+", default=(), metavar="NAME",
                         help="measure only these members, and write no sweep.json")
    executor_arguments(analyze)
    analyze.add_argument("--no-progress", action="store_true")
    analyze.set_defaults(on_interrupt="the checkpoints measured so far are kept (each "
                         "member's battery.json); run `workbench sweep analyze PLAN` again to "
                         "continue")
    status = sub.add_parser("status", help="a table of the members: pending, running, done, "
                            "failed, with steps, checkpoints, battery and job ids")
    status.add_argument("plan", help="plan directory made by `workbench sweep plan`")
    status.add_argument("--json", action="store_true", help="print the table as JSON")
    world = sub.add_parser("world", help="build the plan's world corpora that are missing")
    world.add_argument("plan", help="plan directory made by `workbench sweep plan`")
    world.add_argument("--world", nargs="+", default=(), metavar="ID",
                       help="build only these worlds (default: all)")
    world.add_argument("--no-progress", action="store_true")
    world.set_defaults(on_interrupt="worlds already built are kept (each is built in a "
                       "temporary folder); run `workbench sweep world PLAN` again to continue")
    plan.set_defaults(on_interrupt="each file of the plan is written whole; run `workbench "
                      "sweep plan` again")
    status.set_defaults(on_interrupt="nothing was written")


def executor_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that choose where member jobs run (`sweep.executor`)."""
    from sweep.executor import EXECUTORS

    g = p.add_argument_group("where the jobs run (submitit)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: processes on this machine; slurm: a Slurm job array; debug: "
                   "in this process, one member after the other (default local)")
    g.add_argument("--jobs", type=int, default=1, help="local: members at once, each with "
                   "cores/jobs threads, or OMP_NUM_THREADS when it is set (default 1)")
    g.add_argument("--tasks-per-job", type=int, default=1, metavar="N", help="processes per "
                   "job: N > 1 trains a member data-parallel (DDP, as torchrun would)")
    g.add_argument("--partition", help="slurm: the partition")
    g.add_argument("--gpus-per-job", type=int, metavar="N", help="slurm: GPUs per job")
    g.add_argument("--cpus-per-job", type=int, metavar="N", help="slurm: CPUs per task")
    g.add_argument("--time", type=int, metavar="MIN", help="slurm: time limit per job in "
                   "minutes (a job that reaches it is requeued and resumes; default 240)")
    g.add_argument("--array-parallelism", type=int, metavar="N",
                   help="slurm: jobs of the array running at once")
    g.add_argument("--slurm-arg", type=slurm_arg, action="append", default=[],
                   metavar="KEY=VALUE", help="slurm: any other sbatch option, e.g. qos=high "
                   "(repeatable)")


def slurm_arg(text: str) -> tuple[str, str]:
    from sweep.executor import parse_slurm_arg

    try:
        return parse_slurm_arg(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def executor_config(args: argparse.Namespace) -> ExecutorConfig:
    """The checked `ExecutorConfig` of the parsed flags (ValueError: one line)."""
    from sweep.executor import ExecutorConfig

    cfg = ExecutorConfig(executor=args.executor, jobs=args.jobs,
                         tasks_per_job=args.tasks_per_job, partition=args.partition,
                         gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job,
                         time_min=args.time, array_parallelism=args.array_parallelism,
                         slurm_args=tuple(args.slurm_arg))
    cfg.check()
    return cfg


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


def _selected(plan: Plan, args: argparse.Namespace) -> list[Member]:
    return [plan.member(n) for n in args.member] if args.member else plan.members()


def _run(args: argparse.Namespace) -> None:
    from sweep.jobs import run_member_jobs
    from sweep.plan import check_member_dir, load_plan
    from sweep.run import ensure_corpora, finished
    from sweep.status import progress_line

    cfg = executor_config(args)
    plan = load_plan(args.plan)
    members = _selected(plan, args)
    for member in members:
        check_member_dir(plan, member)
    todo_members = [m for m in members if not finished(plan, m)]
    if cfg.executor != "slurm":
        _check_local_memory(todo_members, cfg.jobs)
    _check_disk(plan, todo_members)
    _jobs_dir(plan)
    ensure_corpora(plan, members, progress=not args.no_progress,
                   log=lambda line: print(line, flush=True))
    todo = []
    for i, member in enumerate(members, 1):
        if finished(plan, member):
            print(f"[{i}/{len(members)}] {member.name}: finished already; skipped")
        else:
            todo.append(member)
    records = run_member_jobs(plan, todo, "run", cfg, {"device": args.device},
                              log=lambda line: print(line, flush=True),
                              cost=lambda m: m.compute, report=None if args.no_progress
                              else lambda names: progress_line(plan, names, "run"))
    _summary(plan, records, "finished", f"workbench sweep run {plan.root}",
             already=len(members) - len(todo))


def _check_local_memory(members: list[Member], jobs: int) -> None:
    """Members trained on this machine (`jobs` at once) fit its memory, before any world is
    built or job started (the refusal names the spec key)."""
    from workbench.models.checks import available_memory, fmt_bytes, train_bytes

    if not members:
        return
    need, m = max(((train_bytes(m.model, m.train.batch_size), m) for m in members),
                  key=lambda x: x[0])
    have = available_memory()
    if need * min(jobs, len(members)) > 0.9 * have:
        raise ValueError(f"member {m.name} needs about {fmt_bytes(need)} of memory per training "
                         f"step{f' (x{min(jobs, len(members))} jobs at once)' if jobs > 1 else ''}"
                         f", more than the {fmt_bytes(have)} available here; lower [train] "
                         "batch_size or the size axis and plan again, fewer --jobs, or "
                         "--executor slurm")


def _check_disk(plan: Plan, members: list[Member]) -> None:
    """The members' checkpoints fit the plan's disk (weights of every scheduled checkpoint
    and the optimizer state of the newest), before any world is built."""
    from workbench.layout import scheduled_steps
    from workbench.models.checks import FLOAT, check_disk

    need = sum((len(scheduled_steps(m.steps, m.train.ckpt_interval)) + 2)
               * m.model.replace(d_vocab=max(m.model.d_vocab, 1024)).n_params * FLOAT
               for m in members)
    check_disk(need, plan.root, "free some space, or plan fewer or smaller members (the "
               "steps, size or seed axes)")


def _jobs_dir(plan: Plan) -> None:
    from sweep.executor import check_jobs_dir

    check_jobs_dir(plan.root)  # before any world is built or job submitted


def _summary(plan: Plan, records: dict[str, MemberJobs], verb: str, again: str, *,
             already: int = 0) -> None:
    done = [n for n, r in records.items() if r.state == "done"]
    busy = [n for n, r in records.items() if r.state == "busy"]
    failed = [n for n, r in records.items() if r.state == "failed"]
    print(f"{len(done) + already} of {len(records) + already} member(s) {verb}"
          + (f"; being worked on elsewhere: {', '.join(busy)}" if busy else ""))
    if failed:
        raise ValueError(f"member(s) {', '.join(failed)} failed {records[failed[0]].attempts} "
                         f"times (their logs: `workbench sweep status {plan.root}`); fix the "
                         f"cause and run `{again}` again: the rest is kept")


def _world(args: argparse.Namespace) -> None:
    from sweep.plan import load_plan
    from sweep.run import ensure_world

    plan = load_plan(args.plan)
    for world_id in args.world or tuple(plan.spec.worlds()):
        out, built = ensure_world(plan, world_id, progress=not args.no_progress)
        print(f"world {world_id}: {'built' if built else 'present'} -> {out}")


def _analyze(args: argparse.Namespace) -> None:
    from sweep.analyze import AnalyzeConfig, analyze_sweep, battery_cost
    from sweep.jobs import run_member_jobs
    from sweep.laws import REPORT_FILE
    from sweep.plan import load_plan
    from sweep.status import measured, progress_line
    from workbench.models.checkpoints import list_checkpoints

    cfg = executor_config(args)
    plan = load_plan(args.plan)
    members = []
    for member in _selected(plan, args):
        if list_checkpoints(plan.run_dir(member)):
            members.append(member)
        else:
            print(f"{member.name}: no checkpoint yet; left out")
    if not members:
        raise ValueError(f"no member of {plan.root} has a checkpoint yet; train them first: "
                         f"`workbench sweep run {plan.root}`")
    _jobs_dir(plan)
    largest = max(m.compute for m in members)
    todo = []
    for member in members:
        n = len(list_checkpoints(plan.run_dir(member)))
        if not args.overwrite and measured(plan, member) >= n:
            print(f"{member.name}: all {n} checkpoints measured already; skipped")
        else:
            todo.append(member)
    records = run_member_jobs(
        plan, todo, "analyze", cfg, {"device": args.device, "overwrite": args.overwrite},
        log=lambda line: print(line, flush=True),
        cost=lambda m: battery_cost(len(list_checkpoints(plan.run_dir(m))), m.compute, largest),
        report=None if args.no_progress else lambda names: progress_line(plan, names, "analyze"))
    _summary(plan, records, "measured", f"workbench sweep analyze {plan.root}",
             already=len(members) - len(todo))
    if args.member:
        print(f"measured; `workbench sweep analyze {plan.root}` writes sweep.json")
        return
    report = analyze_sweep(plan, AnalyzeConfig(device=args.device, progress=False),
                           log=lambda line: None)  # measured above: sweep.json from the caches
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


def _status(args: argparse.Namespace) -> None:
    import json

    from sweep.plan import load_plan
    from sweep.status import format_status, plan_status

    status = plan_status(load_plan(args.plan))
    print(json.dumps(status, indent=1) if args.json else format_status(status))


def sweep_command(args: argparse.Namespace) -> None:
    {"plan": _plan, "run": _run, "world": _world, "analyze": _analyze,
     "status": _status}[args.sweep_command](args)


SWEEP = Command("sweep", SWEEP_HELP, sweep_arguments, sweep_command, order=78,
                on_interrupt="finished members and the checkpoints written so far are kept; "
                "run `workbench sweep run PLAN` again to continue")

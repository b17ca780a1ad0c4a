"""Command-line front of a probe sweep: `workbench probe` (registered under the
`workbench.commands` entry points) and the per-kind scripts (`python -m probe.syntax --model
runs/demo --task pos`); `probe.layers` does the work."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from probe.fit import L2_GRID, ProbeConfig
from workbench.cli.argtypes import bounded_int, device, floats, int_list, one_of, positive_int, seed
from workbench.cli.registry import Command
from workbench.models.devices import add_placement_args, placement_of


def add_probe_args(p: argparse.ArgumentParser, default_tasks: str) -> None:
    """The options of a sweep."""
    p.add_argument("--model", required=True, help="run dir, checkpoint dir or HF dir")
    p.add_argument("--corpus", default=None,
                   help="world corpus in the model's tokenizer (default: the run's)")
    p.add_argument("--tasks", type=_tasks, default=default_tasks,
                   help="suites syntax,semantics,facts and/or task names (pos,city,...)")
    p.add_argument("--probe", type=one_of("linear", "mlp"), default="linear",
                   help="linear | mlp")
    p.add_argument("--split", default="val", help="corpus split to probe (train | val | test)")
    p.add_argument("--max-tokens", type=positive_int, default=None,
                   help="cap on the split's tokens")
    p.add_argument("--max-examples", type=bounded_int(10), default=20_000,
                   help="rows per task")
    p.add_argument("--layers", type=int_list(0), default=None,
                   help="probe layers, e.g. 0,2,4 (default all)")
    p.add_argument("--folds", type=bounded_int(3, 100), default=5)
    p.add_argument("--holdout", type=one_of("group", "random"), default="group",
                   help="group (word types / people never on both sides) | random")
    p.add_argument("--min-per-class", type=bounded_int(2), default=10)
    p.add_argument("--acts", default=None, help="activation file (.h5) to read (made by this "
                   "model from this corpus and split); made first, resumably, when it does not "
                   "exist: for activations too large for memory")
    p.add_argument("--l2", type=_l2_values, default=ProbeConfig.l2,
                   help="L2 strength, or comma-separated strengths to choose from on each "
                        f"fold's validation rows (default {','.join(map(str, L2_GRID))})")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", type=device, default="cpu")
    add_placement_args(p)
    p.add_argument("--out", default=None, help="JSON output (default: MODEL/analyses/probe"
                   ".json)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def _l2_values(text: str) -> float | tuple[float, ...]:
    """`--l2 0.01` or `--l2 1e-3,1e-2,1e-1` (a grid).

    >>> _l2_values("1e-3,0.1")
    (0.001, 0.1)
    """
    parse = floats(0.0, low_open=True, example="1e-3,1e-2")
    try:
        values = tuple(parse(v) for v in text.split(","))
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}; pass a positive number or "
                                         "comma-separated ones") from None
    return values[0] if len(values) == 1 else values


def _tasks(text: str) -> str:
    """Suite and task names, checked against `probe.tasks`."""
    from probe.tasks import resolve_tasks

    try:
        resolve_tasks(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise ValueError(f"--layers {text!r}: pass comma-separated integers like 0,2,4") from exc


def probe_command(args: argparse.Namespace) -> None:
    """Run the sweep the arguments describe; print the table and summary; write JSON+figure."""
    from probe import layers
    from probe.layers import LayersConfig
    from workbench.analysis import check_output, report_path, write_report

    out = check_output(args.out or report_path(args.model, layers.KIND), args.overwrite,
                       inputs={"--corpus": args.corpus, "--acts": args.acts},
                       model=args.model)
    if args.acts is not None and not Path(args.acts).exists():  # it will be made: not in
        check_output(args.acts, False, {"--corpus": args.corpus}, model=args.model)  # a corpus
    cfg = LayersConfig(tasks=args.tasks, split=args.split, max_tokens=args.max_tokens,
                      max_examples=args.max_examples, layers=parse_layers(args.layers),
                      folds=args.folds, holdout=args.holdout, min_per_class=args.min_per_class,
                      seed=args.seed,
                      probe=ProbeConfig(probe=args.probe, l2=args.l2, seed=args.seed))
    report = layers.from_ref(args.model, cfg, corpus=args.corpus, acts=args.acts,
                            device=placement_of(args), progress=not args.no_progress)
    paths = write_report(report, out, layers.FIGURES, overwrite=args.overwrite)
    print(layers.table(report))
    print(report["summary"]["text"])
    print("written: " + ", ".join(str(p) for p in paths))


def main(kind: str, argv: Sequence[str] | None = None) -> int:
    """Entry of `python -m probe.<kind>`: one task (`--task`) or the whole suite."""
    from probe.tasks import SUITES

    parser = argparse.ArgumentParser(prog=f"python -m probe.{kind}",
                                     description=f"Probe {kind} tasks: {SUITES[kind]}")
    add_probe_args(parser, default_tasks=kind)
    parser.add_argument("--task", default=None, choices=SUITES[kind], help="one task only")
    args = parser.parse_args(argv)
    if args.task:
        args.tasks = args.task
    try:
        probe_command(args)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _workbench_probe_arguments(p: argparse.ArgumentParser) -> None:
    add_probe_args(p, default_tasks="syntax,semantics,facts")


PROBE = Command("probe", "per-layer probes for syntax, semantics and facts with control tasks",
                _workbench_probe_arguments, probe_command, order=60,
                on_interrupt="no report was written; an activation file being made for --acts "
                "is kept as FILE.partial and continued by the same command")

"""`workbench probe`: the flags of the per-layer probes (`probe.layers`); the command itself
is the one every analysis has (`workbench.cli.analyses`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from probe.fit import L2_GRID, ProbeConfig
from workbench.cli.analyses import AnalysisFlags, analysis_command
from workbench.cli.argtypes import bounded_int, floats, int_list, one_of, positive_int, seed


def probe_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `workbench probe` besides those every analysis has."""
    p.add_argument("--tasks", type=_tasks, default="syntax,semantics,facts",
                   help="suites syntax,semantics,facts and/or task names (pos,city,...)")
    p.add_argument("--probe", type=one_of("linear", "mlp"), default="linear",
                   help="linear | mlp")
    p.add_argument("--split", default="val", help="corpus split to probe (train | val | test)")
    p.add_argument("--max-tokens", type=positive_int, default=None,
                   help="cap on the split's tokens (default: the whole split)")
    p.add_argument("--max-examples", type=bounded_int(10), default=20_000,
                   help="rows per task")
    p.add_argument("--layers", type=int_list(0), default=None,
                   help="probe layers, e.g. 0,2,4 (default all)")
    p.add_argument("--folds", type=bounded_int(3, 100), default=5)
    p.add_argument("--holdout", type=one_of("group", "random"), default="group",
                   help="group (word types / people never on both sides) | random")
    p.add_argument("--min-per-class", type=bounded_int(2), default=10,
                   help="classes with fewer examples are left out (named in the report's "
                   "dropped_classes)")
    p.add_argument("--acts", default=None, help="activation file (.h5) to read (made by this "
                   "model from this corpus and split); made first, resumably, when it does not "
                   "exist: for activations too large for memory")
    p.add_argument("--l2", type=_l2_values, default=ProbeConfig.l2,
                   help="L2 strength, or comma-separated strengths to choose from on each "
                        f"fold's validation rows (default {','.join(map(str, L2_GRID))})")
    p.add_argument("--seed", type=seed, default=0)


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


def probe_config(args: argparse.Namespace) -> Any:
    """`LayersConfig` from the flags."""
    from probe.layers import LayersConfig

    return LayersConfig(tasks=args.tasks, split=args.split, max_tokens=args.max_tokens,
                        max_examples=args.max_examples, layers=parse_layers(args.layers),
                        folds=args.folds, holdout=args.holdout,
                        min_per_class=args.min_per_class, seed=args.seed,
                        probe=ProbeConfig(probe=args.probe, l2=args.l2, seed=args.seed))


def _acts_made(args: argparse.Namespace) -> list[str]:
    """An activation file `--acts` that does not exist yet is made: an output too."""
    return [args.acts] if args.acts is not None and not Path(args.acts).exists() else []


def probe_precheck(args: argparse.Namespace, ref: Any, corpus: Any) -> None:
    """What the probes refuse without the model: a real-text corpus (no labels), a damaged
    split, an `--acts` file that is not an activation file of this split and share."""
    if corpus is not None:
        if corpus.kind != "world":
            raise ValueError(f"corpus at {corpus.path} is a real-text corpus: it has no labels "
                             "to probe; pass --corpus with a world corpus (`workbench world "
                             "build`)")
        if args.split in corpus.splits:
            corpus.tokens(args.split)  # ids and labels checked (CRC, ranges)
            corpus.labels(args.split)
    layers = parse_layers(args.layers)
    n_layers = ref.n_layers
    if layers is not None and n_layers is not None and any(
            not 0 <= la <= n_layers for la in layers):
        raise ValueError(f"--layers {args.layers}: out of range; model {ref.text} has probe "
                         f"layers 0 (embedding) to {n_layers} (output of the last block)")
    if args.acts is not None and Path(args.acts).exists():
        from probe.rows import check_store_file

        check_store_file(args.acts, split=args.split, max_tokens=args.max_tokens)


# The dashboard runs the command with its defaults (the whole split: on the shipped model
# and world 80k tokens, about 2 minutes on 2 cores); it needs a corpus (the labels).
FLAGS = AnalysisFlags(probe_arguments, probe_config,
                      corpus_help="world corpus in the model's tokenizer (default: the run's)",
                      inputs=lambda args: {"acts": args.acts}, outputs=_acts_made,
                      precheck=probe_precheck)
PROBE = analysis_command("probe", "probe.layers", FLAGS, "per-layer probes for syntax, "
                         "semantics and facts with control tasks", order=60,
                         on_interrupt="no report was written; an activation file being made "
                         "for --acts is kept as FILE.partial and continued by the same command")

"""One command builder for every analysis: `workbench KIND` from the analysis module and the
flags its package declares.

A package declares its flags as an `AnalysisFlags` and registers
`analysis_command("package.module", flags, ...)` under `workbench.commands`; the command
body is the same for every analysis: resolve the `ModelRef` once, check the output before any
work, build the `Config` from the flags, `from_ref`, write the report and its figures, print
`summary`.

Every analysis command has `--model` and `--corpus` first, then its own flags, then
`--device` and the placement flags, `--out`, `--overwrite` and `--no-progress`.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.cli.argtypes import device
from workbench.cli.registry import Command
from workbench.models.devices import CPU_DEFAULT, add_placement_args, placement_of

if TYPE_CHECKING:
    from workbench.models.refs import ModelRef
    from workbench.world.loader import Corpus

MODEL_HELP = "run dir, checkpoint dir or HF dir"


def _no_inputs(args: argparse.Namespace) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class AnalysisFlags:
    """What an analysis package declares for its command.

    Attributes:
        add_arguments: adds the analysis' own flags (between `--corpus` and `--device`).
        config: the analysis' `Config` from the parsed flags.
        corpus_help: the help of `--corpus` (what the corpus is for).
        inputs: further `from_ref` keywords from the flags (files it reads: facts, probe
            reports, activation files); each is checked not to be overwritten by `--out`.
        outputs: further files the command may write (checked before any work like `--out`).
        dashboard: the options the dashboard runs the command with for a model of a kind
            (`run`, `hf`) with or without a corpus (None: the corpus is required).
        flag_names: the flag of each `Config` field whose name is not the flag's (`ks` of
            `--k`): a refused config names the flag the user typed.
        precheck: the analysis' own refusals that need no model (its corpus, input files,
            layer numbers from the model's config), run before the model loads.
    """

    add_arguments: Callable[[argparse.ArgumentParser], None]
    config: Callable[[argparse.Namespace], Any]
    corpus_help: str = "corpus in the model's tokenizer (default: the run's)"
    inputs: Callable[[argparse.Namespace], dict[str, Any]] = _no_inputs
    outputs: Callable[[argparse.Namespace], list[str]] = field(default=lambda args: [])
    dashboard: Callable[[str, bool], dict[str, Any] | None] = field(
        default=lambda kind, has_corpus: {} if has_corpus else None)
    flag_names: Mapping[str, str] = field(default_factory=dict)
    precheck: Callable[[argparse.Namespace, ModelRef, Corpus | None], None] | None = None

    def make_config(self, args: argparse.Namespace) -> Any:
        """`config(args)`, a refusal naming the flag rather than the config field
        (`IclConfig.ks=[3]` -> `--k [3]`)."""
        try:
            return self.config(args)
        except ValueError as exc:
            def flag(m: re.Match[str]) -> str:
                name = m.group(1)
                return self.flag_names.get(name, "--" + name.replace("_", "-")) + " "
            raise ValueError(re.sub(r"\b[A-Z]\w*Config\.(\w+)=", flag, str(exc))) from None


def add_analysis_arguments(p: argparse.ArgumentParser, kind: str, flags: AnalysisFlags) -> None:
    """Every flag of `workbench KIND`, in the order every analysis shares."""
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--corpus", default=None, help=flags.corpus_help)
    flags.add_arguments(p)
    p.add_argument("--device", type=device, default=CPU_DEFAULT)
    add_placement_args(p)
    p.add_argument("--out", default=None,
                   help=f"JSON output (default: MODEL/analyses/{kind}.json)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def check_inputs(ref: ModelRef, args: argparse.Namespace, placement: Any,
                 flags: AnalysisFlags) -> None:
    """What can be refused without the model, refused before it loads: the device, the
    corpus (its manifest; present when the analysis needs one) and the split it reads."""
    from workbench.models.checks import check_vocab
    from workbench.models.devices import check_device

    check_device(placement)
    needed = flags.dashboard("run" if ref.is_ours else "hf", False) is None
    corpus = ref.load_corpus(args.corpus) if args.corpus is not None or (
        needed and ref.is_ours) else None
    if corpus is None and needed and ref.corpus_path(args.corpus) is None:
        raise ValueError(f"model {ref.text!r} names no corpus; pass --corpus PATH "
                         f"({flags.corpus_help})")
    if flags.precheck is not None:  # the analysis' own first: its messages are the closer
        flags.precheck(args, ref, corpus)
    if corpus is not None and ref.vocab_size is not None:
        check_vocab(ref.vocab_size, corpus)
    split = getattr(args, "split", None)
    if corpus is not None and isinstance(split, str) and split not in corpus.splits:
        raise ValueError(f"--split {split!r}: the corpus at {corpus.path} has "
                         f"{', '.join(corpus.splits)}; pass one of them")


def run_analysis(module_name: str, flags: AnalysisFlags, args: argparse.Namespace) -> list[Path]:
    """The body of every analysis command; returns the paths written."""
    from workbench.analysis import check_output, write_report
    from workbench.models.refs import ModelRef

    module = importlib.import_module(module_name)
    placement = placement_of(args)  # flags first: before any file is looked at
    ref = ModelRef.of(args.model)
    ref.check_exists()
    inputs = flags.inputs(args)
    read = {"--corpus": args.corpus, **{f"--{k}": v for k, v in inputs.items()
                                          if isinstance(v, (str, Path))}}
    out = check_output(args.out or ref.report_path(module.KIND), args.overwrite, inputs=read,
                       model=ref)
    for extra in flags.outputs(args):  # files it will make: not over an input either
        check_output(extra, False, {"--corpus": args.corpus}, model=ref)
    cfg = flags.make_config(args)
    check_inputs(ref, args, placement, flags)  # before the model loads (seconds)
    report = module.from_ref(ref, cfg, corpus=args.corpus, device=placement,
                             progress=not args.no_progress, **inputs)
    paths = write_report(report, out, module.FIGURES, overwrite=args.overwrite)
    print(module.summary(report))  # noqa: T201  (the command prints its result)
    print("written: " + ", ".join(str(p) for p in paths))  # noqa: T201
    return paths


@dataclass(frozen=True)
class AnalysisRunner:
    """Runs `workbench KIND` for the analysis module `module_name` (imported when it runs, so
    `workbench --help` stays fast)."""

    module_name: str
    flags: AnalysisFlags

    def __call__(self, args: argparse.Namespace) -> list[Path]:
        return run_analysis(self.module_name, self.flags, args)


def analysis_command(kind: str, module_name: str, flags: AnalysisFlags, help: str, order: int,
                     on_interrupt: str = "nothing was written; run the command again"
                     ) -> Command:
    """`workbench KIND` for the analysis module `module_name` (whose `KIND` is `kind`)."""
    return Command(kind, help, lambda p: add_analysis_arguments(p, kind, flags),
                   AnalysisRunner(module_name, flags), order=order, on_interrupt=on_interrupt)

"""`workbench sae train` and `workbench sae eval`: sparse dictionaries of a model's
activations, and their latents scored against the world's labels."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from workbench.cli.analyses import (
    AnalysisFlags,
    AnalysisRunner,
    add_analysis_arguments,
    run_analysis,
)
from workbench.cli.argtypes import bounded_int, floats, one_of, positive_int, seed
from workbench.cli.registry import Command

ARCH_CHOICES = ("topk", "batchtopk", "matryoshka", "relu", "jumprelu")


def eval_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `workbench sae eval` besides those every analysis has."""
    p.add_argument("--sae", required=True, help="the dictionary folder (`sae train --out`)")
    p.add_argument("--split", default="val", help="corpus split read (train | val | test)")
    p.add_argument("--max-tokens", type=positive_int, default=100_000,
                   help="tokens of the split run through the model")
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="sequences per forward pass")
    p.add_argument("--tasks", default="syntax,semantics,facts",
                   help="probe suites or tasks whose labels are scored (`workbench probe`)")
    p.add_argument("--max-examples", type=bounded_int(10), default=20_000,
                   help="rows per task (a seeded subset of more)")
    p.add_argument("--dense", type=floats(0.0, 1.0, low_open=True, example="0.1"),
                   default=0.1, help="a latent active on more than this share of tokens is "
                   "dense")
    p.add_argument("--seed", type=seed, default=0)


def eval_config(args: argparse.Namespace) -> Any:
    from features.evaluate import Config
    from probe.tasks import resolve_tasks

    resolve_tasks(args.tasks)  # an unknown task: one line before anything loads
    return Config(sae=args.sae, split=args.split, max_tokens=args.max_tokens,
                  batch_size=args.batch_size, tasks=args.tasks,
                  max_examples=args.max_examples, dense=args.dense, seed=args.seed)


def _eval_precheck(args: argparse.Namespace, ref: Any, corpus: Any) -> None:
    from features.io import load_dictionary

    load_dictionary(args.sae)  # missing, damaged: before the model loads


FLAGS = AnalysisFlags(eval_arguments, eval_config,
                      corpus_help="the model's world corpus (default: the run's)",
                      inputs=lambda args: {}, precheck=_eval_precheck,
                      dashboard=lambda kind, has_corpus: None)


def train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run dir, checkpoint dir or HF dir")
    p.add_argument("--corpus", default=None, help="the model's corpus (default: the run's)")
    p.add_argument("--hook", required=True, help="the activation read, a TransformerLens "
                   "hook name (blocks.2.hook_resid_post)")
    p.add_argument("--target", default=None, help="a transcoder's output hook (e.g. "
                   "blocks.2.hook_mlp_out with --hook blocks.2.ln2.hook_normalized)")
    p.add_argument("--acts", default=None, help="activation file (.h5, `workbench cache "
                   "--positions all`) holding the hook; made first, resumably, when it does "
                   "not exist (default: a temporary one inside OUT.partial, deleted at the end)")
    p.add_argument("--split", default="train", help="the split the activations are made of")
    p.add_argument("--arch", type=one_of(*ARCH_CHOICES), default="topk",
                   help=" | ".join(ARCH_CHOICES))
    p.add_argument("--expansion", type=bounded_int(1, 256), default=16,
                   help="latents per input dimension (1-256)")
    p.add_argument("--k", type=positive_int, default=32,
                   help="active latents per row (topk, batchtopk, matryoshka)")
    p.add_argument("--sparsity", type=floats(0.0, low_open=True, example="0.02"), default=None,
                   help="L1 (relu) or L0 (jumprelu) coefficient (default 0.1 / 0.05; raise it "
                   "for a lower L0)")
    p.add_argument("--tokens", type=positive_int, default=10_000_000,
                   help="rows trained on (more than the file holds: several epochs)")
    p.add_argument("--batch-size", type=positive_int, default=4096)
    p.add_argument("--lr", type=floats(0.0, low_open=True, example="5e-4"), default=None,
                   help="Adam learning rate (default 2e-4 x sqrt(16384 / latents))")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", required=True, help="the dictionary folder written")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted training in OUT.partial")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def run_train(args: argparse.Namespace) -> list[Path]:
    """`workbench sae train`: check everything, make the activations if needed, train."""
    from features.acts import dictionary_meta, open_activations
    from features.train import TrainConfig, dictionary_config, train_dictionary
    from workbench.models.refs import ModelRef
    from workbench.outputs import check_writable

    cfg = TrainConfig(arch=args.arch, expansion=args.expansion, k=args.k,
                      sparsity=args.sparsity, tokens=args.tokens, batch_size=args.batch_size,
                      lr=args.lr, seed=args.seed)
    out = Path(args.out)
    partial = out.with_name(out.name + ".partial")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if partial.exists() and not (args.resume or args.overwrite):
        raise FileExistsError(f"an interrupted training left {partial}: pass --resume to "
                              "finish it, or --overwrite to start again")
    check_writable(out)
    ref = ModelRef.of(args.model)
    ref.check_exists()
    corpus = ref.load_corpus(args.corpus, required="the corpus whose activations are read")
    if args.split not in corpus.splits:
        raise ValueError(f"--split {args.split!r}: the corpus at {corpus.path} has "
                         f"{', '.join(corpus.splits)}; pass one of them")
    model = ref.load("cpu")
    hooks = [args.hook] + ([args.target] if args.target else [])
    for name in hooks:
        if name not in model.hook_dict:
            last = model.cfg.n_layers - 1
            raise ValueError(f"hook {name!r} is not in this model; pass a TransformerLens "
                             f"hook name such as blocks.{last}.hook_resid_post or "
                             f"blocks.0.mlp.hook_in (blocks 0-{last})")
    d_in = int(model.cfg.d_model) if "resid" in args.hook else None
    if d_in is not None:
        dictionary_config(cfg, d_in, None)  # --k against the latents, before any work
    if args.overwrite and partial.exists() and not args.resume:
        shutil.rmtree(partial)
    store = open_activations(model, corpus, hooks,
                             Path(args.acts) if args.acts else partial / "acts.h5",
                             split=args.split, tokens=cfg.tokens, model_ref=ref.text,
                             progress=not args.no_progress)
    sources = [store.dataset(h) for h in hooks]
    dictionary_config(cfg, int(sources[0].shape[-1]),
                      int(sources[1].shape[-1]) if args.target else None)
    meta = dictionary_meta(model, ref.text, corpus, store, args.hook, args.target)
    try:
        final = train_dictionary(sources, cfg, out, meta=meta, resume=args.resume,
                                 progress=not args.no_progress)
    finally:
        store.close()
    print(f"{cfg.arch} dictionary, {cfg.expansion * sources[0].shape[-1]} latents at "
          f"{args.hook}: FVU {final['fvu']:.4f}, L0 {final['l0']:.1f} on the last batch, "
          f"{final['dead']} dead, {final['rows_per_s']:,.0f} rows/s")
    print(f"written: {out} (cfg.json, sae_weights.safetensors: SAELens' layout)")
    return [out]


def compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sae", nargs=2, required=True, metavar=("A", "B"),
                   help="two dictionary folders of the same hook (e.g. two --seed)")
    p.add_argument("--reports", nargs=2, default=None, metavar=("RA", "RB"),
                   help="their `sae eval` reports: also check the label latents align")
    p.add_argument("--threshold", type=floats(0.0, 1.0, example="0.9"), default=0.9,
                   help="decoder cosine at which two latents are the same")
    p.add_argument("--out", required=True, help="the JSON record written")
    p.add_argument("--overwrite", action="store_true")


def run_compare(args: argparse.Namespace) -> list[Path]:
    """`workbench sae compare`: match two dictionaries' latents."""
    from features.stability import compare, summary
    from workbench.analysis import check_output
    from workbench.models.checkpoints import write_json_atomic

    out = check_output(args.out, args.overwrite, inputs={
        "--sae": args.sae[0], "--sae B": args.sae[1],
        **({"--reports": args.reports[0], "--reports B": args.reports[1]}
           if args.reports else {})})
    for path in args.reports or ():
        if not Path(path).is_file():
            raise FileNotFoundError(f"--reports {path} does not exist; make it with `workbench "
                                    "sae eval --sae DIR --out FILE`")
    record = compare(args.sae[0], args.sae[1], *(args.reports or (None, None)),
                     threshold=args.threshold)
    write_json_atomic(out, record)
    print(summary(record))
    print(f"written: {out}")
    return [out]


def _arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="sae_command", metavar="{train,eval,compare}", required=True)
    train_arguments(sub.add_parser(
        "train", help="train a sparse autoencoder or transcoder on a hook's activations"))
    evaluate = sub.add_parser(
        "eval", help="reconstruction, loss recovered and planted labels recovered by single "
        "latents")
    add_analysis_arguments(evaluate, "sae", FLAGS)
    for action in evaluate._actions:
        if action.dest == "out":
            action.help = "JSON output (default: SAE/sae.json, beside the dictionary)"
    compare_arguments(sub.add_parser(
        "compare", help="how many latents two trainings share (decoder cosine), and whether "
        "the same planted labels find the same latents"))


class SaeRunner(AnalysisRunner):
    """`workbench sae train` or `workbench sae eval`."""

    def __call__(self, args: argparse.Namespace) -> list[Path]:
        if args.sae_command == "train":
            return run_train(args)
        if args.sae_command == "compare":
            return run_compare(args)
        if args.out is None:  # the report lives with its dictionary
            from features.io import REPORT

            args.out = str(Path(args.sae) / REPORT)
        return run_analysis(self.module_name, self.flags, args)


SAE = Command(
    "sae", "sparse autoencoders and transcoders: train on stored activations, score their "
    "latents against the world's planted labels",
    _arguments, SaeRunner("features.evaluate", FLAGS), order=76,
    on_interrupt="training keeps its checkpoint in OUT.partial: run it again with --resume")

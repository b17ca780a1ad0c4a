"""`workbench` command line: the core's subcommands (world, train, eval, cache, info, export) and
`main`. Each subcommand parses arguments into a config and calls one library function; user
errors print one line (`workbench: error: ...`) and exit 2. The analyses' subcommands are
registered by their packages (`workbench.cli.registry`): the core imports none of them."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workbench.cli import registry as commands
from workbench.cli.argtypes import (
    bounded_int,
    device,
    floats,
    name_list,
    nonneg_int,
    one_of,
    positive_int,
    seed,
)
from workbench.cli.oneline import empty_path_flag, hold_library_warnings, one_line
from workbench.cli.registry import Command
from workbench.layout import RUN_JSON
from workbench.models.checks import (
    check_memory,
    check_split,
    check_tokenizer,
    check_vocab,
    train_bytes,
)
from workbench.models.devices import (
    CPU_DEFAULT,
    add_placement_args,
    check_device,
    placement_of,
)

DEFAULT_CORPUS = "runs/world"
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, OSError)


def _cmd_world_build(args: argparse.Namespace) -> None:
    from workbench.outputs import check_separate, check_writable
    from workbench.world import WorldConfig, build_corpus, build_text_corpus

    out = Path(args.out)
    for f in args.text or ():
        check_separate(out, {"--text": f})
    check_separate(out, {"--tokenizer": args.tokenizer})
    check_writable(out)
    if args.vocab_size is not None and not args.text:
        raise ValueError(f"--vocab-size {args.vocab_size} without --text: a world's vocabulary "
                         "is its words; pass --text FILE to train a BPE of that size, or leave "
                         "--vocab-size out")
    if args.text:
        path = build_text_corpus(
            [Path(f) for f in args.text], out, vocab_size=args.vocab_size or 4096,
            overwrite=args.overwrite, tokenizer=args.tokenizer,
        )
    elif args.tokenizer:
        raise ValueError(
            f"--tokenizer {args.tokenizer} without --text: to encode the world for a model's "
            f"tokenizer, build it, then `workbench world retokenize --corpus {out} --tokenizer "
            f"{args.tokenizer} --out {out}-MODEL`")
    else:
        overrides = {"seed": args.seed}
        for name in ("n_people", "exposure_ratio", "p_country_stated"):
            if getattr(args, name) is not None:
                overrides[name] = getattr(args, name)
        kwargs = {} if args.tokens is None else {"n_tokens_train": args.tokens}
        path = build_corpus(WorldConfig(**overrides), out, overwrite=args.overwrite, **kwargs)
    manifest = json.loads((Path(path) / "corpus.json").read_text())
    splits = ", ".join(f"{k} {v['n_tokens']:,} tokens" for k, v in manifest["splits"].items())
    print(
        f"corpus written to {path} ({manifest['kind']}; vocab {manifest['vocab_size']}; {splits})"
    )


def _cmd_world_retokenize(args: argparse.Namespace) -> None:
    from workbench.outputs import check_separate, check_writable
    from workbench.world.retokenize import retokenize_corpus

    check_separate(args.out, {"--corpus": args.corpus, "--tokenizer": args.tokenizer})
    check_writable(args.out)
    splits = tuple(x for x in args.splits.split(",") if x) if args.splits else None
    path = retokenize_corpus(args.corpus, args.tokenizer, args.out, splits,
                             overwrite=args.overwrite, progress=not args.no_progress)
    manifest = json.loads((Path(path) / "corpus.json").read_text())
    sizes = ", ".join(f"{k} {v['n_tokens']:,} tokens" for k, v in manifest["splits"].items())
    print(f"corpus written to {path} (world, vocab {manifest['vocab_size']}; {sizes})")


def _cmd_train(args: argparse.Namespace) -> None:
    from workbench.models.config import TRAIN_PRESETS, get_preset
    from workbench.outputs import check_replaceable, check_separate, check_writable
    from workbench.training.trainer import train
    from workbench.world import load_corpus

    _one_of_resume_overwrite(args)
    check_separate(args.run, {"--corpus": args.corpus})
    check_writable(Path(args.run) / RUN_JSON)
    model_cfg = get_preset(args.preset)
    if args.seed is not None:
        model_cfg = model_cfg.replace(seed=args.seed)
    train_cfg = TRAIN_PRESETS[args.preset].replace(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    if args.overwrite and Path(args.run).is_dir() and any(Path(args.run).iterdir()):
        check_replaceable(args.run, "run")  # before the corpus is read (train checks again)
    corpus = load_corpus(Path(args.corpus))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    check_memory(train_bytes(model_cfg.replace(d_vocab=corpus.vocab_size),
                             train_cfg.batch_size, world_size), "--batch-size",
                 train_cfg.batch_size)
    result = train(
        model_cfg,
        args.corpus,
        args.run,
        train_cfg,
        device=args.device,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        val = ("none (the corpus has no validation tokens)"
               if math.isnan(result.final_val_loss) else f"{result.final_val_loss:.3f}")
        print(
            f"trained {args.preset} for {result.steps} steps in {result.seconds:.0f}s: "
            f"loss {result.final_loss:.3f}, val loss {val}, "
            f"{result.tokens_per_s:,.0f} tokens/s -> {result.run_dir}"
        )


def _cmd_eval(args: argparse.Namespace) -> None:
    from workbench.analysis import check_output, write_report
    from workbench.evaluate import EvalConfig, evaluate
    from workbench.layout import EVAL_JSON
    from workbench.models.refs import ModelRef
    from workbench.plots import eval_figure

    placement = placement_of(args)  # flags first: before any file is looked at
    ref = ModelRef.of(args.model)
    ref.check_exists()
    check_device(placement)
    out = Path(args.out) if args.out else ref.output_dir / EVAL_JSON
    check_output(out, True, {"--corpus": args.corpus}, model=ref)  # ours: replaced
    corpus = ref.load_corpus(args.corpus, required="a world corpus from `workbench world build`")
    if ref.vocab_size is not None:
        check_vocab(ref.vocab_size, corpus)
    model = ref.load(placement)
    check_tokenizer(model, corpus)
    results = evaluate(
        model,
        corpus,
        EvalConfig(seed=args.seed),
        model_ref=str(args.model),
        progress=not args.no_progress,
    )
    write_report(results, out, {".fig.json": eval_figure}, overwrite=True)
    for name, m in results["metrics"].items():
        extra = (
            f" (among candidates {m['among_candidates']:.3f})" if "among_candidates" in m else ""
        )
        if "goal" not in m:
            print(f"{name:22s} {m['value']:.3f}{extra}  (measured, no goal)")
            continue
        mark = {True: "ok", False: "BELOW GOAL", None: "no items"}[m["meets_goal"]]
        sign = ">=" if m["direction"] == "higher" else "<="
        print(f"{name:22s} {m['value']:.3f}{extra}  goal {sign} {m['goal']}  {mark}")
        for bucket, b in m.get("by_bucket", {}).items():
            print(f"  exposure {bucket:12s} {b['value']:.3f}  (n={b['n']})")
    print(f"results written to {out}")


def _cmd_cache(args: argparse.Namespace) -> None:
    from workbench.cache.plan import cache_bytes
    from workbench.cache.store import CacheConfig, cache_activations
    from workbench.hooks import resolve_hooks
    from workbench.models.refs import ModelRef
    from workbench.outputs import check_replaceable_file, check_separate, check_writable
    from workbench.training.distributed import shard_of_this_process
    from workbench.world import load_corpus

    _one_of_resume_overwrite(args)
    placement = placement_of(args)
    check_separate(args.out, {"--corpus": args.corpus}, containers={"--model": args.model})
    check_writable(args.out)
    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; pass the activation file to write, "
                         f"e.g. --out {Path(args.out) / 'acts.h5'}")
    if args.overwrite:
        check_replaceable_file(args.out, "activations")
    cfg = CacheConfig(hooks=tuple(args.hooks), split=args.split, positions=args.positions,
                      dtype=args.dtype, max_tokens=args.max_tokens, batch_size=args.batch_size,
                      chunk=args.chunk, compression=args.compression)
    if Path(args.out).exists() and not (args.overwrite or args.resume):
        raise FileExistsError(f"{args.out} already exists; pass --overwrite to replace it")
    ref = ModelRef.of(args.model)
    ref.check_exists()
    check_device(placement)
    # the run's own corpus unless one is named (a Hugging Face model names none)
    corpus = load_corpus(ref.corpus_path(args.corpus) or Path(DEFAULT_CORPUS))
    check_split(corpus, args.split)
    if ref.vocab_size is not None:
        check_vocab(ref.vocab_size, corpus)
    corpus.tokens(args.split)  # token ids and labels checked before the model loads
    if corpus.kind == "world":
        corpus.labels(args.split)
    model = ref.load(placement)
    check_vocab(model, corpus)
    hooks = resolve_hooks(model, list(args.hooks))
    check_memory(cache_bytes(model, args.batch_size, hooks), "--batch-size", args.batch_size)
    rank, world_size = shard_of_this_process()
    out = Path(args.out)
    if world_size > 1:
        from workbench.cache.join import cache_sharded

        path = cache_sharded(model, corpus, cfg, out, model_ref=str(args.model),
                             resume=args.resume, overwrite=args.overwrite,
                             progress=not args.no_progress)
    else:
        path = cache_activations(model, corpus, cfg, out, model_ref=str(args.model),
                                 resume=args.resume, overwrite=args.overwrite,
                                 progress=not args.no_progress)
    if rank == 0:
        from workbench.cache.store import ActivationStore

        with ActivationStore(path) as store:
            shapes = ", ".join(f"{h} {list(store.shape(h))}" for h in store.hooks)
            n_rows = len(store)
        print(f"cached {n_rows:,} rows to {path}: {shapes}")


def _one_of_resume_overwrite(args: argparse.Namespace) -> None:
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite together: --resume continues the job, "
                         "--overwrite deletes it and starts again; pass one of them")


def _cmd_info(args: argparse.Namespace) -> None:
    from workbench.models.refs import ModelRef

    ModelRef.of(args.model).check_exists()  # before the loader is imported (seconds)
    from workbench.models.info import model_card

    print(model_card(args.model))


def _cmd_export(args: argparse.Namespace) -> None:
    from workbench.models.export import check_out, export_hf
    from workbench.models.refs import ModelRef
    from workbench.outputs import check_separate, check_writable

    ref = ModelRef.of(args.model)
    ref.check_exists()
    check_separate(args.out, {"--model": args.model, "--model's run": ref.run_dir})
    check_writable(args.out)
    check_out(args.out, args.overwrite)  # before the model loads
    if args.step is not None and ref.run_dir is not None:
        ref.select(str(args.step))  # a step the run has
    out = export_hf(args.model, args.out, overwrite=args.overwrite, step=args.step)
    meta = json.loads((out / "config.json").read_text())["workbench_export"]
    print(f"exported {meta['source']} (step {meta['step']}) as GPT2LMHeadModel to {out}: "
          f"max |logit difference| {meta['max_abs_logit_diff']:.2g} on {meta['checked_on']}")


def _world_arguments(p: argparse.ArgumentParser) -> None:
    world_sub = p.add_subparsers(dest="world_command", required=True)
    build = world_sub.add_parser("build", help="build a corpus (world by default, or --text)")
    build.add_argument("--seed", type=seed, default=0)
    build.add_argument("--out", default=DEFAULT_CORPUS, help=f"output dir ({DEFAULT_CORPUS})")
    build.add_argument("--n-people", type=bounded_int(2, 1_000_000), default=None)
    build.add_argument("--exposure-ratio", type=floats(1.0, 1e9), default=None,
                       help="exposure of the most- over the least-mentioned person (100; 1 = "
                       "every person equally often)")
    build.add_argument("--country-stated", dest="p_country_stated", type=floats(0.0, 1.0),
                       default=None, help="share of people whose country is stated (0.5; the "
                       "others' are two-hop facts)")
    build.add_argument("--tokens", type=positive_int, default=None,
                       help="training tokens to generate")
    build.add_argument(
        "--text",
        nargs="+",
        metavar="FILE",
        help="plain-text files: train a BPE tokenizer and encode them instead of the world",
    )
    build.add_argument("--vocab-size", type=bounded_int(64, 1_000_000), default=None,
                       help="BPE size for --text (4096)")
    build.add_argument("--tokenizer", default=None, help="with --text: encode with this "
                       "tokenizer.json or Hugging Face model dir instead of training BPE")
    build.add_argument("--overwrite", action="store_true")
    rt = world_sub.add_parser("retokenize", help="re-encode a world corpus with a model's "
                              "tokenizer (labels on the last sub-token of each word)")
    rt.add_argument("--corpus", default=DEFAULT_CORPUS, help="world corpus to re-encode")
    rt.add_argument("--tokenizer", required=True,
                    help="tokenizer.json or Hugging Face model directory")
    rt.add_argument("--out", required=True, help="output corpus directory")
    rt.add_argument("--splits", type=name_list(), default=None,
                    help="e.g. val,test (default: all)")
    rt.add_argument("--overwrite", action="store_true")
    rt.add_argument("--no-progress", action="store_true")


def _cmd_world(args: argparse.Namespace) -> None:
    {"build": _cmd_world_build, "retokenize": _cmd_world_retokenize}[args.world_command](args)


def _train_arguments(tr: argparse.ArgumentParser) -> None:
    tr.add_argument("--preset", type=one_of("tiny", "attn2", "default", "small"),
                    default="default", help="tiny | attn2 | default | small")
    # --run-dir: the same option under torchrun, whose own parser would take `--run`
    tr.add_argument("--run", "--run-dir", dest="run", required=True,
                    help="run directory, e.g. runs/demo")
    tr.add_argument("--corpus", default=DEFAULT_CORPUS)
    tr.add_argument("--steps", type=bounded_int(1, 10**8), default=None)
    tr.add_argument("--batch-size", type=positive_int, default=None, help="global batch size")
    tr.add_argument("--lr", type=floats(0.0, 1.0, low_open=True, example="2e-3"),
                    default=None)
    tr.add_argument("--seed", type=seed, default=None)
    tr.add_argument("--device", type=device, default="auto", help="auto | cpu | cuda")
    tr.add_argument("--resume", action="store_true", help="continue an interrupted run")
    tr.add_argument("--overwrite", action="store_true", help="delete the run dir first")
    tr.add_argument("--no-progress", action="store_true")


def _eval_arguments(ev: argparse.ArgumentParser) -> None:
    ev.add_argument("--model", required=True, help="run dir, checkpoint dir or HF dir")
    ev.add_argument("--corpus", default=None, help="world corpus (default: the run's)")
    ev.add_argument("--out", default=None, help="JSON output (default: MODEL/eval.json)")
    ev.add_argument("--device", type=device, default=CPU_DEFAULT)
    add_placement_args(ev)
    ev.add_argument("--seed", type=seed, default=0)
    ev.add_argument("--no-progress", action="store_true")


def _cache_arguments(ca: argparse.ArgumentParser) -> None:
    ca.add_argument("--model", required=True)
    ca.add_argument("--corpus", default=None,
                    help=f"world corpus (default: the run's; {DEFAULT_CORPUS} for a model "
                         "that names none)")
    ca.add_argument("--hooks", nargs="+", required=True, metavar="PATTERN",
                    help="TransformerLens hook names or globs, e.g. 'blocks.*.hook_resid_post'")
    ca.add_argument("--out", required=True, help="output .h5 file")
    ca.add_argument("--split", default="val", help="train | val | test")
    ca.add_argument("--positions", type=one_of("all", "last", "word-final"), default="all",
                    help="all | last | word-final")
    ca.add_argument("--dtype", type=one_of("float32", "float16"), default="float32",
                    help="float32 | float16")
    ca.add_argument("--max-tokens", type=positive_int, default=None)
    ca.add_argument("--batch-size", type=positive_int, default=16,
                    help="sequences per forward pass")
    ca.add_argument("--chunk", action="store_true", help="split documents longer than n_ctx")
    ca.add_argument("--compression", type=one_of("gzip", "lzf"), default=None,
                    help="gzip | lzf (default: none)")
    ca.add_argument("--device", type=device, default=CPU_DEFAULT)
    add_placement_args(ca)
    ca.add_argument("--resume", action="store_true", help="continue an interrupted cache")
    ca.add_argument("--overwrite", action="store_true")
    ca.add_argument("--no-progress", action="store_true")


def _info_arguments(info: argparse.ArgumentParser) -> None:
    info.add_argument("--model", required=True)


EXPORT_HELP = ("write a native run as a Hugging Face GPT2LMHeadModel directory (safetensors + "
               "tokenizer) that AutoModelForCausalLM.from_pretrained and workbench.load "
               "read. GPT-2's lm_head has no bias: the exported final LayerNorm has unit weight "
               "and unit bias, and the trained ln_final weight and bias and the unembedding "
               "bias are folded into lm_head.weight (exact: the normalised vector has mean "
               "zero); the logits are checked against the run's before anything is written. "
               "Attention-only models and n_heads * d_head != d_model are refused")


def _export_arguments(ex: argparse.ArgumentParser) -> None:
    ex.description = EXPORT_HELP
    ex.add_argument("--model", required=True, help="run directory or checkpoint directory")
    ex.add_argument("--out", required=True, help="output directory (new or empty)")
    ex.add_argument("--step", type=nonneg_int, default=None,
                    help="checkpoint step of a run directory (default: the latest)")
    ex.add_argument("--overwrite", action="store_true", help="replace an earlier export")


# The core's own subcommands; the analyses register theirs (`workbench.cli.registry`).
WORLD = Command("world", "synthetic world and text corpora", _world_arguments, _cmd_world,
                order=10, on_interrupt="nothing was written (a corpus is built in a temporary "
                "directory and moved into place when complete); run the command again")
TRAIN = Command("train", "train a native model on a corpus", _train_arguments, _cmd_train,
                order=20, on_interrupt="the checkpoints written so far are kept; continue "
                "with the same command and --resume")
EVAL = Command("eval", "fact recall, agreement and induction of a model", _eval_arguments,
               _cmd_eval, order=30)
CACHE = Command("cache", "stream activations of a corpus split to HDF5", _cache_arguments,
                _cmd_cache, order=40, on_interrupt="the rows written so far are kept in "
                "OUT.partial; continue with the same command and --resume")
INFO = Command("info", "print a model card", _info_arguments, _cmd_info, order=80)
EXPORT = Command("export", "write a native run as a Hugging Face GPT-2 checkpoint "
                 "(unembedding bias folded into lm_head)", _export_arguments, _cmd_export,
                 order=85, on_interrupt="nothing was written (the export is written in a "
                 "temporary directory and moved into place when complete); run it again")


def build_parser() -> argparse.ArgumentParser:
    """The `workbench` parser: every registered command (`workbench.cli.registry`)."""
    return commands.build_parser()

def main(argv: Sequence[str] | None = None) -> int:
    """`workbench ARGS`: the exit status (0 done, 2 bad input, 130 interrupted, 1 a bug)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before a command started (while starting up)
        print("\nworkbench: interrupted while starting; nothing was written", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    try:
        parser = build_parser()
    except ValueError as exc:  # no commands registered, or two with one name
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error, already printed in one line (2)
        return int(exc.code or 0)
    empty = empty_path_flag(args)
    if empty:
        print(f"workbench {args.command}: error: {empty} is empty; pass a path (e.g. "
              f"{empty} runs/NAME)", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    held = None if args.verbose else hold_library_warnings()
    func: Callable[[argparse.Namespace], Any] = args.func
    try:
        func(args)
        if held is not None:
            held.release(show=True)
    except KeyboardInterrupt:
        print(f"\nworkbench {args.command}: interrupted; {args.on_interrupt}", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if args.verbose:
            raise
        print(f"workbench: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not bad input: say so in one line (-v for the trace)
        if args.verbose:
            raise
        print(f"workbench {args.command}: internal error: {type(exc).__name__}: "
              f"{one_line(exc)} (rerun with -v for the traceback, and please report it)",
              file=sys.stderr)
        return 1
    finally:
        if held is not None:
            held.release(show=False)  # a failed command: the one line, nothing before it
    return 0


if __name__ == "__main__":
    sys.exit(main())

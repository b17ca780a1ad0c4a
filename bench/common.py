"""What the benchmarks share: the model under test, loaded or freshly initialised."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def bench_model(model_ref: str | None, preset: str,
                corpus_path: str | Path | None) -> tuple[Any, Any]:
    """`(model, corpus)`: `load(model_ref)` when given, else a randomly initialised `preset`
    bridge with the corpus' tokenizer. The corpus is None when no path is given (a loaded
    model needs none)."""
    from workbench.models.loader import build_bridge, load
    from workbench.world import load_corpus

    corpus = load_corpus(corpus_path) if corpus_path is not None else None
    if model_ref:
        return load(model_ref), corpus
    if corpus is None:
        raise ValueError("a random model needs a corpus for its tokenizer")
    from workbench.models.config import get_preset
    from workbench.world.tokenizer_files import load_hf_tokenizer

    cfg = get_preset(preset).replace(d_vocab=corpus.vocab_size)
    return build_bridge(cfg, tokenizer=load_hf_tokenizer(corpus.tokenizer_path)), corpus


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds `fn()` takes (CUDA work finished), and what it returns."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def agreement(what: str, diff: dict[str, float], tolerance: float) -> bool:
    """Print the largest of `diff` (per-part maxima of `|a - b|`) against the goal `tolerance`
    as `max |what| = ...`; whether the goal is met."""
    worst = max(diff.values())
    ok = worst <= tolerance
    per = ", ".join(f"{name} {d:.2e}" for name, d in diff.items())
    print(f"max |{what}| = {worst:.2e} ({per}) (goal <= {tolerance:.0e}: "
          f"{'met' if ok else 'NOT met'})")
    return ok


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """`--model`, `--preset`, `--corpus`: the model a benchmark measures."""
    parser.add_argument("--model", default=None, help="model ref (default: random `preset`)")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--corpus", default=None,
                        help="world corpus for the random model's tokenizer (default: a new one)")


def model_from_args(args: argparse.Namespace) -> Any:
    """The model of `add_model_args`: loaded, or a random `preset` with the tokenizer of
    `--corpus` (else of a small world corpus built in a temporary folder)."""
    from workbench.world import WorldConfig, build_corpus

    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus
        if corpus is None and not args.model:  # a random model takes a corpus' tokenizer
            corpus = build_corpus(WorldConfig(seed=0), Path(tmp) / "world",
                                  n_tokens_train=50_000, progress=False)
        return bench_model(args.model, args.preset, corpus)[0]

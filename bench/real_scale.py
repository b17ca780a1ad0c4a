"""Realistic scale on CPU: every analysis on GPT-2-small- and Pythia-160M-shaped models.

Builds (seeded, random weights, offline) in `--workdir` (default: a temporary folder):

- a world corpus (`build_corpus`, seed 0, `--world-tokens` training tokens) and a byte-level
  BPE tokenizer trained on its text (`--bpe-vocab`, a few thousand at most: the world has
  few words);
- `gpt2`: `GPT2LMHeadModel` of GPT-2 small's shape (12 layers, d_model 768, 12 heads,
  n_positions 1024, vocab 50257, 124M parameters);
- `pythia`: `GPTNeoXForCausalLM` of Pythia-160M's shape (12 layers, d_model 768, 12 heads,
  rotary on a quarter of each head, parallel residual, vocab 50304, untied unembedding);
- `llama1b` (for a GPU: `--device cuda --model-dtype bfloat16`): `LlamaForCausalLM` of a
  ~1.1B-parameter Llama shape (16 layers, d_model 2048, 32 query / 8 key-value heads,
  gated MLP 8192, vocab 32000, untied), saved in bfloat16;
- the world re-encoded with the BPE (`retokenize_corpus`; the models share the tokenizer,
  so they share the corpus).

Each analysis then runs in its own subprocess, so its peak RSS (`os.wait4`'s `ru_maxrss`) is
that analysis' alone, with `--threads` threads and the settings a user would pick:

- `load`: load the model and run one forward pass of 16 x 256 tokens (the baseline: every
  row's time is also printed as a multiple of that forward pass, `x fwd`);
- `induction`: `workbench induction --n-seqs 16` (`--induction-seqs`; sequences of 256
  tokens with BOS);
- `cache`: `workbench cache` of `--cache-tokens` training tokens of `--cache-hooks`;
- `probe`: `workbench probe` over the first `--probe-tokens` tokens of the re-encoded world's
  val split (40,000 of its 80,000 by default: every task still has ten examples per class;
  the forward pass over all 80,000 alone takes about four minutes on two cores at GPT-2
  small's size) and at most `--probe-examples` rows per task (5,000 by default, the
  command's own default is 20,000: fitting 13 layers x 5 folds x 5 L2 strengths of
  768-wide probes over 20,000 rows is most of ten minutes there), its other defaults;
- `beliefs`: `workbench beliefs --n 10 --method rome,ft --layer 6`;
- `memit`: `workbench beliefs --method memit --regimes batch --batch-sizes 10 --layer 6
  --memit-layers 4,5,6`: one MEMIT edit of 10 cities at once over three layers (their key
  covariances from one pass over 100,000 tokens);
- `sae`: `workbench sae train` of a 16x TopK dictionary (12,288 latents, k 32) on
  `--sae-tokens` rows of block 5's output, its activations cached on the fly to HDF5 and
  streamed from there (peak RSS: not the activations);
- `trace`: `circuits.tracing.causal_trace` of one prompt with its defaults;
- `circuit`: `workbench circuit --task facts --method eap-ig --n-pairs 32` (32,000 edges:
  no exact truth, which would be one pass per edge; the faithfulness curve and the circuit
  are most of its time).

Prints one table row per (model, analysis): wall seconds (import and load included), the
multiple of the forward pass, peak RSS (and peak GPU memory on CUDA), and the verdict against
the target (<= 300 s and <= 8 GiB of RSS); writes the table as JSON to `--json` (`--compare`
an earlier one to print its numbers beside). Exits non-zero when a target is missed.

    python bench/real_scale.py [--models gpt2,pythia] [--analyses induction,cache,...]
        [--threads 1] [--workdir DIR] [--json runs/bench/real_scale.json] [--compare OLD.json]
    python bench/real_scale.py --models llama1b --device cuda --model-dtype bfloat16
        --threads 8 --json runs/bench/real_scale_cuda.json          # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS = ("gpt2", "pythia", "llama1b")
CPU_MODELS = ("gpt2", "pythia")  # the default set
ANALYSES = ("load", "induction", "cache", "probe", "beliefs", "memit", "trace", "sae",
            "circuit")
TARGET_S, TARGET_GIB = 300.0, 8.0
FWD_SHAPE = (16, 256)  # the baseline forward pass: the induction analysis' inputs
PROMPT, SUBJECT = "did you know ? cleo eklund lives in", "cleo eklund"


# ---- building the models and the corpus (once per work folder) ----------------------------

def _world(workdir: Path, n_tokens: int) -> Path:
    from workbench.world import WorldConfig, build_corpus

    out = workdir / "world"
    if not (out / "corpus.json").exists():
        # val and test as large as the default world's (80k tokens), train smaller
        build_corpus(WorldConfig(seed=0), out, n_tokens_train=n_tokens,
                     eval_fraction=80_000 / n_tokens, progress=False)
    return out


def _bpe(world: Path, vocab_size: int) -> Any:
    """A GPT-2-style byte-level BPE trained on the world's text (`PreTrainedTokenizerFast`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from workbench.world import load_corpus
    from workbench.world.tokenizer_files import load_hf_tokenizer

    corpus = load_corpus(world)
    world_tok = load_hf_tokenizer(corpus.tokenizer_path)
    ids = corpus.tokens("train")[:400_000].tolist()
    text = [world_tok.decode(ids[i:i + 256], skip_special_tokens=True)
            for i in range(0, len(ids), 256)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>")


def _hf_model(name: str, eot: int) -> Any:
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    if name == "llama1b":  # a ~1.1B Llama shape (TinyLlama-like, untied)
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=32000, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048,
            tie_word_embeddings=False, bos_token_id=eot, eos_token_id=eot))
    if name == "gpt2":  # GPT-2 small
        return GPT2LMHeadModel(GPT2Config(
            vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
            bos_token_id=eot, eos_token_id=eot))
    return GPTNeoXForCausalLM(GPTNeoXConfig(  # Pythia-160M
        vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, rotary_pct=0.25, max_position_embeddings=2048,
        use_parallel_residual=True, tie_word_embeddings=False, bos_token_id=eot,
        eos_token_id=eot))


def prepare(workdir: Path, models: list[str], world_tokens: int, bpe_vocab: int
            ) -> tuple[dict[str, Path], Path]:
    """The model folders and the re-encoded corpus, built when not already in `workdir`."""
    import torch

    from workbench.world.retokenize import retokenize_corpus

    world = _world(workdir, world_tokens)
    dirs = {m: workdir / m for m in models}
    tok = None
    for i, (name, path) in enumerate(dirs.items()):
        if (path / "config.json").exists():
            continue
        tok = tok or _bpe(world, bpe_vocab)
        torch.manual_seed(i)
        model = _hf_model(name, tok.convert_tokens_to_ids("<|endoftext|>")).eval()
        if name == "llama1b":  # as such checkpoints ship (and half the disk)
            model = model.to(torch.bfloat16)
        model.save_pretrained(path)
        tok.save_pretrained(path)
        del model
    corpus = workdir / "world-bpe"
    if not (corpus / "corpus.json").exists():
        retokenize_corpus(world, next(iter(dirs.values())), corpus, progress=False)
    return dirs, corpus


# ---- one analysis, in a child process -----------------------------------------------------

def child(args: argparse.Namespace) -> None:
    """Run `args.child` on `args.model_dir`; print a JSON line of what it measured."""
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    model, corpus = args.model_dir, args.corpus
    cli = {
        "induction": ["induction", "--model", model, "--n-seqs", str(args.induction_seqs)],
        "cache": ["cache", "--model", model, "--corpus", corpus, "--split", "train",
                  "--hooks", args.cache_hooks, "--max-tokens", str(args.cache_tokens),
                  "--chunk"] + (["--batch-size", str(args.cache_batch)] if args.cache_batch
                                else []),
        "probe": ["probe", "--model", model, "--corpus", corpus]
        + (["--max-tokens", str(args.probe_tokens)] if args.probe_tokens else [])
        + (["--max-examples", str(args.probe_examples)] if args.probe_examples else []),
        "beliefs": ["beliefs", "--model", model, "--corpus", corpus, "--n", "10",
                    "--method", "rome,ft", "--layer", "6"],
        "memit": ["beliefs", "--model", model, "--corpus", corpus, "--n", "10", "--method",
                  "memit", "--regimes", "batch", "--batch-sizes", "10", "--layer", "6",
                  "--memit-layers", "4,5,6"],
        "circuit": ["circuit", "--model", model, "--corpus", corpus, "--task", "facts",
                    "--method", "eap-ig", "--n-pairs", "32"],
        "sae": ["sae", "train", "--model", model, "--corpus", corpus, "--hook",
                "blocks.5.hook_resid_post", "--tokens", str(args.sae_tokens), "--batch-size",
                "2048", "--expansion", "16", "--k", "32"],
    }
    place = ["--device", args.device, "--model-dtype", args.model_dtype]
    if args.child in cli:
        from workbench.cli.core import main

        ext = {"cache": ".h5", "sae": ""}.get(args.child, ".json")  # memit: a beliefs report
        rc = main([*cli[args.child], *(place if args.child != "sae" else []), "--out",
                   str(out / f"{args.child}{ext}"), "--overwrite", "--no-progress"])
        print(json.dumps({"rc": rc, **_gpu_peak()}))
        return
    from common import timed  # bench/common.py (the script's own folder)

    from workbench.models.devices import Placement
    from workbench.models.loader import load

    t0 = time.perf_counter()
    m = load(model, Placement(device=args.device, dtype=args.model_dtype))
    loaded = time.perf_counter() - t0
    if args.child == "load":
        tokens = torch.randint(m.cfg.d_vocab, FWD_SHAPE, generator=torch.Generator().manual_seed(0))
        tokens = tokens.to(next(m.parameters()).device)
        with torch.no_grad():
            m(tokens[:2, :16])  # warm-up
            forward_s, _ = timed(lambda: m(tokens))
        print(json.dumps({"rc": 0, "load_s": loaded, "forward_s": forward_s, **_gpu_peak()}))
    elif args.child == "trace":
        from circuits.tracing import TraceConfig, causal_trace, target_token_id

        with torch.no_grad():  # the most likely next token that is a word of one token
            order = m(m.to_tokens(PROMPT))[0, -1].argsort(descending=True).tolist()
        target = next(w for w in (m.tokenizer.decode([i]).strip() for i in order)
                      if w.isalpha() and _one_token(m, w, target_token_id))
        res = causal_trace(m, PROMPT, SUBJECT, target, TraceConfig())
        print(json.dumps({"rc": 0, "clean_prob": res.clean_prob, **_gpu_peak()}))


def _gpu_peak() -> dict[str, float]:
    """`{"peak_gpu_gib": ...}`: the most CUDA memory this process allocated (none on CPU)."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def _one_token(model: Any, word: str, token_id: Any) -> bool:
    try:
        token_id(model, word)
    except ValueError:
        return False
    return True


def _spawn(args: argparse.Namespace, model: str, model_dir: Path, corpus: Path,
           analysis: str, out_dir: Path) -> dict[str, Any]:
    """Run one analysis in a fresh process: wall seconds, its peak RSS, what it printed."""
    cmd = [sys.executable, __file__, "--child", analysis, "--model-dir", str(model_dir),
           "--corpus", str(corpus), "--out-dir", str(out_dir), "--threads", str(args.threads),
           "--cache-tokens", str(args.cache_tokens), "--cache-hooks", args.cache_hooks,
           "--induction-seqs", str(args.induction_seqs),
           "--cache-batch", str(args.cache_batch or 0),
           "--probe-tokens", str(args.probe_tokens or 0),
           "--probe-examples", str(args.probe_examples or 0),
           "--device", args.device, "--model-dtype", args.model_dtype]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log, printed = out_dir / f"{model}-{analysis}.log", out_dir / f"{model}-{analysis}.out"
    t0 = time.perf_counter()
    with open(log, "w") as err, open(printed, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        timed_out = False
        while True:  # reaped here with os.wait4: the child's own peak RSS
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > args.timeout:
                proc.kill()
                timed_out = True
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss_kib = usage.ru_maxrss
    row: dict[str, Any] = {"model": model, "analysis": analysis, "wall_s": round(wall, 1),
                           "peak_rss_gib": round(rss_kib / 2**20, 2), "log": str(log)}
    lines = [ln for ln in printed.read_text().splitlines() if ln.startswith("{")]
    row.update(json.loads(lines[-1]) if lines else {"rc": proc.returncode})
    if timed_out:
        row["rc"] = "timeout"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CPU_MODELS),
                        help=f"of {', '.join(MODELS)} (llama1b: for a GPU)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (every analysis)")
    parser.add_argument("--model-dtype", default="float32",
                        help="float32 | bfloat16 (`--model-dtype` of every analysis)")
    parser.add_argument("--analyses", default=",".join(ANALYSES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None,
                        help="build (or reuse) the models and corpus here (default: temporary)")
    parser.add_argument("--json", default="runs/bench/real_scale.json")
    parser.add_argument("--world-tokens", type=int, default=2_000_000,
                        help="training tokens of the world (val and test: 80,000 each)")
    parser.add_argument("--bpe-vocab", type=int, default=4000)
    parser.add_argument("--induction-seqs", type=int, default=16,
                        help="`workbench induction --n-seqs` (sequences of 256 tokens)")
    parser.add_argument("--cache-tokens", type=int, default=20_000)
    parser.add_argument("--cache-hooks", default="blocks.*.hook_resid_post")
    parser.add_argument("--cache-batch", type=int, default=0,
                        help="`workbench cache --batch-size` (default: the command's)")
    parser.add_argument("--probe-tokens", type=int, default=40_000,
                        help="`workbench probe --max-tokens` (0: the whole val split)")
    parser.add_argument("--probe-examples", type=int, default=5_000,
                        help="`workbench probe --max-examples` (0: the command's default)")
    parser.add_argument("--sae-tokens", type=int, default=50_000,
                        help="`workbench sae train --tokens` (activations made on the fly, "
                        "16 x 768 TopK latents at block 5's output)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds before an analysis is killed")
    parser.add_argument("--compare", action="append", default=[],
                        help="a JSON table of an earlier run: each row also prints its numbers")
    parser.add_argument("--child", choices=ANALYSES, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    models = [m for m in args.models.split(",") if m]
    analyses = [a for a in args.analyses.split(",") if a]
    bad = [m for m in models if m not in MODELS] + [a for a in analyses if a not in ANALYSES]
    if bad:
        sys.exit(f"error: unknown {bad}; models are {MODELS}, analyses {ANALYSES}")
    earlier = {}  # (model, analysis) -> row of --compare
    for path in args.compare:
        earlier.update({(r["model"], r["analysis"]): r
                        for r in json.loads(Path(path).read_text())["rows"]})
    if "load" not in analyses:  # the baseline of every row
        analyses.insert(0, "load")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        dirs, corpus = prepare(workdir, models, args.world_tokens, args.bpe_vocab)
        print(f"models and corpus ready in {workdir} ({time.perf_counter() - t0:.0f} s); "
              f"{args.threads} thread(s); target <= {TARGET_S:.0f} s and <= {TARGET_GIB:.0f} "
              f"GiB per analysis", flush=True)
        print(f"{'model':7s} {'analysis':10s} {'wall s':>8s} {'x fwd':>8s} {'peak GiB':>9s}  "
              "verdict", flush=True)
        rows = []
        for model in models:
            fwd = None
            for analysis in analyses:
                out_dir = workdir / "out" / model
                out_dir.mkdir(parents=True, exist_ok=True)
                row = _spawn(args, model, dirs[model], corpus, analysis, out_dir)
                if analysis == "load":
                    fwd = row.get("forward_s")
                row["x_forward"] = round(row["wall_s"] / fwd, 1) if fwd else None
                ok = (row["rc"] == 0 and row["wall_s"] <= TARGET_S
                      and row["peak_rss_gib"] <= TARGET_GIB)
                row["target_met"] = ok
                verdict = "met" if ok else ("NOT met" if row["rc"] == 0
                                            else f"FAILED ({row['rc']}; {row['log']})")
                xf = f"{row['x_forward']:8.1f}" if row["x_forward"] else f"{'-':>8s}"
                if "peak_gpu_gib" in row:
                    verdict += f"  (peak GPU memory {row['peak_gpu_gib']:.2f} GiB)"
                was = earlier.get((model, analysis))
                if was is not None:
                    verdict += (f"  (was {was['wall_s']:.1f} s, {was['peak_rss_gib']:.2f} GiB"
                                f"{'' if was['rc'] == 0 else ', ' + str(was['rc'])})")
                print(f"{model:7s} {analysis:10s} {row['wall_s']:8.1f} {xf} "
                      f"{row['peak_rss_gib']:9.2f}  {verdict}", flush=True)
                rows.append(row)
        if fwd is not None:
            print(f"x fwd: wall seconds over one forward pass of {FWD_SHAPE[0]} x "
                  f"{FWD_SHAPE[1]} tokens (the `load` row's model, measured in that process)")
    result = {"schema": "workbench.bench.real_scale/1", "threads": args.threads,
              "device": args.device, "model_dtype": args.model_dtype,
              "target": {"wall_s": TARGET_S, "peak_rss_gib": TARGET_GIB},
              "settings": {k: getattr(args, k) for k in (
                  "world_tokens", "bpe_vocab", "induction_seqs", "cache_tokens", "cache_hooks",
                  "cache_batch", "probe_tokens", "probe_examples")},
              "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"table written to {args.json}")
    if not all(r["target_met"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Head scores: our one-pass `head_scores` vs TransformerLens' `detect_head`, in one run.

All three detector scores (previous-token, duplicate-token, induction) for every head, on the
same `--n-seqs` repeated-token sequences (`circuits.inputs.repeated_tokens_for`, decoded to
strings and re-encoded with `model.to_tokens`, which must reproduce them exactly):

- `ours`: `circuits.scores.head_scores(model, tokens, kinds=..., normalize="tl")`, one batched
  forward pass with the patterns reduced inside the hooks;
- `detect_head`: TransformerLens `detect_head(model, seqs, name)` for the three head names
  (the baseline), which runs the model once per string per call and averages the scores.

Prints the median seconds of each (after one untimed warm-up call of each), the speedup
(goal >= 3x) and the largest absolute difference between the two sets of scores over every
head and kind (goal <= 1e-4; exits non-zero when it is missed).

    python bench/head_scores.py [--model runs/demo] [--n-seqs 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import torch
from common import (  # bench/common.py (the script's own folder)
    add_model_args,
    agreement,
    model_from_args,
    timed,
)

KINDS = {  # ours -> TransformerLens head name
    "prev_token": "previous_token_head",
    "duplicate": "duplicate_token_head",
    "induction": "induction_head",
}
TOLERANCE = 1e-4


def _inputs(model: Any, n_seqs: int) -> tuple[list[str], torch.Tensor]:
    """The strings for `detect_head` and their `model.to_tokens` encoding (BOS included),
    which must equal the repeated tokens they were decoded from."""
    from circuits.inputs import repeated_tokens_for
    from workbench.prompts import prepended_bos

    rep = repeated_tokens_for(model, n_seqs, seed=0)
    body = rep.tokens[:, 1:] if prepended_bos(model) is not None else rep.tokens
    seqs = [model.tokenizer.decode(row.tolist()) for row in body]
    rows = []
    for i, s in enumerate(seqs):
        row = model.to_tokens(s).cpu()
        if row.shape != (1, rep.tokens.shape[1]) or not torch.equal(row[0], rep.tokens[i]):
            sys.exit(f"error: sequence {i} does not round-trip through decode/to_tokens: "
                     f"{rep.tokens[i].tolist()[:12]}... -> {row[0].tolist()[:12]}... "
                     f"(length {rep.tokens.shape[1]} -> {row.shape[-1]})")
        rows.append(row)
    return seqs, torch.cat(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--n-seqs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from transformer_lens.head_detector import detect_head

    from circuits.scores import head_scores

    torch.manual_seed(0)
    model = model_from_args(args)
    seqs, tokens = _inputs(model, args.n_seqs)

    def ours() -> dict[str, torch.Tensor]:
        return head_scores(model, tokens, kinds=tuple(KINDS), normalize="tl")

    def theirs() -> dict[str, torch.Tensor]:
        return {k: detect_head(model, seqs, name) for k, name in KINDS.items()}

    sides = {"ours": ours, "detect_head": theirs}
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    with torch.no_grad():
        scores = {name: fn() for name, fn in sides.items()}  # warm-up, untimed
        for _ in range(args.repeats):
            for name, fn in sides.items():
                t, _ = timed(fn)
                seconds[name].append(t)
    med = {name: statistics.median(s) for name, s in seconds.items()}
    diff = {k: (scores["ours"][k].float().cpu() - scores["detect_head"][k].float().cpu())
            .abs().max().item() for k in KINDS}
    cfg = model.cfg
    print(f"model {args.model or 'random ' + args.preset} ({cfg.n_layers}L x {cfg.n_heads}H, "
          f"d_model {cfg.d_model}, n_ctx {cfg.n_ctx}), {len(seqs)} seqs x {tokens.shape[1]} "
          f"tokens, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.repeats} repeats")
    for name, s in med.items():
        print(f"  {name:12s} {s:8.4f} s   {med['detect_head'] / s:6.2f}x detect_head")
    ratio = med["detect_head"] / med["ours"]
    print(f"speedup ours vs detect_head = {ratio:.2f}x (goal >= 3: "
          f"{'met' if ratio >= 3 else 'NOT met'})")
    ok = agreement("ours - detect_head", diff, TOLERANCE)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

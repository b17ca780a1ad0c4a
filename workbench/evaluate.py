"""What a trained model knows: fact recall, number agreement, in-context copying.

`evaluate(model, corpus)` runs the hooked bridge (the analysed model, not the training
path) on the corpus' evaluation items:

- `fact_recall_heldout`: top-1 over the whole vocabulary on queries in paraphrase
  templates never seen in training (also reported among the relation's candidates);
- `fact_recall_train`: the same on training templates;
  both are also split by exposure bucket and by relation (`by_bucket`, `by_relation`);
- `country_stated`: held-out recall of the countries stated in text (a direct fact);
- `fact_recall_twohop`: recall of the countries never stated (person -> city -> country),
  a measurement without a goal;
- `agreement`: p(correct verb form) > p(wrong form) after a relative clause whose noun
  has the opposite number ("the dog that the cats chase" -> eats / eat);
- `induction_ratio`: loss on the second copy of repeated random tokens over the loss on
  the first copy (lower is better; in-context copying drives it towards 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from workbench.prompts import bos_ids, encode_prompt, last_logits, word_id
from workbench.repeats import copy_losses, repeated_tokens
from workbench.world.facts import BUCKETS

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.world.loader import Corpus

log = logging.getLogger(__name__)
SCHEMA = "workbench.eval/1"

GOALS = {  # (goal, direction) on the `default` model
    "fact_recall_heldout": (0.9, "higher"),
    "fact_recall_train": (0.9, "higher"),
    "country_stated": (0.9, "higher"),
    "agreement": (0.9, "higher"),
    "induction_ratio": (0.5, "lower"),
}


@dataclass(frozen=True)
class EvalConfig:
    """Sizes of the evaluation sets (items are capped, never padded)."""

    max_fact_items: int = 1000
    max_agreement_items: int = 1000
    induction_batch: int = 32
    induction_len: int = 40
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "max_fact_items",
            "max_agreement_items",
            "induction_batch",
            "induction_len",
            "batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"EvalConfig.{name}={getattr(self, name)}; it must be >= 1")


def prefix_logits(
    model: Model, items: list[dict[str, Any]], batch_size: int = 64, progress: bool = False
) -> Float[Tensor, "n d_vocab"]:
    """Next-token logits after `<bos> + item["prefix"]` for each item."""
    prompts = [encode_prompt(model, it["prefix"]) for it in items]
    return last_logits(model, prompts, batch_size, progress)


def fact_recall(
    model: Model,
    items: list[dict[str, Any]],
    batch_size: int = 64,
    progress: bool = False,
    *,
    per_item: bool = False,
) -> dict[str, Any]:
    """Top-1 accuracy of the answer over the vocabulary and among the candidates.

    Args:
        model: the model.
        items: fact items (`prefix`, `answer`, `candidates`, optionally `bucket` and
            `relation`), e.g. `corpus.eval_items("facts_heldout")`.
        batch_size: prompts per forward pass.
        progress: show a progress bar.
        per_item: also return `per_item`: `{"top1": Float[Tensor, "n"], "logprob":
            Float[Tensor, "n"]}`, each item's hit (1.0 or 0.0) and its answer's
            log-probability over the vocabulary (for the sweep battery).

    Returns:
        `{"value", "among_candidates", "n", "by_bucket", "by_relation"}` (the groups when the
        items have them), and `per_item` when asked.
    """
    tok = model.tokenizer
    logits = prefix_logits(model, items, batch_size, progress)
    answers = torch.tensor([word_id(tok, it["answer"]) for it in items], dtype=torch.long)
    top1 = (logits.argmax(-1) == answers).float()  # (n,)
    among = []
    for row, it in enumerate(items):
        cand = torch.tensor([word_id(tok, c) for c in it["candidates"]])
        among.append(float(cand[logits[row, cand].argmax()] == answers[row]))
    out: dict[str, Any] = {"value": float(top1.mean()) if items else float("nan"),
                           "among_candidates": float(np.mean(among)) if items else float("nan"),
                           "n": len(items)}
    for key in ("bucket", "relation"):
        groups: dict[str, list[float]] = {}
        for it, ok in zip(items, top1.tolist(), strict=True):
            if key in it:
                groups.setdefault(str(it[key]), []).append(ok)
        order = {b: i for i, b in enumerate(BUCKETS)}  # low, mid, high; relations by name
        if groups:
            out[f"by_{key}"] = {g: {"value": float(np.mean(v)), "n": len(v)}
                                for g, v in sorted(groups.items(),
                                                   key=lambda kv: (order.get(kv[0], 9), kv[0]))}
    if per_item:
        logp = F.log_softmax(logits, -1)[torch.arange(len(items)), answers]  # (n,)
        out["per_item"] = {"top1": top1, "logprob": logp}
    return out


def agreement(
    model: Model,
    items: list[dict[str, Any]],
    batch_size: int = 64,
    progress: bool = False,
    *,
    per_item: bool = False,
) -> dict[str, Any]:
    """Share of items where the correct verb form outscores the wrong one.

    Args:
        model: the model.
        items: agreement items (`prefix`, `correct`, `wrong`).
        batch_size: prompts per forward pass.
        progress: show a progress bar.
        per_item: also return `per_item`: `{"correct": Float[Tensor, "n"], "logprob":
            Float[Tensor, "n"]}`, each item's hit (1.0 or 0.0) and
            `log p(correct | {correct, wrong})` (for the sweep battery).

    Returns:
        `{"value", "n"}`, and `per_item` when asked.
    """
    tok = model.tokenizer
    logits = prefix_logits(model, items, batch_size, progress)
    good_ids = torch.tensor([word_id(tok, it["correct"]) for it in items])
    bad_ids = torch.tensor([word_id(tok, it["wrong"]) for it in items])
    rows = torch.arange(len(items))
    good, bad = logits[rows, good_ids], logits[rows, bad_ids]  # (n,) each
    correct = (good > bad).float()
    out: dict[str, Any] = {"value": float(correct.mean()), "n": len(items)}
    if per_item:
        out["per_item"] = {"correct": correct, "logprob": F.logsigmoid(good - bad)}
    return out


NLL_CHUNK_BYTES = 256 * 2**20  # log-probabilities held at once by `token_nll`
LOW_ID = 4  # the induction ratio's random tokens start here (ours: 0-3 are the specials)


def token_nll(logits: Float[Tensor, "batch pos vocab"],
              tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos"]:
    """Negative log-likelihood of each token given the ones before it (position 0: nan).

    Computed a few sequences at a time, so the temporary log-probabilities stay near
    `NLL_CHUNK_BYTES` however large the batch (each row's values are the same either way)."""
    b, t, v = logits.shape
    rows = max(1, NLL_CHUNK_BYTES // max(1, 4 * t * v))
    parts = []
    for lo in range(0, b, rows):
        logp = F.log_softmax(logits[lo:lo + rows, :-1].float(), -1)
        parts.append(-logp.gather(-1, tokens[lo:lo + rows, 1:, None].to(logp.device))[..., 0])
    nll = torch.cat(parts)
    return torch.cat([torch.full_like(nll[:, :1], float("nan")), nll], 1)


@torch.no_grad()
def induction_ratio(model: Model, batch: int = 32, length: int = 40, seed: int = 0
                    ) -> dict[str, Any]:
    """Loss on the second copy of repeated random tokens divided by the first copy's.

    The tokens are `[BOS] r r` (`workbench.repeats.repeated_tokens`, recipe `halves`) with
    `r` of `length` tokens (at most what fits the context) drawn uniformly from
    `[LOW_ID, d_vocab)`; each copy's loss leaves out its first token (`copy_losses`).
    """
    length = min(length, (model.cfg.n_ctx - 1) // 2)
    bos = bos_ids(model.tokenizer) if model.tokenizer is not None else []
    rep = repeated_tokens(model.cfg.d_vocab, batch, len(bos) + 2 * length, seed,
                          bos_id=bos[0] if bos else None,
                          ids=torch.arange(LOW_ID, model.cfg.d_vocab), recipe="halves")
    device = next(model.parameters()).device
    nll = token_nll(model(rep.tokens.to(device)), rep.tokens).cpu()
    losses = copy_losses(nll, rep)
    loss1, loss2 = losses["first"], losses["second"]
    return {
        "value": loss2 / loss1,
        "loss_first": loss1,
        "loss_second": loss2,
        "n": batch,
        "length": length,
    }


def evaluate(
    model: Model,
    corpus: Corpus,
    cfg: EvalConfig | None = None,
    *,
    model_ref: str = "",
    progress: bool = True,
) -> dict[str, Any]:
    """All core metrics of `model` on a world corpus' evaluation items.

    Returns:
        `{"schema": "workbench.eval/1", "model", "corpus", "seed", "metrics": {name:
        {"value", "goal", "direction", "n", ...}}}`.
    """
    cfg = cfg or EvalConfig()
    facts_heldout = corpus.eval_items("facts_heldout")[: cfg.max_fact_items]
    facts_train = corpus.eval_items("facts_train")[: cfg.max_fact_items]
    agree = corpus.eval_items("agreement")[: cfg.max_agreement_items]
    country = [it for it in corpus.eval_items("facts_heldout") if it["relation"] == "country"]
    twohop = corpus.eval_items("facts_twohop")[: cfg.max_fact_items]
    metrics = {
        "fact_recall_heldout": fact_recall(model, facts_heldout, cfg.batch_size, progress),
        "fact_recall_train": fact_recall(model, facts_train, cfg.batch_size, progress),
        "country_stated": fact_recall(model, country[: cfg.max_fact_items], cfg.batch_size),
        "fact_recall_twohop": fact_recall(model, twohop, cfg.batch_size, progress),
        "agreement": agreement(model, agree, cfg.batch_size, progress),
        "induction_ratio": induction_ratio(model, cfg.induction_batch, cfg.induction_len, cfg.seed),
    }
    for name, (goal, direction) in GOALS.items():
        value = metrics[name]["value"]
        if not metrics[name]["n"]:  # a world without stated countries (older corpora)
            metrics[name].update(goal=goal, direction=direction, meets_goal=None)
            continue
        metrics[name].update(
            goal=goal,
            direction=direction,
            meets_goal=value >= goal if direction == "higher" else value <= goal,
        )
    return {
        "schema": SCHEMA,
        "model": model_ref,
        "corpus": str(Path(corpus.path)),
        "seed": cfg.seed,
        "metrics": metrics,
    }

"""Inputs for head scoring: repeated random tokens in a model's vocabulary.

`repeated_tokens_for(model)` draws `[BOS] prefix seg seg` sequences
(`workbench.repeats.repeated_tokens`, recipe `varied`) from the model's non-special ids, with
its BOS. `RepeatedTokens` (the batch, with its copy and stripe masks) is
`workbench.repeats.RepeatedTokens`.

>>> import torch
>>> from workbench.repeats import repeated_tokens
>>> rep = repeated_tokens(d_vocab=50, n_seqs=3, seq_len=21, seed=0, bos_id=2)
>>> i = 0; s = int(rep.start[i]); p = int(rep.period[i])
>>> bool(torch.equal(rep.tokens[i, s:s + p], rep.tokens[i, s + p:s + 2 * p]))
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from workbench.prompts import prepended_bos
from workbench.repeats import RepeatedTokens, repeated_tokens

if TYPE_CHECKING:
    from workbench.models import Model

__all__ = ["RepeatedTokens", "repeated_tokens_for", "sample_ids"]


def sample_ids(model: Model) -> Int[Tensor, " n"]:
    """Token ids to sample random sequences from: every id but the tokenizer's specials."""
    ids = torch.arange(model.cfg.d_vocab)
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return ids
    special = set(getattr(tok, "all_special_ids", []) or [])
    vocab_len = len(tok) if hasattr(tok, "__len__") else model.cfg.d_vocab
    keep = [i for i in ids.tolist() if i not in special and i < vocab_len]
    return torch.tensor(keep, dtype=torch.long)


def repeated_tokens_for(model: Model, n_seqs: int = 32, seq_len: int | None = None,
                        seed: int = 0) -> RepeatedTokens:
    """Repeated random tokens for `model`: its BOS, its non-special ids, and a length of
    `n_ctx - 1` by default (TransformerLens' head detector wants sequences shorter than
    `n_ctx`)."""
    seq_len = seq_len or min(model.cfg.n_ctx - 1, 255)
    return repeated_tokens(model.cfg.d_vocab, n_seqs, seq_len, seed=seed,
                           bos_id=prepended_bos(model), ids=sample_ids(model))

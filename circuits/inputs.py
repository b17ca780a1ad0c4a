"""Inputs for head scoring: repeated random tokens with a random prefix.

Each sequence is `[BOS] prefix seg seg` of one fixed total length, where `seg` has a random
length per sequence (its *period*) and `prefix` fills the rest. Because the period differs
between sequences, a head that always looks back a fixed distance cannot score well on the
induction stripe; because the prefix length differs, neither can a head that looks at fixed
absolute positions.

>>> import torch
>>> rep = make_repeated_tokens(d_vocab=50, n_seqs=3, seq_len=21, seed=0, bos_id=2)
>>> rep.tokens.shape, bool((rep.tokens[:, 0] == 2).all())
(torch.Size([3, 21]), True)
>>> i = 0; s = int(rep.start[i]); p = int(rep.period[i])
>>> bool(torch.equal(rep.tokens[i, s:s + p], rep.tokens[i, s + p:s + 2 * p]))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from workbench.prompts import prepended_bos

if TYPE_CHECKING:
    from workbench.models import Model


@dataclass(frozen=True)
class RepeatedTokens:
    """A batch of `[BOS] prefix seg seg` sequences.

    Attributes:
        tokens: the token ids.
        start: index of the first token of the first copy of `seg`, per sequence.
        period: length of `seg`, per sequence (the second copy starts at `start + period`).
    """

    tokens: Int[Tensor, "batch pos"]
    start: Int[Tensor, " batch"]
    period: Int[Tensor, " batch"]

    def second_copy_mask(self) -> Bool[Tensor, "batch pos"]:
        """True at the positions of the second copy, except its first token (the positions
        an induction head can predict: the token before them was seen followed by them)."""
        pos = torch.arange(self.tokens.shape[1])
        lo = (self.start + self.period + 1)[:, None]
        hi = (self.start + 2 * self.period)[:, None]
        return (pos >= lo) & (pos < hi)

    def stripe_mask(self) -> Bool[Tensor, "batch query key"]:
        """The induction stripe: query `q` in the second copy attends to key `q - period + 1`
        (the token that followed the current token's earlier copy)."""
        b, t = self.tokens.shape
        q = torch.arange(t)[:, None]
        k = torch.arange(t)[None, :]
        key = q - self.period[:, None, None] + 1
        return (k == key) & self.second_copy_mask()[:, :, None]


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


def make_repeated_tokens(
    d_vocab: int,
    n_seqs: int,
    seq_len: int,
    seed: int = 0,
    bos_id: int | None = None,
    ids: Int[Tensor, " n"] | None = None,
    min_period: int | None = None,
) -> RepeatedTokens:
    """`n_seqs` sequences of length `seq_len` (BOS included when `bos_id` is given).

    The period is uniform in `[min_period, (seq_len - n_bos) // 2]` (default minimum: a third
    of the body, at least 4) and the prefix takes the rest. Tokens are drawn uniformly from
    `ids` (default all of `range(d_vocab)`) with a `torch.Generator` seeded by `seed`.
    """
    n_bos = 0 if bos_id is None else 1
    body = seq_len - n_bos
    max_period = body // 2
    lo = min_period if min_period is not None else max(4, body // 3)
    if max_period < 2 or lo > max_period:
        raise ValueError(f"seq_len={seq_len} is too short for repeated tokens; use at least "
                         f"{n_bos + 2 * max(lo, 2)}")
    pool = torch.arange(d_vocab) if ids is None else ids
    g = torch.Generator().manual_seed(seed)
    period = torch.randint(lo, max_period + 1, (n_seqs,), generator=g)
    rand = pool[torch.randint(0, len(pool), (n_seqs, body), generator=g)]
    tokens = torch.empty(n_seqs, seq_len, dtype=torch.long)
    start = torch.empty(n_seqs, dtype=torch.long)
    for i in range(n_seqs):
        p = int(period[i])
        pre = body - 2 * p
        seg = rand[i, pre:pre + p]
        row = torch.cat([rand[i, :pre], seg, seg])
        if bos_id is not None:
            row = torch.cat([torch.tensor([bos_id]), row])
        tokens[i] = row
        start[i] = n_bos + pre
    return RepeatedTokens(tokens=tokens, start=start, period=period)


def repeated_tokens_for(model: Model, n_seqs: int = 32, seq_len: int | None = None,
                        seed: int = 0) -> RepeatedTokens:
    """Repeated random tokens for `model`: its BOS, its non-special ids, and a length of
    `n_ctx - 1` by default (TransformerLens' head detector wants sequences shorter than
    `n_ctx`)."""
    seq_len = seq_len or min(model.cfg.n_ctx - 1, 255)
    return make_repeated_tokens(model.cfg.d_vocab, n_seqs, seq_len, seed=seed,
                                bos_id=prepended_bos(model), ids=sample_ids(model))

"""Repeated tokens, the input of every induction measurement, and the loss on each copy.

A batch of `[BOS] prefix seg seg` sequences (`RepeatedTokens`): nothing predicts a random
token except that the second copy of `seg` repeats the first, so a model can only do better
on the second copy by looking back in its context. `repeated_tokens` draws them (one
generator, two recipes: `varied` for head scores and ablations, `halves` for `workbench eval`'s
induction ratio); `repeat_segment` repeats given tokens (the dashboard's repeated text);
`copy_losses` is the loss on each copy.

>>> rep = repeated_tokens(d_vocab=50, n_seqs=3, seq_len=21, seed=0, bos_id=2)
>>> rep.tokens.shape, bool((rep.tokens[:, 0] == 2).all())
(torch.Size([3, 21]), True)
>>> i = 0; s = int(rep.start[i]); p = int(rep.period[i])
>>> bool(torch.equal(rep.tokens[i, s:s + p], rep.tokens[i, s + p:s + 2 * p]))
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


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

    def first_copy_mask(self) -> Bool[Tensor, "batch pos"]:
        """True at the positions of the first copy, except its first token (the second
        copy's positions one period earlier: the same tokens, seen for the first time)."""
        pos = torch.arange(self.tokens.shape[1])
        return (pos >= (self.start + 1)[:, None]) & (pos < (self.start + self.period)[:, None])

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


def repeat_segment(segment: Int[Tensor, "batch period"], bos_id: int | None = None
                   ) -> RepeatedTokens:
    """`[BOS] seg seg` for every row `seg` of `segment` (no prefix; BOS when `bos_id` is given).

    >>> repeat_segment(torch.tensor([[5, 6, 7]]), bos_id=0).tokens
    tensor([[0, 5, 6, 7, 5, 6, 7]])
    """
    b, p = segment.shape
    head = [torch.full((b, 1), bos_id, dtype=segment.dtype)] if bos_id is not None else []
    return RepeatedTokens(tokens=torch.cat([*head, segment, segment], 1),
                          start=torch.full((b,), len(head), dtype=torch.long),
                          period=torch.full((b,), p, dtype=torch.long))


def _varied(pool: Tensor, n_seqs: int, body: int, g: torch.Generator,
            min_period: int | None, n_bos: int) -> tuple[Tensor, Tensor, Tensor]:
    """`prefix seg seg` rows with a period uniform in `[min_period, body // 2]`."""
    max_period = body // 2
    lo = min_period if min_period is not None else max(4, body // 3)
    if max_period < 2 or lo > max_period:
        raise ValueError(f"seq_len={n_bos + body} is too short for repeated tokens; use at "
                         f"least {n_bos + 2 * max(lo, 2)}")
    period = torch.randint(lo, max_period + 1, (n_seqs,), generator=g)
    rand = pool[torch.randint(0, len(pool), (n_seqs, body), generator=g)]
    rows = torch.empty(n_seqs, body, dtype=torch.long)
    start = torch.empty(n_seqs, dtype=torch.long)
    for i in range(n_seqs):
        p = int(period[i])
        pre = body - 2 * p
        seg = rand[i, pre:pre + p]
        rows[i] = torch.cat([rand[i, :pre], seg, seg])
        start[i] = n_bos + pre
    return rows, start, period


def _halves(pool: Tensor, n_seqs: int, body: int, g: torch.Generator,
            min_period: int | None, n_bos: int) -> tuple[Tensor, Tensor, Tensor]:
    """`seg seg` rows, `seg` of half the body."""
    if body < 2 or body % 2:
        raise ValueError(f"seq_len={n_bos + body} leaves {body} tokens after BOS; the "
                         "'halves' recipe needs an even number of at least 2")
    rep = repeat_segment(pool[torch.randint(0, len(pool), (n_seqs, body // 2), generator=g)])
    return rep.tokens, rep.start + n_bos, rep.period


RECIPES: dict[str, Callable[..., tuple[Tensor, Tensor, Tensor]]] = {
    "varied": _varied,
    "halves": _halves,
}


def repeated_tokens(
    d_vocab: int,
    n_seqs: int,
    seq_len: int,
    seed: int = 0,
    bos_id: int | None = None,
    ids: Int[Tensor, " n"] | None = None,
    min_period: int | None = None,
    *,
    recipe: str = "varied",
) -> RepeatedTokens:
    """`n_seqs` sequences of length `seq_len` (BOS included when `bos_id` is given), their
    tokens drawn uniformly from `ids` (default all of `range(d_vocab)`) with a
    `torch.Generator` seeded by `seed`.

    Args:
        d_vocab: the vocabulary size (the pool when `ids` is None).
        n_seqs: sequences.
        seq_len: tokens per sequence, BOS included.
        seed: the generator's seed (the same seed, recipe and pool give the same tokens).
        bos_id: a BOS token to start every sequence with (None: none).
        ids: the token ids to draw from.
        min_period: `varied` only: the shortest period (default: a third of the tokens after
            BOS, at least 4).
        recipe: `varied` (`[BOS] prefix seg seg`: the period is uniform in
            `[min_period, (seq_len - n_bos) // 2]` per sequence and a random prefix takes the
            rest, so neither a head that looks back a fixed distance nor one that looks at
            fixed positions can score on the induction stripe) or `halves` (`[BOS] seg seg`,
            `seg` of `(seq_len - n_bos) // 2` tokens in every sequence).

    Raises:
        ValueError: an unknown recipe, or a `seq_len` too short for it.

    >>> rep = repeated_tokens(10, n_seqs=2, seq_len=7, seed=0, bos_id=1, recipe="halves")
    >>> rep.tokens[:, 1:4].equal(rep.tokens[:, 4:]), rep.start.tolist(), rep.period.tolist()
    (True, [1, 1], [3, 3])
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r}; choose one of {sorted(RECIPES)}")
    n_bos = 0 if bos_id is None else 1
    pool = torch.arange(d_vocab) if ids is None else ids
    g = torch.Generator().manual_seed(seed)
    rows, start, period = RECIPES[recipe](pool, n_seqs, seq_len - n_bos, g, min_period, n_bos)
    if bos_id is not None:
        rows = torch.cat([torch.full((n_seqs, 1), bos_id, dtype=torch.long), rows], 1)
    return RepeatedTokens(tokens=rows, start=start, period=period)


def masked_mean(values: Float[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"]) -> float:
    """The mean of `values` where `mask` is True."""
    return float(values[mask.to(values.device)].mean())


def copy_losses(nll: Float[Tensor, "batch pos"], rep: RepeatedTokens) -> dict[str, float]:
    """Mean loss (nats) on the first and on the second copy, both without their first token.

    Args:
        nll: per-token losses of `rep.tokens` (`workbench.evaluate.token_nll`: position `p`
            holds the loss of token `p`).
        rep: the repeated tokens.

    Returns:
        `{"first", "second"}`.

    >>> rep = repeat_segment(torch.tensor([[5, 6, 7]]), bos_id=0)
    >>> copy_losses(torch.tensor([[9.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.0]]), rep)
    {'first': 2.5, 'second': 0.25}
    """
    if bool((rep.start == rep.start[0]).all() and (rep.period == rep.period[0]).all()):
        # rows alike: slices, whose float sums are the ones `workbench eval` has always given
        s, p = int(rep.start[0]), int(rep.period[0])
        return {"first": float(nll[:, s + 1:s + p].mean()),
                "second": float(nll[:, s + p + 1:s + 2 * p].mean())}
    return {"first": masked_mean(nll, rep.first_copy_mask()),
            "second": masked_mean(nll, rep.second_copy_mask())}

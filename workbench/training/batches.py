"""Deterministic training batches from a flat token stream.

The windows of step `s` depend only on `(seed, s)`, so the data position of a run is
its step: resuming at step `s` sees exactly the batches an uninterrupted run would,
and under data parallelism rank `r` of `w` takes rows `r::w`-sized slices of the same
global batch (the union over ranks equals the single-process batch).
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor


class TokenBatcher:
    """Random `n_ctx + 1` windows of a token stream (nanoGPT-style sampling).

    Args:
        tokens: 1-D array of token ids (a memory map is fine).
        n_ctx: model context length; each row is `n_ctx` inputs and `n_ctx` targets.
        batch_size: global batch size (all ranks together).
        seed: data seed.
    """

    def __init__(self, tokens: np.ndarray, n_ctx: int, batch_size: int, seed: int = 0) -> None:
        if tokens.ndim != 1:
            raise ValueError(f"token stream must be 1-D, got shape {tokens.shape}")
        if len(tokens) < n_ctx + 2:
            raise ValueError(
                f"token stream has {len(tokens)} tokens, fewer than n_ctx + 2 = {n_ctx + 2}; "
                "build a larger corpus or train a model with a smaller n_ctx"
            )
        self.tokens, self.n_ctx, self.batch_size, self.seed = tokens, n_ctx, batch_size, seed

    def starts(self, step: int) -> Int[Tensor, " batch"]:
        """Window start offsets of the global batch at `step`."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        high = len(self.tokens) - self.n_ctx - 1
        return torch.randint(0, high, (self.batch_size,), generator=g)

    def batch(
        self, step: int, rank: int = 0, world_size: int = 1
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
        """Inputs and next-token targets of this rank's share of the batch at `step`."""
        if self.batch_size % world_size:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by world size {world_size}; "
                "pass a batch size that is a multiple of the number of processes"
            )
        per_rank = self.batch_size // world_size
        starts = self.starts(step)[rank * per_rank : (rank + 1) * per_rank].tolist()
        rows = np.stack([np.asarray(self.tokens[s : s + self.n_ctx + 1]) for s in starts])
        rows_t = torch.from_numpy(rows.astype(np.int64))
        return rows_t[:, :-1], rows_t[:, 1:]


def eval_windows(
    tokens: np.ndarray, n_ctx: int, n_windows: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Evenly spaced, fixed windows for validation loss (same every call)."""
    high = len(tokens) - n_ctx - 1
    if high <= 0:
        raise ValueError(
            f"validation split has {len(tokens)} tokens, fewer than n_ctx + 2 = {n_ctx + 2}; "
            "build a larger corpus"
        )
    starts = np.linspace(0, high, num=min(n_windows, high), dtype=np.int64)
    rows = np.stack([np.asarray(tokens[s : s + n_ctx + 1]) for s in starts]).astype(np.int64)
    rows_t = torch.from_numpy(rows)
    return rows_t[:, :-1], rows_t[:, 1:]

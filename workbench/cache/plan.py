"""Which corpus tokens become activation rows, and the batches that compute them.

A cache run turns a corpus split into sequences (one per document, or n_ctx windows of
long documents with `chunk=True`), keeps some positions of each sequence (`all`, `last`,
or `word-final`: the last sub-token of each word, where word labels live), and runs the
model over fixed batches of sequences. Everything here is deterministic, so a resumed
run recomputes exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.hooks import stop_hooks
from workbench.models.checks import FLOAT

if TYPE_CHECKING:
    from workbench.models import Model

POSITIONS = ("all", "last", "word-final")
META_FIELDS = ("seq", "doc", "pos", "offset", "token")


@dataclass
class CachePlan:
    """Sequences of a split and the rows kept from them.

    Attributes:
        starts, lengths, docs: per sequence, its offset in the split's token stream, its
            length and its document index.
        row_offsets: per sequence, the index of its first row (length n_seqs + 1).
        positions, word_starts, special_ids: how `kept` picks a sequence's rows.

    Memory is O(n_seqs) integers: the kept positions are recomputed per batch.
    """

    starts: np.ndarray
    lengths: np.ndarray
    docs: np.ndarray
    row_offsets: np.ndarray
    positions: str = "all"
    word_starts: np.ndarray | None = None
    special_ids: tuple[int, ...] = ()

    def kept(self, seq: np.ndarray) -> np.ndarray:
        """Kept positions (ascending) of one sequence's tokens."""
        return _kept(seq, self.positions, self.word_starts, self.special_ids)

    @property
    def n_seqs(self) -> int:
        return len(self.starts)

    @property
    def n_rows(self) -> int:
        return int(self.row_offsets[-1])

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())

    def shard(self, rank: int, world_size: int) -> tuple[int, int]:
        """The contiguous sequence range `[lo, hi)` of one rank."""
        lo = self.n_seqs * rank // world_size
        hi = self.n_seqs * (rank + 1) // world_size
        return lo, hi


def word_start_table(tokenizer: Any, vocab_size: int) -> np.ndarray:
    """`table[id]` is True when token `id` begins a new word (or is a special token).

    Word-level tokenizers: every token. Byte-level BPE: tokens starting with `Ġ`;
    SentencePiece: tokens starting with `▁`.
    """
    table = np.ones(vocab_size, dtype=bool)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model_type = type(backend.model).__name__ if backend is not None else ""
    if model_type == "WordLevel":
        return table
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    specials = set(getattr(tokenizer, "all_special_tokens", []))
    for i, tok in enumerate(tokens):
        table[i] = tok is None or tok in specials or tok.startswith(("Ġ", "▁", " ", "\n", "Ċ"))
    return table


def make_plan(
    tokens: np.ndarray,
    doc_bounds: np.ndarray,
    n_ctx: int,
    positions: str,
    *,
    chunk: bool = False,
    max_tokens: int | None = None,
    word_starts: np.ndarray | None = None,
    special_ids: tuple[int, ...] = (),
) -> CachePlan:
    """Sequences and kept rows of a token stream split into documents.

    Raises:
        ValueError: a document longer than `n_ctx` without `chunk`, or a bad `positions`.
    """
    if positions not in POSITIONS:
        raise ValueError(f"positions={positions!r}; choose one of {POSITIONS}")
    starts, lengths, docs = [], [], []
    total = 0
    for d, (lo, hi) in enumerate(np.asarray(doc_bounds)):
        lo, hi = int(lo), int(hi)
        if hi - lo > n_ctx and not chunk:
            raise ValueError(
                f"document {d} has {hi - lo} tokens; model n_ctx is {n_ctx}. Pass --chunk to "
                f"split long documents into windows of {n_ctx} tokens"
            )
        for s in range(lo, hi, n_ctx):
            length = min(n_ctx, hi - s)
            if max_tokens is not None and total + length > max_tokens:
                length = max_tokens - total
            if length <= 0:
                break
            starts.append(s)
            lengths.append(length)
            docs.append(d)
            total += length
        if max_tokens is not None and total >= max_tokens:
            break
    if not starts:
        raise ValueError("the corpus split has no tokens to cache; pick another --split")
    if positions == "all":
        counts = np.array(lengths, dtype=np.int64)
    elif positions == "last":
        counts = np.ones(len(lengths), dtype=np.int64)
    else:
        counts = np.array([len(_kept(read_range(tokens, s, s + n), positions, word_starts,
                                     special_ids)) for s, n in zip(starts, lengths)])
    row_offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    row_offsets[1:] = np.cumsum(counts)
    return CachePlan(np.array(starts, dtype=np.int64), np.array(lengths, dtype=np.int64),
                     np.array(docs, dtype=np.int64), row_offsets, positions, word_starts,
                     special_ids)


def read_range(arr: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """`arr[lo:hi]` of a 1-D array; for a memory map, read with `pread` so the pages do not
    stay resident (a long cache run would otherwise grow its RSS with the corpus)."""
    if isinstance(arr, np.memmap) and getattr(arr, "filename", None) and arr.ndim == 1:
        item = arr.dtype.itemsize
        fd = os.open(arr.filename, os.O_RDONLY)
        try:
            data = os.pread(fd, (hi - lo) * item, arr.offset + lo * item)
        finally:
            os.close(fd)
        return np.frombuffer(data, dtype=arr.dtype)
    return np.asarray(arr[lo:hi])


def _kept(seq: np.ndarray, positions: str, word_starts: np.ndarray | None,
          special_ids: tuple[int, ...]) -> np.ndarray:
    n = len(seq)
    if positions == "all":
        return np.arange(n)
    if positions == "last":
        return np.array([n - 1])
    seq = np.asarray(seq, dtype=np.int64)
    if word_starts is None:
        raise ValueError("positions='word-final' needs the tokenizer's word-start table")
    next_starts = np.append(word_starts[seq[1:]], True)  # last token of a sequence ends a word
    not_special = ~np.isin(seq, np.array(special_ids, dtype=np.int64))
    return np.nonzero(next_starts & not_special)[0]


@dataclass
class Batch:
    """Rows of some sequences: `[row_lo, row_hi)` of sequences `[seq_lo, seq_hi)` from
    `iter_batches`; from `iter_length_batches`, sequences of similar length from anywhere in
    the plan (`rows` holds each kept row's index in the plan either way)."""

    seq_lo: int
    seq_hi: int
    row_lo: int
    row_hi: int
    tokens: torch.Tensor  # (B, T) right-padded
    flat_index: torch.Tensor  # (rows,) index into the flattened (B*T) positions
    meta: dict[str, np.ndarray]
    rows: np.ndarray  # (rows,) the plan's index of each kept row, in `flat_index` order


def iter_batches(plan: CachePlan, tokens: np.ndarray, batch_size: int, seq_lo: int,
                 seq_hi: int, pad_id: int = 0) -> Iterator[Batch]:
    """Fixed batches of `batch_size` sequences from `seq_lo`; batch k always starts at
    sequence `seq_lo + k * batch_size` (what makes resume recompute the same batches)."""
    for lo in range(seq_lo, seq_hi, batch_size):
        yield _batch(plan, tokens, np.arange(lo, min(lo + batch_size, seq_hi)), pad_id)


def iter_length_batches(plan: CachePlan, tokens: np.ndarray, batch_size: int,
                        seqs: np.ndarray | None = None, pad_id: int = 0) -> Iterator[Batch]:
    """Batches of `batch_size` sequences of similar length (of `seqs`, default all): for a
    reader that places rows by `Batch.rows` or accumulates a statistic, not for a file
    written in row order. Consecutive documents of a corpus differ in length, and a batch
    is as wide as its longest: on the re-encoded world, fixed batches of 16 compute 2.3
    padded positions per real one."""
    seqs = np.arange(plan.n_seqs) if seqs is None else np.unique(np.asarray(seqs, np.int64))
    order = seqs[np.argsort(plan.lengths[seqs], kind="stable")]
    for lo in range(0, len(order), batch_size):
        yield _batch(plan, tokens, np.sort(order[lo:lo + batch_size]), pad_id)


def _batch(plan: CachePlan, tokens: np.ndarray, seqs: np.ndarray, pad_id: int) -> Batch:
    """The right-padded batch of sequences `seqs` (ascending) and its kept rows."""
    width = int(plan.lengths[seqs].max())
    batch = np.full((len(seqs), width), pad_id, dtype=np.int64)
    flat, rows, meta = [], [], {k: [] for k in META_FIELDS}
    for b, i in enumerate(seqs.tolist()):
        s, n = int(plan.starts[i]), int(plan.lengths[i])
        batch[b, :n] = read_range(tokens, s, s + n)
        kept = plan.kept(batch[b, :n])
        flat.append(b * width + kept)
        rows.append(plan.row_offsets[i] + np.arange(len(kept)))
        meta["seq"].append(np.full(len(kept), i))
        meta["doc"].append(np.full(len(kept), plan.docs[i]))
        meta["pos"].append(kept)
        meta["offset"].append(s + kept)
        meta["token"].append(batch[b, kept])
    lo, hi = int(seqs[0]), int(seqs[-1]) + 1
    return Batch(lo, hi, int(plan.row_offsets[lo]), int(plan.row_offsets[hi]),
                 torch.from_numpy(batch), torch.from_numpy(np.concatenate(flat)),
                 {k: np.concatenate(v).astype(np.int64) for k, v in meta.items()},
                 np.concatenate(rows).astype(np.int64))


def cache_bytes(model: Model, batch_size: int, hooks: list[str] | None = None,
                flush_rows: int = 8192) -> int:
    """Peak memory of `workbench cache` with `batch_size` sequences per forward pass.

    The blocks run one at a time, so what is held is one block's activations (attention
    scores and pattern, MLP), the cached `hooks` of the batch (all residual streams when
    None) and of `flush_rows` buffered rows, and the logits only when the pass cannot stop
    before the unembedding (`workbench.hooks.stop_hooks`)."""
    c = model.cfg
    d_mlp = c.d_mlp or 4 * c.d_model
    block = 12 * c.d_model + 2 * d_mlp + 2 * c.n_heads * c.n_ctx
    if hooks is None:
        kept, stops = c.n_layers * c.d_model, True
    else:
        kept = sum(_hook_width(c, h) for h in hooks)
        kwargs, extra = stop_hooks(model, hooks)
        stops = bool(kwargs or extra)
    logits = 0 if stops else 2 * c.d_vocab
    tokens = batch_size * c.n_ctx
    return FLOAT * (tokens * (block + 2 * kept + logits) + flush_rows * kept)


def _hook_width(c: Any, hook: str) -> int:
    """Floats per token of a hook's activation (`c`: the model's config)."""
    if hook.endswith(("hook_pattern", "hook_attn_scores")):
        return c.n_heads * c.n_ctx
    if hook.endswith(("mlp.hook_pre", "mlp.hook_post")):
        return c.d_mlp or 4 * c.d_model
    return c.d_model

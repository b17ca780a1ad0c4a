"""ActivationStore: activations streamed from a model into one HDF5 file, and read back.

File layout (`schema = workbench.activations/1`):

- one dataset per hook, named by its TransformerLens hook name
  (`blocks.3.hook_resid_post`), shape `[n_rows, *trailing]` where `trailing` is the
  activation's shape at one position (`[d_model]` for the residual stream,
  `[n_heads, d_head]` for `attn.hook_z`, `[d_mlp]` for `mlp.hook_post`, `[n_heads, n_ctx]`
  for `attn.hook_pattern`: one row per query, keys zero-padded to n_ctx); chunked along
  rows with a Fletcher-32 checksum per chunk (damaged data is an error when read),
  optionally compressed;
- `rows/{seq, doc, pos, offset, token}`: per row, its sequence, document, position in the
  sequence, offset in the split's token stream and token id;
- `rows/labels/{name}`: the corpus' gold labels at each row (world corpora only);
- root attributes: schema, model reference, weight checksum, hooks, dtype, corpus, split,
  positions, config (JSON), `n_rows`, `n_done`, `seqs_done`, `complete`.

Memory stays bounded: rows are computed one batch of sequences at a time and written
straight to disk; the corpus is memory-mapped.

Nothing is lost: the file is written as `OUT.partial` and renamed to `OUT` when complete;
uncompressed datasets are allocated up front, so an interrupted run (even `kill -9`)
leaves a file whose first `n_done` rows are valid, and `resume=True` continues from there
to the same content an uninterrupted run writes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench.cache.partial import SCHEMA, existing_output, open_partial
from workbench.cache.plan import (
    META_FIELDS,
    Batch,
    CachePlan,
    iter_batches,
    iter_length_batches,
    make_plan,
    read_range,
)
from workbench.cache.plan import word_start_table as word_start_table
from workbench.hooks import resolve_hooks, stop_hooks, weights_checksum

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.world.loader import Corpus

log = logging.getLogger(__name__)
DTYPES = {"float32": np.float32, "float16": np.float16}
COMPRESSION = (None, "gzip", "lzf")
FLUSH_BYTES = 64 << 20  # at most this much activation data waits in memory for a write


@dataclass(frozen=True)
class CacheConfig:
    """What to cache.

    Args:
        hooks: TransformerLens hook names or globs (`blocks.*.hook_resid_post`).
        split: corpus split (`train`, `val`, `test`).
        positions: `all`, `last` (one row per sequence) or `word-final`.
        dtype: `float32` or `float16` on disk.
        max_tokens: cap on the corpus tokens run through the model.
        batch_size: sequences per forward pass.
        chunk: split documents longer than n_ctx into windows (else an error).
        compression: None, `gzip` or `lzf`.
        chunk_rows: HDF5 chunk length along rows.
        flush_rows: rows buffered in memory between writes (also the resume granularity;
            fewer when they exceed 64 MiB).
    """

    hooks: tuple[str, ...] = ("blocks.*.hook_resid_post",)
    split: str = "val"
    positions: str = "all"
    dtype: str = "float32"
    max_tokens: int | None = None
    batch_size: int = 16
    chunk: bool = False
    compression: str | None = None
    chunk_rows: int = 1024
    flush_rows: int = 8192

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; choose one of {sorted(DTYPES)}")
        if self.compression not in COMPRESSION:
            raise ValueError(f"compression={self.compression!r}; choose one of {COMPRESSION}")
        if min(self.batch_size, self.chunk_rows, self.flush_rows) < 1:
            raise ValueError(f"batch_size={self.batch_size}, chunk_rows={self.chunk_rows} and "
                             f"flush_rows={self.flush_rows} must be >= 1")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens={self.max_tokens}; it must be >= 1 (or unset)")


@dataclass
class _Job:
    model: Model
    corpus: Corpus
    cfg: CacheConfig
    hooks: list[str]
    plan: CachePlan
    identity: dict[str, Any] = field(default_factory=dict)


def plan_for(model: Model, corpus: Corpus, cfg: CacheConfig) -> CachePlan:
    """The rows a cache of `corpus` with `cfg` will hold for `model`."""
    tokens = corpus.tokens(cfg.split)
    tok = model.tokenizer
    table = word_start_table(tok, model.cfg.d_vocab) if cfg.positions == "word-final" else None
    specials = tuple(i for i in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
                     if i is not None) if tok is not None else ()
    return make_plan(tokens, corpus.docs(cfg.split), model.cfg.n_ctx, cfg.positions,
                     chunk=cfg.chunk, max_tokens=cfg.max_tokens, word_starts=table,
                     special_ids=specials)


@torch.no_grad()
def compute_batch(model: Model, hooks: list[str], batch: Batch) -> dict[str, np.ndarray]:
    """Activations of `hooks` at the batch's kept rows, as float32 numpy arrays."""
    device = next(model.parameters()).device
    hookset = set(hooks)
    kwargs, stop = stop_hooks(model, hooks)  # no block or unembedding after the last hook
    with model.hooks(fwd_hooks=stop):
        _, cache = model.run_with_cache(batch.tokens.to(device),
                                        names_filter=hookset.__contains__, return_type=None,
                                        **kwargs)
    out = {}
    b, t = batch.tokens.shape
    for name in hooks:
        act = cache[name]
        if name.endswith(("hook_pattern", "hook_attn_scores")):
            act = act.permute(0, 2, 1, 3)  # (B, H, Q, K) -> (B, Q, H, K): rows are queries
            # keys padded to n_ctx so every batch has the same trailing shape
            act = torch.nn.functional.pad(act, (0, model.cfg.n_ctx - act.shape[-1]))
        act = act.reshape(b * t, *act.shape[2:])
        out[name] = act[batch.flat_index.to(act.device)].float().cpu().numpy()
    return out


def iter_activations(model: Model, corpus: Corpus, cfg: CacheConfig, *,
                     by_length: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """The rows `cache_activations` would write (float32, before any `cfg.dtype` cast), batch
    by batch, without a file: for a statistic accumulated in one pass over the corpus. With
    `by_length`, batches of sequences of similar length (`iter_length_batches`: far less
    padding to compute, rows in another order, equal to float rounding)."""
    hooks = resolve_hooks(model, list(cfg.hooks))
    plan = plan_for(model, corpus, cfg)
    tokens, pad = corpus.tokens(cfg.split), _pad_id(model)
    batches = (iter_length_batches(plan, tokens, cfg.batch_size, pad_id=pad) if by_length
               else iter_batches(plan, tokens, cfg.batch_size, 0, plan.n_seqs, pad_id=pad))
    for batch in batches:
        yield compute_batch(model, hooks, batch)


def _labels(corpus: Corpus, split: str) -> dict[str, np.ndarray]:
    """Per-token label arrays of a split (per-document ones such as `doc_kind` are left out:
    rows carry their document index)."""
    if corpus.kind != "world":
        return {}  # a real-text corpus has no labels
    labels = dict(corpus.labels(split))  # a damaged file is an error, not "no labels"
    n = len(corpus.tokens(split))
    return {k: v for k, v in labels.items() if len(v) == n}


def _identity(model_ref: str, checksum: str, hooks: list[str], cfg: CacheConfig, corpus: Corpus,
              plan: CachePlan) -> dict[str, Any]:
    return {"model_ref": model_ref, "model_checksum": checksum, "hooks": json.dumps(hooks),
            "dtype": cfg.dtype, "corpus": str(Path(corpus.path).resolve()),
            "split": cfg.split, "positions": cfg.positions,
            "plan": json.dumps({"n_seqs": plan.n_seqs, "n_rows": plan.n_rows,
                                "n_tokens": plan.n_tokens, "max_tokens": cfg.max_tokens,
                                "chunk": cfg.chunk, "batch_size": cfg.batch_size})}


def _early_dcpl() -> Any:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return dcpl


def _create(f: h5py.File, job: _Job, shapes: dict[str, tuple[int, ...]], n_rows: int,
            labels: dict[str, np.ndarray]) -> None:
    cfg = job.cfg
    for key, value in job.identity.items():
        f.attrs[key] = value
    f.attrs.update({"schema": SCHEMA, "config": json.dumps(asdict(cfg)), "n_rows": n_rows,
                    "n_done": 0, "seqs_done": 0, "complete": False,
                    "labels": json.dumps(sorted(labels))})
    n = max(n_rows, 1)
    for name in job.hooks:
        trailing = shapes[name]
        chunks = (min(cfg.chunk_rows, n), *trailing)
        extra = ({"compression": cfg.compression} if cfg.compression
                 else {"dcpl": _early_dcpl()})
        # fletcher32: a checksum per chunk, so damaged data is an error when read
        f.create_dataset(name, shape=(n_rows, *trailing), dtype=DTYPES[cfg.dtype],
                         chunks=chunks, fletcher32=True, **extra)
    rows = f.create_group("rows")
    for key in META_FIELDS:
        rows.create_dataset(key, shape=(n_rows,), dtype=np.int64, chunks=(min(8192, n),),
                            fletcher32=True, dcpl=_early_dcpl())
    lab = rows.create_group("labels")
    for key in sorted(labels):
        lab.create_dataset(key, shape=(n_rows,), dtype=np.int16, chunks=(min(8192, n),),
                           fletcher32=True, dcpl=_early_dcpl())


def cache_activations(
    model: Model,
    corpus: Corpus,
    cfg: CacheConfig,
    out: str | os.PathLike[str],
    *,
    model_ref: str = "",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> Path:
    """Stream activations of `model` over a corpus split into the HDF5 file `out`.

    Args:
        model: a TransformerBridge.
        corpus: a `workbench.world.Corpus`.
        cfg: hooks, positions, dtype and sizes.
        out: final file path (written as `out.partial`, renamed when complete).
        model_ref: how the model was referenced (stored in the file).
        resume: continue an interrupted `out.partial` (killed at any instant) to the file an
            uninterrupted run writes; a partial that holds no rows yet (or cannot be read) is
            started again. With no partial: start afresh, or, when `out` is complete and was
            made with the same model and settings, return it unchanged.
        overwrite: replace an existing `out` (or `out.partial`); not with `resume`.
        progress: show a progress bar.
        shard: `(rank, world_size)`: cache only this rank's contiguous share of sequences.

    Returns:
        The path of the complete file.
    """
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    if resume and overwrite:  # checked before the model runs
        raise ValueError(f"resume=True and overwrite=True for {out}: pass one of them (--resume "
                         "continues an interrupted run, --overwrite starts again)")
    if out.exists() and not (overwrite or resume):
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    hooks = resolve_hooks(model, list(cfg.hooks))
    plan = plan_for(model, corpus, cfg)
    seq_lo, seq_hi = plan.shard(*shard)
    identity = _identity(model_ref, weights_checksum(model), hooks, cfg, corpus, plan)
    identity["shard"] = json.dumps(list(shard))
    job = _Job(model, corpus, cfg, hooks, plan, identity)
    row_base = int(plan.row_offsets[seq_lo])
    n_rows = int(plan.row_offsets[seq_hi]) - row_base
    if existing_output(out, partial, identity, resume, overwrite):
        return out
    labels = _labels(corpus, cfg.split)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokens = corpus.tokens(cfg.split)
    if not partial.exists() and cfg.compression is None and n_rows:
        _check_disk(model, hooks, plan, tokens, cfg, n_rows, len(labels), out.parent)
    if partial.exists():
        f = open_partial(partial, identity)
    else:
        # Default (earliest) file format on purpose: the newest superblock marks a file
        # "open for writing" and refuses to reopen it after a kill -9.
        f = h5py.File(partial, "w")
    try:
        start_seq = seq_lo + int(f.attrs.get("seqs_done", 0))
        batches = iter_batches(plan, tokens, cfg.batch_size, start_seq, seq_hi,
                               pad_id=_pad_id(model))
        bar = tqdm(total=n_rows, initial=int(plan.row_offsets[start_seq]) - row_base,
                   disable=not progress, desc=f"cache {out.name}", unit="row")
        pending: list[tuple[Batch, dict[str, np.ndarray]]] = []
        pending_rows = pending_bytes = 0
        for batch in batches:
            acts = compute_batch(model, hooks, batch)
            if "schema" not in f.attrs:  # a new file: shapes known after the first batch
                _create(f, job, {k: v.shape[1:] for k, v in acts.items()}, n_rows, labels)
            pending.append((batch, acts))
            pending_rows += batch.row_hi - batch.row_lo
            pending_bytes += sum(a.nbytes for a in acts.values())
            last = batch.seq_hi == seq_hi
            if pending_rows >= cfg.flush_rows or pending_bytes >= FLUSH_BYTES or last:
                _write(f, pending, labels, row_base, seq_lo, cfg.dtype)
                bar.update(pending_rows)
                pending, pending_rows, pending_bytes = [], 0, 0
        bar.close()
        if "schema" not in f.attrs:  # an empty shard
            _create(f, job, _shapes_of(model, hooks, plan, tokens), 0, labels)
        f.attrs["complete"] = True
    finally:
        f.close()
    os.replace(partial, out)
    return out


def _write(f: h5py.File, pending: list[tuple[Batch, dict[str, np.ndarray]]],
           labels: dict[str, np.ndarray], row_base: int, seq_lo: int, dtype: str) -> None:
    """Write consecutive batches as one slice per dataset, then advance the counters."""
    lo, hi = pending[0][0].row_lo - row_base, pending[-1][0].row_hi - row_base
    for name in pending[0][1]:
        f[name][lo:hi] = np.concatenate([a[name] for _, a in pending]).astype(DTYPES[dtype])
    meta = {k: np.concatenate([b.meta[k] for b, _ in pending]) for k in META_FIELDS}
    rows = f["rows"]
    for key in META_FIELDS:
        rows[key][lo:hi] = meta[key]
    off = meta["offset"]
    for key, arr in labels.items():
        span = read_range(arr, int(off.min()), int(off.max()) + 1)
        rows["labels"][key][lo:hi] = span[off - off.min()]
    f.flush()  # rows first, then the counter that says they are there
    f.attrs["n_done"] = hi
    f.attrs["seqs_done"] = pending[-1][0].seq_hi - seq_lo
    f.flush()


def _check_disk(model: Model, hooks: list[str], plan: CachePlan, tokens: np.ndarray,
                cfg: CacheConfig, n_rows: int, n_labels: int, folder: Path) -> None:
    """Refuse a cache the disk cannot hold (its size is known: datasets are allocated)."""
    from workbench.models.checks import check_disk

    width = sum(int(np.prod(s)) for s in _shapes_of(model, hooks, plan, tokens).values())
    per_row = width * np.dtype(DTYPES[cfg.dtype]).itemsize + 8 * len(META_FIELDS) + 2 * n_labels
    check_disk(n_rows * per_row, folder, "lower --max-tokens, cache fewer --hooks or fewer "
               "--positions, or pass --dtype float16 or --compression gzip")


def _pad_id(model: Model) -> int:
    tok = model.tokenizer
    pad = getattr(tok, "pad_token_id", None) if tok is not None else None
    return int(pad) if pad is not None else 0


def _shapes_of(model: Model, hooks: list[str], plan: CachePlan,
               tokens: np.ndarray) -> dict[str, tuple[int, ...]]:
    batch = next(iter_batches(plan, tokens, 1, 0, 1))
    return {k: v.shape[1:] for k, v in compute_batch(model, hooks, batch).items()}


class ActivationStore:
    """Lazy reader of an activation file.

    >>> # store = ActivationStore("acts.h5"); x = store.get("blocks.0.hook_resid_post", 0, 128)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            partial = self.path.with_name(self.path.name + ".partial")
            hint = (" (an interrupted run left PATH.partial: pass --resume to finish it)"
                    if partial.exists() else "; create it with `workbench cache`")
            raise FileNotFoundError(f"activation file {self.path} does not exist{hint}")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            raise ValueError(f"{self.path} is not a readable HDF5 file ({exc}); it is corrupt "
                             "or truncated: re-create it with `workbench cache --overwrite`"
                             ) from exc
        if self._f.attrs.get("schema") != SCHEMA:
            found = self._f.attrs.get("schema")
            self._f.close()
            raise ValueError(f"{self.path} is not a workbench activation file (schema "
                             f"{found!r}, expected {SCHEMA!r}); create one with `workbench cache`")
        if not self._f.attrs.get("complete", False):
            self._f.close()
            raise ValueError(f"{self.path} is incomplete; finish it with `workbench cache "
                             "--resume`")

    def __enter__(self) -> ActivationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._f.attrs)

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self._f.attrs["config"])

    @property
    def hooks(self) -> list[str]:
        return json.loads(self._f.attrs["hooks"])

    def __len__(self) -> int:
        return int(self._f.attrs["n_rows"])

    def shape(self, hook: str) -> tuple[int, ...]:
        return tuple(self._dataset(hook).shape)

    def dataset(self, hook: str) -> h5py.Dataset:
        """One hook's HDF5 dataset, read lazily by slicing (`[lo:hi]`)."""
        return self._dataset(hook)

    def _dataset(self, hook: str) -> h5py.Dataset:
        if hook not in self.hooks:
            raise KeyError(f"{self.path} has no hook {hook!r}; it has {self.hooks}")
        return self._f[hook]

    def get(self, hook: str, start: int = 0, stop: int | None = None,
            dtype: torch.dtype = torch.float32) -> Float[Tensor, "rows ..."]:
        """Rows `[start, stop)` of one hook as a torch tensor."""
        return torch.from_numpy(np.asarray(self._dataset(hook)[start:stop])).to(dtype)

    def take(self, hook: str, rows: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
        """Arbitrary rows (any order) of one hook."""
        rows = np.asarray(rows)
        order = np.argsort(rows)
        data = np.asarray(self._dataset(hook)[np.sort(rows)])
        out = np.empty_like(data)
        out[order] = data
        return torch.from_numpy(out).to(dtype)

    def iter_batches(self, hook: str, batch_size: int = 4096,
                     dtype: torch.dtype = torch.float32) -> Iterator[Tensor]:
        """Consecutive row batches of one hook."""
        for lo in range(0, len(self), batch_size):
            yield self.get(hook, lo, lo + batch_size, dtype)

    def meta(self, name: str) -> np.ndarray:
        """Per-row metadata: `seq`, `doc`, `pos`, `offset` or `token`."""
        return np.asarray(self._f["rows"][name])

    def labels(self) -> dict[str, np.ndarray]:
        """Per-row gold labels (-1 = none); empty for real-text corpora."""
        group = self._f["rows"].get("labels", {})
        return {k: np.asarray(group[k]) for k in group}

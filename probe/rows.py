"""The rows probes read: the word-final positions of a corpus split, their labels, and the
residual stream at every layer, from memory or from an `ActivationStore`.

Layer 0 is the embedding (`blocks.0.hook_resid_pre`), layer l >= 1 the output of block l-1
(`blocks.{l-1}.hook_resid_post`). Both sources walk the same cache plan, so they hold the same
rows; memory batches the sequences by length (less padding), the file's writer in order, so
their numbers agree to float rounding.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from workbench.cache.plan import iter_batches, iter_length_batches
from workbench.cache.store import ActivationStore, CacheConfig, compute_batch, plan_for
from workbench.hooks import hook_name

if TYPE_CHECKING:
    from workbench.models import Model
    from workbench.world.loader import Corpus

log = logging.getLogger(__name__)


def layer_hooks(n_layers: int) -> list[str]:
    """Hook of each probe layer: the embedding, then every block's output."""
    return [hook_name(0, "hook_resid_pre")] + [hook_name(i, "hook_resid_post")
                                               for i in range(n_layers)]


def check_layers(layers: list[int] | None, n_layers: int) -> list[int]:
    """Validated probe layers (default all, 0..n_layers)."""
    if layers is None:
        return list(range(n_layers + 1))
    bad = [x for x in layers if not 0 <= x <= n_layers]
    if bad or not layers:
        raise ValueError(f"layers {layers}: out of range; this model has probe layers 0 "
                         f"(embedding) to {n_layers} (output of the last block)")
    return sorted(set(layers))


@dataclass
class ProbeRows:
    """Word-final rows of a split: labels, metadata and an activation source.

    Attributes:
        labels: per-row corpus labels (-1 = none).
        meta: per-row `seq`, `doc`, `pos`, `offset`, `token`.
        n_layers: the model's number of blocks (probe layers are 0..n_layers).
        store: the activation file, when rows come from one.
        memory: activations held in memory, `[layer, row, d_model]` for `memory_layers`
            and `memory_rows`.
    """

    labels: dict[str, np.ndarray]
    meta: dict[str, np.ndarray]
    n_layers: int
    store: ActivationStore | None = None
    memory: Tensor | None = None
    memory_rows: np.ndarray | None = None
    memory_layers: list[int] = field(default_factory=list)
    _source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.meta["offset"])

    @property
    def words(self) -> np.ndarray:
        """Word type per row: the world word id (re-tokenized corpora) or the token id."""
        return self.labels["word"] if "word" in self.labels else self.meta["token"]

    def acts(self, rows: np.ndarray, layers: list[int]) -> Float[Tensor, "layer n d_model"]:
        """Activations of `rows` (indices into these rows) at probe `layers`, float32."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.store is not None:
            hooks = layer_hooks(self.n_layers)
            try:
                return torch.stack([self.store.take(hooks[la], rows) for la in layers])
            except (OSError, KeyError, RuntimeError) as exc:  # fletcher32 or metadata damage
                raise ValueError(f"activation file {self.store.path} is damaged ({exc}); "
                                 "re-create it with `workbench cache --overwrite`, or delete "
                                 "it and pass --acts again") from exc
        if self.memory is None or self.memory_rows is None:
            raise ValueError("these rows hold no activations; build them with load_rows")
        where = np.searchsorted(self.memory_rows, rows)
        if (where >= len(self.memory_rows)).any() or (self.memory_rows[
                np.minimum(where, len(self.memory_rows) - 1)] != rows).any():
            raise ValueError("rows outside those computed in memory were asked for")
        missing = [la for la in layers if la not in self.memory_layers]
        if missing:
            raise ValueError(f"layers {missing} were not computed (only {self.memory_layers})")
        index = [self.memory_layers.index(la) for la in layers]
        return self.memory[index][:, torch.from_numpy(where)]


def plan_rows(model: Model, corpus: Corpus, split: str, max_tokens: int | None,
              batch_size: int = 16) -> ProbeRows:
    """Rows and labels of a split, no activations (walks the cache plan's batches)."""
    cfg = CacheConfig(split=split, positions="word-final", max_tokens=max_tokens, chunk=True,
                      batch_size=batch_size)
    plan = plan_for(model, corpus, cfg)
    metas: dict[str, list[np.ndarray]] = {}
    for batch in iter_batches(plan, corpus.tokens(split), batch_size, 0, plan.n_seqs):
        for k, v in batch.meta.items():
            metas.setdefault(k, []).append(v)
    meta = {k: np.concatenate(v) for k, v in metas.items()}
    labels = {k: np.asarray(v)[meta["offset"]] for k, v in corpus.labels(split).items()
              if len(v) == len(corpus.tokens(split))}
    rows = ProbeRows(labels, meta, model.cfg.n_layers)
    rows._source = {"plan": plan, "cfg": cfg, "corpus": corpus, "split": split}
    return rows


@torch.no_grad()
def fill_memory(rows: ProbeRows, model: Model, needed: np.ndarray, layers: list[int],
                progress: bool = True) -> None:
    """Compute the activations of `needed` rows at `layers` into memory."""
    plan, cfg, corpus = (rows._source[k] for k in ("plan", "cfg", "corpus"))
    needed = np.unique(np.asarray(needed, dtype=np.int64))
    hooks_all = layer_hooks(rows.n_layers)
    hooks = [hooks_all[la] for la in layers]
    out = torch.zeros(len(layers), len(needed), model.cfg.d_model)
    seqs = np.unique(rows.meta["seq"][needed])
    bar = tqdm(total=len(needed), desc="probe activations", unit="row", disable=not progress)
    # only the sequences holding needed rows, in batches of similar length (rows are placed
    # by their index, so the order does not matter)
    for batch in iter_length_batches(plan, corpus.tokens(rows._source["split"]),
                                     cfg.batch_size, seqs):
        where = np.searchsorted(needed, batch.rows)
        hit = (where < len(needed)) & (needed[np.minimum(where, len(needed) - 1)] == batch.rows)
        acts = compute_batch(model, hooks, batch)
        for i, hook in enumerate(hooks):
            out[i, torch.from_numpy(where[hit])] = torch.from_numpy(acts[hook][hit])
        bar.update(int(hit.sum()))
    bar.close()
    rows.memory, rows.memory_rows, rows.memory_layers = out, needed, list(layers)


def store_rows(path: str | Path, n_layers: int, layers: list[int], *,
               model: Model | None = None, corpus: Corpus | None = None,
               split: str | None = None, max_tokens: int | None | bool = False) -> ProbeRows:
    """Rows of an activation file made with word-final positions and the probe hooks; with
    `model`, `corpus`, `split` and `max_tokens` (None: the whole split; False: not checked),
    a file made by another model (weight checksum), from another corpus, of another split or
    of another share of it is refused."""
    store = ActivationStore(path)
    try:
        _check_store(store, model, corpus, split, max_tokens)
    except ValueError:
        store.close()
        raise
    hooks = layer_hooks(n_layers)
    missing = [hooks[la] for la in layers if hooks[la] not in store.hooks]
    if missing:
        store.close()
        raise ValueError(
            f"{path} lacks the hooks {missing}; cache them with `workbench cache --positions "
            "word-final --chunk --hooks blocks.0.hook_resid_pre 'blocks.*.hook_resid_post'`")
    try:
        meta = {k: store.meta(k) for k in ("seq", "doc", "pos", "offset", "token")}
        labels = store.labels()
    except (OSError, KeyError, RuntimeError) as exc:
        store.close()
        raise ValueError(f"activation file {path} is damaged ({exc}); re-create it with "
                         "`workbench cache --overwrite`") from exc
    return ProbeRows(labels, meta, n_layers, store=store)


def check_store_file(path: str | Path, *, split: str, max_tokens: int | None) -> None:
    """An `--acts` file's checks that need no model (before it loads): readable, an
    activation file of `split` and `max_tokens`, word-final positions."""
    store = ActivationStore(path)
    try:
        _check_store(store, None, None, split, max_tokens)
    finally:
        store.close()


def _check_store(store: ActivationStore, model: Model | None, corpus: Corpus | None,
                 split: str | None, max_tokens: int | None | bool = False) -> None:
    from workbench.hooks import weights_checksum

    a, fix = store.attrs, "make one for it with `--acts NEW.h5`, or re-create this one with " \
        "`workbench cache ... --overwrite`"
    if model is not None and a.get("model_checksum") != weights_checksum(model):
        raise ValueError(f"activation file {store.path} was made by another model (weight "
                         f"checksum {str(a.get('model_checksum'))[:12]}..., this model's "
                         f"{weights_checksum(model)[:12]}...); {fix}")
    if corpus is not None and a.get("corpus") != str(Path(corpus.path).resolve()):
        raise ValueError(f"activation file {store.path} was made from the corpus "
                         f"{a.get('corpus')}, not {corpus.path}; {fix}")
    if split is not None and a.get("split") != split:
        raise ValueError(f"activation file {store.path} holds the {a.get('split')!r} split, "
                         f"not --split {split!r}; pass --split {a.get('split')} or {fix}")
    if max_tokens is not False:
        try:
            made = json.loads(str(a.get("plan")))
        except ValueError:
            made = None
        made = made if isinstance(made, dict) else {}
        if made.get("max_tokens", False) != max_tokens:
            had = made.get("max_tokens", "?")
            flag = "no --max-tokens" if had is None else f"--max-tokens {had}"
            asked = "no --max-tokens" if max_tokens is None else f"--max-tokens {max_tokens}"
            raise ValueError(f"activation file {store.path} was cached with {flag} "
                             f"({made.get('n_tokens', '?')} tokens), not {asked}; pass {flag} "
                             f"or {fix}")
    if a.get("positions") != "word-final":
        raise ValueError(f"{store.path} caches positions {a.get('positions')!r}; probes read "
                         "word-final rows: cache with `--positions word-final`")


def store_config(split: str, max_tokens: int | None, batch_size: int = 16) -> CacheConfig:
    """The cache config whose file `store_rows` reads (same plan as `plan_rows`)."""
    return CacheConfig(hooks=(hook_name(0, "hook_resid_pre"), "blocks.*.hook_resid_post"),
                       split=split, positions="word-final", max_tokens=max_tokens, chunk=True,
                       batch_size=batch_size)
